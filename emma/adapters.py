"""Low-rank adapters (LoRA) for training: the base encoder's weights stay fixed, each adapted linear
layer learns W + (α/r)·B·A with A (r × in) and B (out × r), B starting at zero so training starts
exactly at the base model.

Only training knows about adapters: a checkpoint is always saved merged (`merged_copy`), so loading,
serving, quantizing and exporting see an ordinary model. A few dozen lines of our own rather than the
`peft` library, because the merged result is all a checkpoint keeps and the adapters must live inside
the two encoders of one `Emma` module, beside heads that train in full.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

# Names of the linear layers adapted: attention (BERT's query, key, value; MPNet's q, k, v, o) and the
# attention output and both feed-forward layers (`dense`), which is where fine-tuning moves the weights most.
ADAPTED = ("query", "key", "value", "q", "k", "v", "o", "dense")


class LoraLinear(nn.Module):
    """`base(x) + (α/r)·x·Aᵀ·Bᵀ`, with `base` frozen."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        self.base = base.requires_grad_(False)
        self.rank, self.scale = rank, alpha / rank
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_a.t().to(x.dtype)) @ self.lora_b.t().to(x.dtype) * self.scale

    def merged(self) -> nn.Linear:
        """The plain linear layer with the adapter folded into its weight."""
        out = copy.deepcopy(self.base)
        with torch.no_grad():
            out.weight += (self.lora_b @ self.lora_a).to(out.weight.dtype) * self.scale
        return out


def add_adapters(encoder: nn.Module, rank: int, alpha: float | None = None) -> int:
    """Freeze `encoder` and wrap its adapted linear layers (`ADAPTED`) in `LoraLinear`; returns how many.

    The word embeddings are left for the caller (the entity markers' rows must still learn).
    """
    if rank < 1:
        raise ValueError(f"adapter rank {rank}: give at least 1")
    encoder.requires_grad_(False)
    # Not the pooler: EMMA reads the hidden states, never the pooled output.
    targets = [(parent, name, child) for path, parent in encoder.named_modules() if not path.startswith("pooler")
               for name, child in parent.named_children() if isinstance(child, nn.Linear) and name in ADAPTED]
    for parent, name, child in targets:
        setattr(parent, name, LoraLinear(child, rank, alpha if alpha is not None else 2.0 * rank))
    return len(targets)


def has_adapters(module: nn.Module) -> bool:
    return any(isinstance(m, LoraLinear) for m in module.modules())


def merged_copy(module: nn.Module) -> nn.Module:
    """A deep copy of `module` with every adapter folded into its layer (the module itself is unchanged)."""
    out = copy.deepcopy(module)
    for parent in list(out.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, LoraLinear):
                setattr(parent, name, child.merged())
    return out
