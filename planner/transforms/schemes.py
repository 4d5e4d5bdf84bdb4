"""Quantization schemes as data: which precision each yields and where it can run.

This table is light (no torch import) so that sampling can filter by it.
A backend lists the schemes it implements (`Backend.quant_schemes`), and may
narrow a scheme to some devices (`Backend.scheme_devices`); a target lists the
precisions its device supports (`Target.precisions`).  A scheme is sampled only
when all of them allow it (`planner.space.schemes_for`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Scheme:
    name: str
    precision: str  # what Target.precisions must contain
    devices: tuple[str, ...]  # device kinds where the scheme makes sense
    description: str


SCHEMES: dict[str, Scheme] = {
    s.name: s
    for s in [
        Scheme("none", "fp32", ("cpu", "cuda"), "full precision"),
        Scheme("fp16", "fp16", ("cuda", "cpu"), "half precision weights and activations"),
        Scheme("bf16", "bf16", ("cuda", "cpu"), "bfloat16 weights and activations"),
        Scheme("int8_dynamic", "int8", ("cpu", "cuda"), "int8 weights, activations quantized at run time"),
        Scheme("int8_static", "int8", ("cpu", "cuda"), "int8 weights and activations, calibrated (QDQ)"),
        Scheme("int8_weight_only", "int8", ("cpu", "cuda"), "int8 weights, float compute"),
        # torch: CPU only (planner.transforms.int4; `Backend.scheme_devices`); ONNX Runtime: MatMulNBits, CPU and CUDA
        Scheme("int4_weight_only", "int4", ("cpu", "cuda"), "int4 weights (grouped), float compute"),
        Scheme("fp8", "fp8", ("cuda",), "float8 weights and activations"),
    ]
}


def precision_of(scheme: str) -> str:
    s = SCHEMES.get(scheme)
    return s.precision if s else scheme


# Pruning methods; structured ones (l1, l2) physically remove channels/heads.
PRUNE_METHODS: tuple[str, ...] = ("none", "l1", "l2", "heads", "magnitude", "2:4")
STRUCTURED_PRUNE_METHODS: tuple[str, ...] = ("l1", "l2", "heads")
# Scheme options (valid values, first = default) live beside their implementation: transforms.quantize.SCHEME_OPTIONS
