"""Numeric precision: the one rule for what "auto" means, for inference and training.

Weights stay float32; matrix products run in a half precision where the hardware does them fast,
else in float32. bf16 is preferred over fp16 wherever both exist: it needs no loss scaling in
training and the same choice then holds for inference. Whether bf16 is fast on a CPU cannot be read
off its flags: with the same AVX512-BF16 (and no AMX), it made EMMA 1.5× faster than fp32 on an AMD
EPYC and 1.2–1.3× slower on a Xeon whose AMX the hypervisor hides. So `bf16_pays_off` times it, once
per process.

Inference on a CPU where bf16 does not pay off has one more path, "int8": a copy of the model whose two
encoders' `nn.Linear` layers (all but the feed-forward down-projections) are dynamically quantized
(int8 weights per output channel, activations quantized per call; `torch.ao.quantization.quantize_dynamic`
on the "x86" engine, fbgemm kernels). Its activation scales come from the whole input, so the `Extractor`
runs it one text at a time (`Extractor.__init__`). Training never uses it.
Measured by `python -m research bench --precision fp32,auto` on an AMD EPYC limited to AVX2 (README "Speed",
`results/bench_cpu_avx2.md`; 1 thread, fp32 and int8 interleaved; batched then): EMMA's single-sentence p50
at 100 relations went from 57.9 to 40.8 ms (per-round ratio 0.74), throughput ×1.37, and EMMA's macro F1
on 480 FewRel val_wiki sentences moved −0.29 (16 relations) and +1.02 (80), within 0.5 of fp32 or above it,
so "auto" picks int8 there (`INT8_WHERE_NO_BF16`).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import time
import warnings

import torch
from torch import nn
from transformers import PreTrainedModel

from .choices import INFERENCE_PRECISIONS, PRECISIONS, check_choice

# The measured decision above: int8 is faster than fp32 and within 0.5 F1 of it on a CPU without bf16.
INT8_WHERE_NO_BF16 = True
# bf16 is used on a CPU only where timed at least this many times faster than fp32 (`bf16_pays_off`);
# below it the difference is not worth bf16's rounding.
BF16_MARGIN = 1.2


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX): bf16 runs, not necessarily fast."""
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def bf16_pays_off() -> bool:
    """Whether bf16 autocast is faster than fp32 on this CPU: native bf16, and a feed-forward-sized
    product at least `BF16_MARGIN` times faster in bf16, timed once per process (about 0.1 s).

    Measured beside the full model (README "Speed"): on a 2-core AMD EPYC with AVX512-BF16, EMMA's
    p50 at 80 relations was 33 ms in bf16 against 49 in fp32; on a 2-core Xeon with AVX512-BF16 whose
    AMX is hidden, this product took 2.9 ms in bf16 against 1.7 in fp32, and EMMA's p50 at 100 relations
    66 ms against 57 (`results/bench_cpu_avx512bf16.md`). Gaps that wide do not flip with timing noise.
    """
    return cpu_has_bf16() and _bf16_speedup() >= BF16_MARGIN


@functools.lru_cache(maxsize=1)
def _bf16_speedup() -> float:
    """fp32 time / bf16-autocast time of a (256 × 384) · (384 × 1536) product, best of 20 each, interleaved.
    Its operands come from a generator of its own: resolving a precision must not move a seeded run's random state."""
    generator = torch.Generator().manual_seed(0)
    x, weight = torch.randn(256, 384, generator=generator), torch.randn(1536, 384, generator=generator)
    best = {"fp32": float("inf"), "bf16": float("inf")}
    with torch.inference_mode():
        for _ in range(20):
            for precision in best:
                with autocast(torch.device("cpu"), precision):
                    start = time.perf_counter()
                    nn.functional.linear(x, weight)
                    best[precision] = min(best[precision], time.perf_counter() - start)
    return best["fp32"] / best["bf16"]


def cpu_has_int8() -> bool:
    """Whether torch can run int8 dynamically quantized linear layers here with the x86 kernels measured."""
    return hasattr(torch.ao.quantization, "quantize_dynamic") and bool({"x86", "fbgemm"} & set(torch.backends.quantized.supported_engines))


def cpu_capabilities() -> dict:
    """What decides the CPU path: torch's vector ISA, native bf16 and whether it is faster, int8 kernels and the quantized engine.

    `ATEN_CPU_CAPABILITY`, `ONEDNN_MAX_CPU_ISA` and `FBGEMM_ENABLE_INSTRUCTIONS` lower what torch
    uses (how the README emulates an AVX2-only CPU on a newer one), and this reports the lowered values.
    """
    return {"isa": torch.backends.cpu.get_cpu_capability(), "bf16": cpu_has_bf16(),
            "bf16_faster": bf16_pays_off(), "int8": cpu_has_int8(),
            "quantized_engine": torch.backends.quantized.engine}


def resolve_precision(precision: str, device: torch.device, inference: bool = False) -> str:
    """Resolve "auto" for `device`.

    GPUs: bf16 where supported, else fp16. CPUs: bf16 where it pays off (`bf16_pays_off`); else, for
    inference only, int8 where its kernels exist (`INT8_WHERE_NO_BF16`, measured); else fp32.

    Args:
        precision: one of `INFERENCE_PRECISIONS` with `inference=True`, else of `PRECISIONS`.
        inference: whether the model only predicts (an `Extractor`); training never gets int8.

    Example:
        >>> resolve_precision("fp32", torch.device("cuda"))
        'fp32'
    """
    check_choice("precision", precision, INFERENCE_PRECISIONS if inference else PRECISIONS)
    if precision == "int8" and device.type != "cpu":
        raise ValueError(f"precision='int8' runs on the CPU only, not on {device.type}; choose 'auto', 'fp16' or 'bf16' there")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu" and bf16_pays_off():
        return "bf16"
    if inference and device.type == "cpu" and INT8_WHERE_NO_BF16 and cpu_has_int8():
        return "int8"
    return "fp32"


def autocast(device: torch.device, precision: str):
    """Mixed-precision context for a resolved `precision` ("fp32" and "int8" need none); weights stay float32."""
    if precision in ("fp32", "int8"):
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def quantize_encoders(model: nn.Module) -> nn.Module:
    """An int8 copy of `model` for inference: every `nn.Linear` inside its transformer encoders quantized.

    The pooling heads and the classifier's MLP stay float32 (they are tiny), and so do embeddings and
    layer norms. The copy has no gradients to give: train the original.

    Args:
        model: a CPU model (e.g. `Emma`), left unchanged.

    Returns:
        the quantized copy, in eval mode.

    Example:
        >>> fast = quantize_encoders(model)   # then run fast.recall / fast.classifier as usual
    """
    if not cpu_has_int8():
        raise ValueError(f"int8 needs torch's x86 quantized kernels; this torch has {torch.backends.quantized.supported_engines}")
    if any(p.device.type != "cpu" for p in model.parameters()):
        raise ValueError("int8 quantization runs on the CPU only; load the model with device='cpu'")
    fast = copy.deepcopy(model).eval()
    encoders = [m for m in fast.modules() if isinstance(m, PreTrainedModel)]
    assert encoders, "no transformer encoder found to quantize"
    with warnings.catch_warnings():  # torch.ao's eager quantization is marked deprecated (for torchao) yet still shipped
        warnings.filterwarnings("ignore", message=r".*(torch\.ao\.quantization|quantize_per_tensor).*deprecated")
        for encoder in encoders:
            torch.ao.quantization.quantize_dynamic(encoder, quantized_layers(encoder), dtype=torch.qint8, inplace=True)
    return fast


def quantized_layers(encoder: nn.Module) -> dict:
    """{layer name: qconfig} for the linear layers that "int8" quantizes: all but the down-projections.

    Weights per output channel. A down-projection (more inputs than outputs: in BERT the feed-forward
    output, 1536 → 384) reads the GELU's wide activations, whose outliers a per-call int8 scale
    clips. Keeping it float32 (a third of the linear FLOPs) cut the EMMA labels that changed against
    fp32 at 80 relations from 41 to 32 of 480 FewRel val_wiki sentences (23 to 21 at 16 relations).
    """
    qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
    return {name: qconfig for name, m in encoder.named_modules() if isinstance(m, nn.Linear) and m.in_features <= m.out_features}
