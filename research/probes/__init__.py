"""Recall calibration probes: changes to the recall recipe that the library does not offer, measured.

These are experiments, not library code: `patches` rewires `emma`'s internals (losses, encoders,
the training batch) at run time, which is why they live here and not in `emma/`. The calibration
target: plain recall (entity markers, two masked pooling heads, InfoNCE τ = 0.02, batches of distinct
relations, lr 5e-5, 300 instances per relation, one epoch) should reach 75 macro F1 on FewRel `ori`
m = 15. It reaches 73.21 ± 0.70 over 5 training seeds on CPU, 73.06 ± 1.07 over 12 on an H200. Each
probe trains exactly that recall stage (the protocol's `no_classifier` run) with one change, tests
on all 10,500 sentences of the 15 unseen relations, and appends a line to
results/recall_probes.jsonl; results/RECALL_PROBES.md reports them. Changes that lose stay out of
the library; this package is their record.

    python -m research probe NAME [--no-dropout] [--lr X] ... [--train-seed N]
    python -m research probe-table [--summary]
    python -m research probe-sweep --results OUT.jsonl      # many at once on one GPU

One run is ~22 min on 2 CPU cores in fp32 (~20 min training, ~2 min testing), ~1–2 min on a GPU.
"""
