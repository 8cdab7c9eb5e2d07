"""Numeric precision: the one rule for what "auto" means, for inference and training alike.

Weights stay float32; matrix products run in a half precision where the hardware does them fast
(bf16 autocast is 1.5–3× faster on CPUs with AVX512-BF16 or AMX, and slower elsewhere), else in
float32. bf16 is preferred over fp16 wherever both exist: it needs no loss scaling in training and
the same choice then holds for inference.
"""

from __future__ import annotations

import contextlib

import torch

from .choices import PRECISIONS, check_choice


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX), where bf16 autocast pays off."""
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def resolve_precision(precision: str, device: torch.device) -> str:
    """Resolve "auto" for `device`: bf16 on a GPU or CPU that runs it natively, fp16 on other GPUs, else fp32.

    Example:
        >>> resolve_precision("fp32", torch.device("cuda"))
        'fp32'
    """
    check_choice("precision", precision, PRECISIONS)
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu" and cpu_has_bf16():
        return "bf16"
    return "fp32"


def autocast(device: torch.device, precision: str):
    """Mixed-precision context for a resolved `precision` ("fp32" is a no-op); weights stay float32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
