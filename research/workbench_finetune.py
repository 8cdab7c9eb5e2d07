"""The workbench's "Improve the model from my labels", end to end, on a CrossRE domain.

One user of a workbench on the server's model defines the domain's relations (its descriptions),
imports `rows` labelled rows per relation as examples, starts a fine-tune from the server's model or
one it offers (`--finetune-from`), waits for it as the panel does, switches to the new version, and
the domain's dev set is scored with the same rows as examples on the model they were on and on the
new version. What `research finetune-compare` measures of the library, measured here through the
workbench's own handlers and child process (its held-back verdict, wall time and disk included).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import emma
from emma.data import write_jsonl

from .finetune import device_name, labelled_rows, macro_f1_by_rule
from .jsonl import append

POLL_S = 2  # seconds between progress reads, as the panel polls


def run(server: str, start: str | None, data: Path, domain: str, rows: int, seed: int, results: Path) -> dict:
    """Run the flow once; returns (and appends to `results`) its record."""
    from app.improve_panel import CURRENT_MODEL, ImprovePanel
    from app.main import create_workbench
    from app.relations_tab import RelationsTab

    crossre = data / "crossre"
    descriptions = emma.read_descriptions(crossre / "descriptions.json")
    dev, drawn = labelled_rows(crossre, domain, rows, seed)
    with tempfile.TemporaryDirectory(prefix="emma-workbench-finetune-") as scratch:
        folder = Path(scratch)
        wb = create_workbench(server, folder / "workbench.db", finetune_from=[start] if start else ())
        relations, panel = RelationsTab(wb), ImprovePanel(wb)
        session = wb.open_session("user:researcher")
        for relation in drawn:
            session, _ = relations.add_relation.__wrapped__(relations, relation, descriptions[relation], session)
        labelled = [i for group in drawn.values() for i in group]
        write_jsonl(labelled, folder / "rows.jsonl")
        session, imported = relations.import_examples.__wrapped__(relations, str(folder / "rows.jsonl"), session)
        print(imported, flush=True)
        try:  # an interrupted run stops its child before the scratch folder goes
            started = time.perf_counter()
            offered = Path(start).resolve().name if start else CURRENT_MODEL
            # A --start that is the server's own model is no other start (create_workbench drops it).
            status, _ = panel.improve.__wrapped__(panel, session, offered if offered in wb.finetune_from else CURRENT_MODEL)
            print(status, flush=True)
            while True:
                status, *_ = panel.progress.__wrapped__(panel, session)
                print(f"\r{status[:150]:150}", end="", flush=True)
                if not status.startswith("Fine-tuning"):
                    break
                time.sleep(POLL_S)
            print(flush=True)
            minutes = round((time.perf_counter() - started) / 60, 1)
            job = wb.finetuner.job(session["owner"])
            if job.state != "done":
                raise RuntimeError(f"the fine-tune ended {job.state}: {status}")
            session, _ = panel.choose.__wrapped__(panel, job.name, session)
            version = wb.engine_for(session).extractor
            held_back = {k: job.report[k] for k in ("before", "after", "chance_better", "held_back_sentences", "baseline")}
            record = {"domain": domain, "rows_per_relation": rows, "seed": seed, "rows": len(labelled),
                      "trained_rows": job.report["trained_rows"], "relations": len(job.report["relations"]),
                      "server": emma.checkpoint_id(server), "start": emma.checkpoint_id(start or server),
                      "held_back": held_back, "done_message": status, "minutes": minutes,
                      "version_mb": round(sum(f.stat().st_size for f in Path(version.checkpoint).iterdir()) / 2**20),
                      "server_examples": macro_f1_by_rule(wb.engine.extractor, dev, descriptions, drawn),
                      "version_examples": macro_f1_by_rule(version, dev, descriptions, drawn),
                      "budget": f"{device_name()}, precision {version.precision}, the workbench's own recipe (FinetuneConfig defaults)"}
        finally:
            wb.finetuner.close()
    append(results, record)
    print(json.dumps(record, indent=2), flush=True)
    return record
