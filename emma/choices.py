"""The enumerated settings of the library, in one place.

The dataclasses validate against these and the command line offers them. It imports nothing, so
every module can use it without an import cycle.
"""

PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # "auto": a half precision where the device runs one fast, else fp32
INFERENCE_PRECISIONS = PRECISIONS + ("int8",)  # int8: quantized encoders for CPUs without bf16 (emma.precision)
DESCRIPTION_POOLINGS = ("attention", "cls")  # "cls": the without-virtual-entities ablation
CLASSIFIER_HEADS = ("concat", "shared")
CLASSIFIER_FEATURES = ("cls", "cls_entities")
DECISIONS = ("classifier", "fused")
CLASSIFIER_INITS = ("recall", "base")  # where a classifier added to a recall-only checkpoint starts
SCHEDULES = ("two_stage", "joint")
BASE_ENCODERS = ("all-MiniLM-L6-v2", "all-mpnet-base-v2")  # installed from packages by name (emma.encoders)


def check_choice(name: str, value, choices: tuple) -> None:
    """Raise ValueError naming the setting and its choices when `value` is not one of them."""
    if value not in choices:
        raise ValueError(f"{name}={value!r}; choose one of {choices}")
