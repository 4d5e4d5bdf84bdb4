"""Precisions, quantization schemes and pruning methods: the one table every stage reads.

Ground level (no torch, no other planner module) so that target validation, sampling,
the transforms and the backends all read the same rows:

- a **precision** is what a target's device can compute (``Target.precisions``), with the
  lowest CUDA compute capability whose GPUs have kernels for it;
- a **scheme** yields one precision, runs on some device kinds, accepts some options (valid
  values, the first being the default) and is implemented by the PyTorch transform
  (``transforms.quantize.quantize_module``), the ONNX transform (``quantize_onnx``), or both;
- a backend states which schemes it runs (``Backend.quant_schemes``, narrowed per device by
  ``Backend.scheme_devices`` and per option by ``Backend.scheme_options``).

A new scheme is one row here, its branch in the transform that implements it, and the
backends that declare it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Precision:
    name: str
    # lowest CUDA compute capability with kernels for it (None: every CUDA GPU)
    min_compute_capability: tuple[int, int] | None = None


PRECISIONS: dict[str, Precision] = {
    p.name: p
    for p in [
        Precision("fp32"),
        Precision("fp16"),
        Precision("bf16", (8, 0)),
        Precision("int8", (6, 1)),
        Precision("int4", (8, 0)),
        Precision("fp8", (8, 9)),
    ]
}


def gpu_precisions(compute_capability: str) -> list[str]:
    """The precisions a CUDA GPU of this compute capability (``"8.0"``) has kernels for."""
    major, _, minor = str(compute_capability).partition(".")
    cc = (int(major), int(minor or 0))
    return [p.name for p in PRECISIONS.values() if p.min_compute_capability is None or cc >= p.min_compute_capability]


_BOOL = (False, True)
_REDUCE = ("auto", False, True)  # auto: True on x86 CPUs without VNNI (see `transforms.quantize.int8_saturates`)
# torch's int4 CPU kernel's group sizes (ORT MatMulNBits takes them too); first = default
INT4_GROUP_SIZES: tuple[int, ...] = (128, 32, 64, 256)


@dataclass(frozen=True)
class Scheme:
    name: str
    precision: str  # a key of PRECISIONS: what Target.precisions must contain
    devices: tuple[str, ...]  # device kinds where the scheme makes sense
    description: str
    formats: tuple[str, ...]  # which transform implements it: "torch" (nn.Module), "onnx" (ONNX graph)
    # option -> valid values; the first value is the default
    options: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    calibrated: bool = False  # activation scales come from calibration data
    # option -> its values from least to most lossy, where that order holds whatever the model (planner.search.
    # feasibility: a quantization that lost far too much covers the same one with options no less lossy)
    lossier: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    # options whose values round to the same grid and differ only in the kernels that run it: equally lossy
    # whatever the model (planner.search.feasibility compares quantizations without them)
    same_grid: tuple[str, ...] = ()
    # weights only, rounded to a grid without data: the grid (bits, group, options) decides the loss more than who
    # rounds (planner.search.feasibility: a loss far enough above the bound through one quantizer covers the others)
    data_free: bool = False


SCHEMES: dict[str, Scheme] = {
    s.name: s
    for s in [
        Scheme("none", "fp32", ("cpu", "cuda"), "full precision", ("torch", "onnx")),
        Scheme("fp16", "fp16", ("cuda", "cpu"), "half precision weights and activations", ("torch", "onnx")),
        Scheme("bf16", "bf16", ("cuda", "cpu"), "bfloat16 weights and activations", ("torch",)),
        Scheme("int8_dynamic", "int8", ("cpu", "cuda"), "int8 weights, activations quantized at run time",
               ("torch", "onnx"),
               {"op_types": ("matmul", "all"), "weight_type": ("s8", "u8"), "per_channel": _BOOL,
                "reduce_range": _REDUCE},
               lossier={"op_types": ("matmul", "all"), "per_channel": (True, False)}),
        Scheme("int8_static", "int8", ("cpu", "cuda"), "int8 weights and activations, calibrated (QDQ)", ("onnx",),
               # op_types auto: matmul on a graph with attention (Softmax), else all (planner.transforms.quantize)
               {"op_types": ("auto", "all", "matmul"), "activation_type": ("s8", "u8"), "weight_type": ("s8", "u8"),
                "per_channel": _BOOL, "reduce_range": _REDUCE,
                "calibrate_method": ("minmax", "entropy", "percentile"),
                # TensorRT-style Q/DQ: zero points 0 for activations and weights, biases left in float
                "symmetric": _BOOL,
                # keep the k most sensitive layers in fp32, ranked after a first quantization pass
                "fallback_layers": (0, 1, 2, 4, 8),
                # how layers are ranked: weight = SQNR of their int8 weights (no data); activation = how much
                # output fidelity (SQNR vs the fp32 model, dB) is lost across each layer on calibration data
                "fallback_rank": ("weight", "activation"),
                # NNCF's post-training quantization (the openvino backend; ONNX Runtime and TensorRT do not sample them)
                "preset": ("performance", "mixed"),  # mixed: asymmetric activations (for activations not centred on 0)
                "model_type": ("auto", "transformer", "default"),  # auto: transformer when the graph has a Softmax
                "fast_bias_correction": (True, False),  # True first: NNCF's default
                "subset_size": (300, 64, 128, 512),  # calibration samples; 300 is NNCF's default
                # NNCF accuracy control: layers go back to float until the label accuracy drop is within the bound
                "accuracy_control": _BOOL},
               calibrated=True,
               lossier={"per_channel": (True, False), "fallback_layers": (8, 4, 2, 1, 0)},
               # u8 and s8 activations: 256 levels over the same calibrated range, the zero point shifted by 128
               # (MiniLM-L6, ONNX Runtime QDQ: 0.0825 of cosine lost with either; 0.2024 / 0.2031 per-tensor)
               same_grid=("activation_type",)),
        Scheme("int8_weight_only", "int8", ("cpu", "cuda"), "int8 weights, float compute", ("torch",), data_free=True),
        # torch: CPU only (planner.transforms.int4; `Backend.scheme_devices`); ONNX Runtime: MatMulNBits, CPU and CUDA
        Scheme("int4_weight_only", "int4", ("cpu", "cuda"), "int4 weights (grouped), float compute", ("torch", "onnx"),
               # symmetric: NNCF's INT4_SYM (True) or INT4_ASYM (a zero point per group), openvino only; torch's int4
               # layout is asymmetric and ONNX Runtime's MatMulNBits symmetric, both fixed
               {"group_size": INT4_GROUP_SIZES, "symmetric": (True, False)},
               lossier={"group_size": tuple(sorted(INT4_GROUP_SIZES))},  # fewer scales per weight: lossier
               data_free=True),
        # float8 E4M3 Q/DQ (calibrated, ORT's distribution method): for TensorRT on sm_89+ GPUs
        Scheme("fp8", "fp8", ("cuda",), "float8 weights and activations", ("onnx",),
               # matmul first: with every op quantized ("all"), ONNX Runtime's CPU reference gave a tiny MLP 0.48
               # cosine to fp32 (0.996 with MatMul/Gemm only); whether TensorRT does better is untested (no GPU)
               {"op_types": ("matmul", "all"), "per_channel": _BOOL},
               calibrated=True),
    ]
}


def precision_of(scheme: str) -> str:
    s = SCHEMES.get(scheme)
    return s.precision if s else scheme


def schemes_for_format(fmt: str) -> tuple[str, ...]:
    """The schemes whose transform works on models of format ``fmt`` ("torch" or "onnx")."""
    return tuple(name for name, s in SCHEMES.items() if fmt in s.formats)


# Pruning methods; structured ones (l1, l2, heads) physically remove channels/heads.
PRUNE_METHODS: tuple[str, ...] = ("none", "l1", "l2", "heads", "magnitude", "2:4")
# The structured methods, each with the weight norm it ranks units (channels, heads, FFN neurons) by.  At the same
# ratio and round_to they all keep the same number of units per layer (`planner.config.round_keep`): the norm only
# decides which ones, so they build networks of the same widths (on a transformer ``heads`` and ``l1`` build the
# very same one), and a student of one is evidence for the others (`planner.search.feasibility`).
PRUNE_NORMS: dict[str, int] = {"l1": 1, "l2": 2, "heads": 1}
STRUCTURED_PRUNE_METHODS: tuple[str, ...] = tuple(PRUNE_NORMS)
