"""Quantization: torch modules (`quantize_torch`) and ONNX files (`quantize_onnx`).

Scheme names, their options (valid values, the first being the default) and which of the two
paths implements each are rows of `planner.schemes.SCHEMES` (`TORCH_SCHEMES` / `ONNX_SCHEMES`
are read from it), so the search-space validator checks YAML without importing torch or onnxruntime.

torch schemes
  none              identity
  fp16 / bf16       the module is cast; the caller casts float inputs (`input_dtype`)
  int8_dynamic      torch.ao.quantization.quantize_dynamic on nn.Linear, qint8 weights, per tensor
                    or (option per_channel) per output channel
  int8_weight_only  torchao ``quantize_(model, Int8WeightOnlyConfig())`` (nn.Linear)
  int4_weight_only  `planner.transforms.int4`: grouped int4 weights for torch's CPU int4 kernel
                    (bf16 compute); option group_size.  CPU only.
  int8_dynamic's reduce_range ("auto": true on x86 CPUs without VNNI, see `int8_saturates`) picks 7-bit
  weights (as ONNX Runtime's does; activations stay 8-bit, not torch's own 7) or 8-bit; its other options
  (op_types, weight_type) are ONNX Runtime's: validated, then ignored here.  The torch backends declare what they act on (`Backend.scheme_options`) and the
  search samples nothing else for them.
  What a torch quantization did is recorded on the module (`quant_info`).

ONNX schemes (onnxruntime.quantization; the model is first run through
``quant_pre_process`` -- shape inference + graph optimisation -- when that works)
  none              copy
  fp16              onnxruntime.transformers.float16.convert_float_to_float16, float I/O kept
  int8_dynamic      quantize_dynamic; op_types "matmul" (MatMul, Gemm; default -- dynamic
                    quantization of Conv made ORT ~3.7x slower on resnet18) or "all"
  int8_static       quantize_static in QDQ format, calibrated on ``calib``; entropy
                    calibration runs with `ENTROPY_NUM_BINS` bins (ORT's default via
                    quantize_static is equivalent to minmax)
  int4_weight_only  MatMulNBitsQuantizer: constant-weight MatMuls become com.microsoft
                    MatMulNBits (int4 blocks of group_size along K, symmetric, float compute);
                    CPU (MLAS) and CUDA kernels.  Needs no calibration data.
  fp8               float8 E4M3 Q/DQ for TensorRT (see `_fp8`)
  reduce_range "auto" (the default) uses 7-bit weights on x86 CPUs without VNNI, where
  ORT's u8*s8 kernels otherwise saturate (see `int8_saturates`).

Each (scheme, format) is implemented by one function registered in `HANDLERS` with ``@handles(scheme, fmt)``;
`quantize_torch` and `quantize_onnx` dispatch by that table, never by comparing scheme names.

Failures of the quantizer on a particular graph raise
``CandidateFailed(FailReason.COMPILE, ...)``; bad options raise ``ConfigError``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from planner.errors import CandidateFailed, ConfigError, FailReason, did_you_mean
from planner.schemes import SCHEMES, schemes_for_format

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch
    from torch import nn

    from planner.config import QuantConfig

TORCH_SCHEMES: tuple[str, ...] = schemes_for_format("torch")  # what quantize_module implements
QUANT_INFO_ATTR = "planner_quant_info"
ONNX_SCHEMES: tuple[str, ...] = schemes_for_format("onnx")  # what quantize_onnx implements

CALIBRATED = tuple(n for n, sc in SCHEMES.items() if sc.calibrated)  # activation scales from calibration data
# int8_static options that NNCF's post-training quantization acts on (the openvino backend); the ONNX Runtime
# quantizer acts on the others (declared by the backends that use it, `Backend.scheme_options`)
NNCF_INT8_OPTIONS = ("preset", "model_type", "fast_bias_correction", "subset_size", "accuracy_control")
ORT_INT8_STATIC_OPTIONS = tuple(k for k in SCHEMES["int8_static"].options if k not in NNCF_INT8_OPTIONS)
OP_TYPES: dict[str, list[str] | None] = {"matmul": ["MatMul", "Gemm"], "all": None}  # None: every op ORT supports
ATTENTION_OPS = ("Softmax", "Attention", "MultiHeadAttention")  # a graph with one is a transformer (`auto_op_types`)
CALIB_BATCH = 8  # calibration batch when the model's batch axis is dynamic
MAX_CALIB_SAMPLES = 512
# Entropy (KL) calibration histogram size.  ORT's search is a Python loop: ~0.5 s per
# activation tensor at 512 bins, ~3 s at 2048 (TensorRT's choice); 128 (ORT's default
# through quantize_static) degenerates to minmax.
ENTROPY_NUM_BINS = 512
LARGE_MODEL_BYTES = 1_800_000_000  # above this, write weights as ONNX external data (protobuf limit: 2 GiB)


@dataclass(frozen=True)
class Handler:
    """What implements one scheme for one model format: ``fn`` and what it needs first.

    torch: ``fn(module, opts, example_inputs) -> module``; ONNX: ``fn(src, dst, opts, calib, info, large)``.
    """

    fn: Callable[..., Any]
    needs_linear: bool = False  # torch: the module must have nn.Linear layers (else `unsupported`)
    preprocess: bool = False  # ONNX: run through quant_pre_process (shape inference + graph optimisation) first
    refuse: Callable[[dict], str | None] | None = None  # why a combination of valid options cannot work


# (scheme, format) -> its handler; one registration per row of `planner.schemes.SCHEMES` and format it lists
# (tests/test_declarations.py checks both ways).  Dispatch is by this table: no branch on a scheme's name.
HANDLERS: dict[tuple[str, str], Handler] = {}


def handles(scheme: str, fmt: str, **kw) -> Callable:
    """Register the decorated function as what implements ``scheme`` on models of format ``fmt``."""
    if scheme not in SCHEMES or fmt not in SCHEMES[scheme].formats:
        raise ValueError(f"{scheme}/{fmt}: not a row of planner.schemes.SCHEMES")

    def register(fn):
        HANDLERS[(scheme, fmt)] = Handler(fn, **kw)
        return fn

    return register


def onnx_bytes(path: Path) -> int:
    """Size of an ONNX model including its external data files."""
    import onnx

    path = Path(path)
    total = path.stat().st_size
    model = onnx.load(str(path), load_external_data=False)
    locations = set()
    for init in model.graph.initializer:
        if init.data_location == onnx.TensorProto.EXTERNAL:
            for entry in init.external_data:
                if entry.key == "location":
                    locations.add(entry.value)
    for loc in locations:
        f = path.parent / loc
        if f.is_file():
            total += f.stat().st_size
    return total


def _save(model, dst: Path, large: bool) -> None:
    import onnx

    if large:
        data = dst.with_name(dst.name + ".data")
        if data.exists():
            data.unlink()
        onnx.save(model, str(dst), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=data.name, size_threshold=1024)
    else:
        onnx.save(model, str(dst))


def int8_saturates() -> bool:
    """True on x86-64 CPUs without VNNI (AVX2-only), where ORT's u8*s8 int8 GEMM kernels
    (vpmaddubsw) saturate their int16 intermediate sums: on such a CPU a plain int8
    static MLP scored cosine 0.977 against fp32, 0.9998 with 7-bit weights (reduce_range)."""
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686", "x86"):
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return True  # unknown x86: be safe
    return not any(f in flags for f in ("avx512_vnni", "avx_vnni", "amx_int8"))


def resolve_options(cfg: "QuantConfig") -> dict[str, Any]:
    """The scheme's options with defaults filled in; ConfigError naming valid choices otherwise."""
    if cfg.scheme not in SCHEMES:
        raise ConfigError(f"quant.scheme {cfg.scheme!r}: {did_you_mean(cfg.scheme, SCHEMES)}")
    valid = SCHEMES[cfg.scheme].options
    errors = []
    opts = cfg.opts()
    for key, value in opts.items():
        if key not in valid:
            choices = did_you_mean(key, valid) if valid else "this scheme takes no options"
            errors.append(f"quant.options.{key} (scheme {cfg.scheme}): unknown option; {choices}")
        elif not any(value == v and type(value) is type(v) for v in valid[key]):
            errors.append(f"quant.options.{key}={value!r} (scheme {cfg.scheme}): "
                          f"valid values: {', '.join(repr(v) for v in valid[key])}")
    if errors:
        raise ConfigError(errors)
    return {k: opts.get(k, vals[0]) for k, vals in valid.items()}


def unsupported_combination(cfg: "QuantConfig") -> str | None:
    """Why a combination of individually valid options cannot work (None: it can)."""
    opts = resolve_options(cfg)
    h = HANDLERS.get((cfg.scheme, "onnx"))
    return h.refuse(opts) if h is not None and h.refuse is not None else None


def validate(cfg: "QuantConfig") -> None:
    """ConfigError when the scheme or one of its options is unknown."""
    resolve_options(cfg)


# --------------------------------------------------------------------------- torch


def quant_info(module) -> dict[str, Any] | None:
    """What `quantize_torch` recorded on the module (None when it recorded nothing)."""
    return getattr(module, QUANT_INFO_ATTR, None)


def record_quant_info(module, into: dict[str, Any]) -> None:
    """Copy the numeric `quant_info` of ``module`` into ``into`` as ``quant_<key>`` (a trial's transform info)."""
    for k, v in (quant_info(module) or {}).items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            into[f"quant_{k}"] = v


def input_dtype(cfg: "QuantConfig") -> "torch.dtype | None":
    """The dtype float inputs must be cast to for a module quantized with ``cfg`` (None: leave them).

    Only floating-point inputs are cast; integer inputs (token ids, masks) stay as they are.
    """
    import torch

    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(SCHEMES[cfg.scheme].precision)


def quantize_torch(module: "nn.Module", cfg: "QuantConfig", example_inputs: "tuple[torch.Tensor, ...]") -> "nn.Module":
    """Quantize a torch module for torch backends; may modify ``module`` in place."""
    from torch import nn

    opts = resolve_options(cfg)
    h = HANDLERS.get((cfg.scheme, "torch"))
    if h is None:
        raise CandidateFailed(FailReason.UNSUPPORTED,
                              f"quantization scheme {cfg.scheme!r} is not available for torch modules "
                              f"(available: {', '.join(TORCH_SCHEMES)})")
    if h.needs_linear and not any(isinstance(m, nn.Linear) for m in module.modules()):
        raise CandidateFailed(FailReason.UNSUPPORTED, f"{cfg.scheme} quantizes nn.Linear layers and "
                              f"{type(module).__name__} has none (e.g. transformers GPT-2 uses Conv1D)")
    return h.fn(module, opts, example_inputs)


@handles("none", "torch")
def _torch_none(module, opts, example_inputs):
    return module


@handles("fp16", "torch")
def _torch_fp16(module, opts, example_inputs):
    import torch

    return module.to(torch.float16)


@handles("bf16", "torch")
def _torch_bf16(module, opts, example_inputs):
    import torch

    return module.to(torch.bfloat16)


@handles("int4_weight_only", "torch")
def _torch_int4(module, opts, example_inputs):
    import torch
    from torch import nn

    from planner.transforms.int4 import quantize_int4

    gs = opts["group_size"]
    total = sum(type(m) is nn.Linear for m in module.modules())
    done, kept = quantize_int4(module, gs)
    if not done:
        raise CandidateFailed(FailReason.UNSUPPORTED,
                              f"int4_weight_only: none of the {total} nn.Linear layers fits the int4 CPU kernel "
                              f"(out_features a multiple of 16, in_features of group_size {gs})")
    try:
        with torch.no_grad():
            module.eval()(*example_inputs)
    except Exception as e:  # noqa: BLE001
        raise CandidateFailed(FailReason.COMPILE, f"int4_weight_only model failed to run: {type(e).__name__}: {e}") from e
    setattr(module, QUANT_INFO_ATTR, {"scheme": "int4_weight_only", "group_size": gs, "layers_quantized": done,
                                      "layers_kept_float": kept})
    return module


@handles("int8_dynamic", "torch", needs_linear=True)
def _torch_int8_dynamic(module, opts, example_inputs):
    import torch
    from torch import nn
    from torch.ao.quantization import QConfig, default_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic

    qconfig = per_channel_dynamic_qconfig if opts["per_channel"] else default_dynamic_qconfig
    reduce_range = int8_saturates() if opts["reduce_range"] == "auto" else bool(opts["reduce_range"])
    if reduce_range:  # 7-bit weights (what ONNX Runtime's reduce_range narrows): the same guard as 7-bit activations
        qconfig = QConfig(activation=qconfig.activation, weight=qconfig.weight.with_args(quant_min=-64, quant_max=63))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = quantize_dynamic(module.eval(), {nn.Linear: qconfig}, dtype=torch.qint8)
    except Exception as e:  # noqa: BLE001
        raise CandidateFailed(FailReason.COMPILE,
                              f"torch int8_dynamic quantization failed: {type(e).__name__}: {e}") from e
    # torch's dynamic Linear (module version 4) always quantizes its activations to 7 bits, a guard for fbgemm's
    # u8*s8 kernels on CPUs without VNNI, whose int16 sums of two products saturate (2 * 255 * 127 > 32767).  7-bit
    # weights keep those sums in range as well (2 * 255 * 64) and lose far less: MiniLM-L6, per-channel, lost 0.030
    # of centered cosine with 7-bit activations, 0.0092 with 7-bit weights and 8-bit activations, at the same speed
    # (experiments/results/torch-int8-dynamic-7bit-weights-minilm-2026-12-07.md; ONNX Runtime's int8_dynamic, which
    # narrows the weights: 0.0092).  Version 3 of the module is its forward with 8-bit activations.
    n = 0
    for m in out.modules():
        if type(m).__name__ == "Linear" and "quantized.dynamic" in type(m).__module__:
            m.version = 3
            n += 1
    setattr(out, QUANT_INFO_ATTR, {"scheme": "int8_dynamic", "per_channel": bool(opts["per_channel"]),
                                   "weight_bits": 7 if reduce_range else 8, "activation_bits": 8,
                                   "layers_quantized": n})
    return out


@handles("int8_weight_only", "torch", needs_linear=True)
def _torch_int8_weight_only(module, opts, example_inputs):
    import torch

    try:
        from torchao.quantization import Int8WeightOnlyConfig, quantize_
    except Exception as e:  # noqa: BLE001 -- torchao missing or broken build
        raise CandidateFailed(FailReason.UNSUPPORTED,
                              f"int8_weight_only needs torchao (pip install 'planner[compress]'): {e}") from e
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_(module, Int8WeightOnlyConfig())
            with torch.no_grad():
                module.eval()(*example_inputs)
    except Exception as e:  # noqa: BLE001
        raise CandidateFailed(FailReason.UNSUPPORTED,
                              f"torchao int8_weight_only failed on this model/device: {type(e).__name__}: {e}") from e
    return module


# --------------------------------------------------------------------------- ONNX


def _model_inputs(model) -> list:
    inits = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def _make_reader(model_path: Path, calib: dict[str, "np.ndarray"]):
    import numpy as np
    import onnx
    from onnxruntime.quantization import CalibrationDataReader

    model = onnx.load(str(model_path), load_external_data=False)
    inputs = _model_inputs(model)
    names = [i.name for i in inputs]
    missing = [n for n in names if n not in calib]
    if missing:
        raise ConfigError(f"int8_static calibration data lacks model input(s) {missing}; it has {sorted(calib)}")
    n = min(int(np.asarray(calib[k]).shape[0]) for k in names) if names else 0
    n = min(n, MAX_CALIB_SAMPLES)
    if n == 0:
        raise ConfigError("int8_static needs at least one calibration sample")
    batch = CALIB_BATCH
    dtypes = {}
    for i in inputs:
        dims = i.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value") and dims[0].dim_value > 0:
            batch = int(dims[0].dim_value)  # static batch axis: feed exactly that
        dtypes[i.name] = onnx.helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type)
    if batch > n:
        raise ConfigError(f"int8_static: the model's batch axis is fixed at {batch} but only {n} "
                          f"calibration samples were given")
    batch = min(batch, n)
    starts = list(range(0, n - batch + 1, batch)) if batch else []
    arrays = {k: np.asarray(calib[k][:n]).astype(dtypes[k], copy=False) for k in names}

    class _Reader(CalibrationDataReader):
        def __init__(self):
            self.i = 0

        def get_next(self):
            if self.i >= len(starts):
                return None
            s = starts[self.i]
            self.i += 1
            return {k: np.ascontiguousarray(a[s:s + batch]) for k, a in arrays.items()}

        def rewind(self):
            self.i = 0

    return _Reader(), len(starts) * batch


def _preprocess(src: Path, tmp: Path, large: bool) -> tuple[Path, bool, str | None]:
    import contextlib

    from onnxruntime.quantization import quant_pre_process

    out = (tmp / "preprocessed.onnx").resolve()  # absolute: the call runs in `tmp`
    try:
        # in `tmp`: ONNX Runtime's symbolic shape inference saves the model it could not finish (with its weights,
        # tens of MB) as sym_shape_infer_temp.onnx in the working directory, e.g. with a dynamic length axis
        with contextlib.chdir(tmp), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quant_pre_process(str(Path(src).resolve()), str(out), save_as_external_data=large,
                              all_tensors_to_one_file=True, external_data_location="preprocessed.onnx.data")
        if out.is_file():
            return out, True, None
    except Exception as e:  # noqa: BLE001 -- optional step: fall back to the raw model
        return src, False, f"{type(e).__name__}: {e}"[:300]
    return src, False, "quant_pre_process wrote no file"


def _qtype(name: str):
    from onnxruntime.quantization import QuantType

    return {"s8": QuantType.QInt8, "u8": QuantType.QUInt8}[name]


def quantize_onnx(src: Path, dst: Path, cfg: "QuantConfig", calib: "dict[str, np.ndarray] | None") -> dict:
    """Write a quantized copy of ONNX model ``src`` to ``dst``; returns an info dict.

    ``calib`` (int8_static only) maps input names to arrays whose first axis is the
    sample axis; it is fed in batches of `CALIB_BATCH` (or the model's fixed batch size).
    """
    src, dst = Path(src), Path(dst)
    opts = resolve_options(cfg)
    h = HANDLERS.get((cfg.scheme, "onnx"))
    if h is None:
        raise CandidateFailed(FailReason.UNSUPPORTED,
                              f"quantization scheme {cfg.scheme!r} is not available for ONNX models "
                              f"(available: {', '.join(ONNX_SCHEMES)})")
    if SCHEMES[cfg.scheme].calibrated and not calib:
        raise ConfigError(f"{cfg.scheme} needs calibration data (calib)")
    bad = h.refuse(opts) if h.refuse is not None else None
    if bad:
        raise CandidateFailed(FailReason.UNSUPPORTED, bad)
    dst.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    try:
        src_bytes = onnx_bytes(src)
    except OSError:
        raise
    except Exception as e:  # noqa: BLE001 -- unreadable protobuf
        raise CandidateFailed(FailReason.COMPILE, f"{cfg.scheme}: cannot read ONNX model {src}: {e}") from e
    large = src_bytes > LARGE_MODEL_BYTES
    info: dict[str, Any] = {"scheme": cfg.scheme, "options": opts, "src_bytes": src_bytes}
    if not h.preprocess:
        h.fn(src, dst, opts, calib, info, large)
    else:  # the quantizers want shape-inferred, pre-optimised graphs
        with tempfile.TemporaryDirectory(prefix="planner-quant-") as tmpdir:
            model_in, info["preprocessed"], why = _preprocess(src, Path(tmpdir), large)
            if why:
                info["preprocess_error"] = why
            h.fn(model_in, dst, opts, calib, info, large)
    try:
        import onnx

        onnx.checker.check_model(str(dst))
    except Exception as e:  # noqa: BLE001
        raise CandidateFailed(FailReason.COMPILE, f"{cfg.scheme}: quantized ONNX model is invalid: {e}") from e
    info["dst_bytes"] = onnx_bytes(dst)
    info["seconds"] = round(time.perf_counter() - t0, 3)
    return info


def sensitive_nodes(float_model: Path, qdq_model: Path) -> list[tuple[str, float]]:
    """Quantized nodes of ``float_model``, most sensitive first: ranked by the signal-to-quantization-noise
    ratio (dB) of their weights in ``qdq_model`` (lower = more damaged by int8).  A weight-only proxy:
    cheap (no inference) and data-free; activations are not ranked."""
    import onnx
    from onnxruntime.quantization.qdq_loss_debug import compute_weight_error, create_weight_matching

    sqnr = compute_weight_error(create_weight_matching(str(float_model), str(qdq_model)))
    model = onnx.load(str(float_model), load_external_data=False)
    by_node: dict[str, float] = {}
    for node in model.graph.node:
        if not node.name or node.op_type not in ("Conv", "MatMul", "Gemm", "ConvTranspose"):
            continue
        vals = [float(sqnr[i]) for i in node.input[1:2] if i in sqnr]
        if vals:
            by_node[node.name] = min(vals)
    return sorted(by_node.items(), key=lambda kv: kv[1])


SENSITIVITY_BATCHES = 4  # calibration batches run through both models to rank layers by activation fidelity
SQNR_CAP_DB = 100.0  # an exact tensor (e.g. an unquantized model input) counts as this clean


def sensitive_nodes_by_activation(float_model: Path, qdq_model: Path, reader) -> list[tuple[str, float]]:
    """Quantized nodes of ``float_model``, most sensitive first, ranked on calibration data (``reader``):
    both models run with every intermediate tensor as an output, and each Conv/MatMul/Gemm scores the
    fidelity it loses, SQNR(its input) - SQNR(its output) in dB, where SQNR compares the quantized
    model's tensor with the float model's.  Unlike the weight proxy, this sees activation ranges and
    how much each layer's error matters downstream of the layers before it."""
    import onnx
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        compute_signal_to_quantization_noice_ratio,
        modify_model_output_intermediate_tensors,
    )

    class _First:  # the first SENSITIVITY_BATCHES batches of the calibration reader
        def __init__(self):
            reader.rewind()
            self.left = SENSITIVITY_BATCHES

        def __iter__(self):
            while self.left > 0:
                self.left -= 1
                batch = reader.get_next()
                if batch is None:
                    return
                yield batch

    with tempfile.TemporaryDirectory(prefix="planner-sens-") as tmp:
        acts = []
        for name, path in (("float", float_model), ("qdq", qdq_model)):
            aug = Path(tmp) / f"{name}.onnx"
            modify_model_output_intermediate_tensors(str(path), str(aug))
            acts.append(collect_activations(str(aug), _First()))
    float_acts, qdq_acts = acts
    reader.rewind()

    def sqnr(float_name: str, qdq_name: str) -> float | None:
        f, q = float_acts.get(float_name), qdq_acts.get(qdq_name)
        if f is None or q is None:
            return None
        return min(SQNR_CAP_DB, compute_signal_to_quantization_noice_ratio(f, q))

    # the same node in both graphs (the quantizer keeps node names): in the QDQ graph its input is the
    # dequantized value it consumes and its output the value it produces, before any Q/DQ of its own
    qdq_nodes = {n.name: n for n in onnx.load(str(qdq_model), load_external_data=False).graph.node if n.name}
    model = onnx.load(str(float_model), load_external_data=False)
    drop: dict[str, float] = {}
    for node in model.graph.node:
        q = qdq_nodes.get(node.name)
        if q is None or node.op_type not in ("Conv", "MatMul", "Gemm", "ConvTranspose"):
            continue
        s_in, s_out = sqnr(node.input[0], q.input[0]), sqnr(node.output[0], q.output[0])
        if s_in is not None and s_out is not None:
            drop[node.name] = s_in - s_out
    return sorted(drop.items(), key=lambda kv: -kv[1])


@handles("none", "onnx")
def _onnx_none(src: Path, dst: Path, opts: dict, calib, info: dict, large: bool) -> None:
    if src.resolve() != dst.resolve():
        import onnx

        _save(onnx.load(str(src)), dst, large)  # not a file copy: external data must follow


@handles("fp16", "onnx")
def _fp16(src: Path, dst: Path, opts: dict, calib, info: dict, large: bool) -> None:
    import onnx

    try:
        from onnxruntime.transformers.float16 import convert_float_to_float16
    except Exception as e:  # noqa: BLE001
        raise CandidateFailed(FailReason.UNSUPPORTED,
                              f"fp16 ONNX conversion needs onnxruntime.transformers.float16: {e}") from e
    try:
        model = onnx.load(str(src))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model16 = convert_float_to_float16(model, keep_io_types=True)
        _toposort(model16.graph)  # the converter appends the input Casts at the end of the graph
        _save(model16, dst, large)
    except Exception as e:  # noqa: BLE001
        raise CandidateFailed(FailReason.COMPILE, f"fp16 ONNX conversion failed: {type(e).__name__}: {e}") from e


def _toposort(graph) -> None:
    """Reorder ``graph.node`` topologically, in place (stable; leaves cycles in original order)."""
    nodes = list(graph.node)
    produced = {o for n in nodes for o in n.output if o}
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer}
    order, pending = [], nodes
    while pending:
        rest = []
        for n in pending:
            if all((not i) or i in available or i not in produced for i in n.input):
                order.append(n)
                available.update(o for o in n.output if o)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            order.extend(rest)
            break
        pending = rest
    if [id(n) for n in order] != [id(n) for n in nodes]:
        copies = [type(n)() for n in order]
        for c, n in zip(copies, order):
            c.CopyFrom(n)
        del graph.node[:]
        graph.node.extend(copies)


def _entropy_cache(model_in: Path, op_types, reader, tmp: Path, large: bool) -> Path | None:
    """Entropy calibration with `ENTROPY_NUM_BINS` histogram bins, saved as an ORT calibration cache.

    quantize_static cannot pass ``num_bins`` to the entropy calibrator, whose default
    (128 bins == 128 quantized bins) leaves a single candidate threshold: the min/max
    range, i.e. plain minmax.  None when this ORT lacks calibration caches (old
    versions): the caller then gets ORT's default behaviour.
    """
    import inspect

    from onnxruntime.quantization import CalibrationMethod, quantize_static

    try:
        from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data
    except ImportError:
        return None
    if "calibration_cache_path" not in inspect.signature(quantize_static).parameters:
        return None
    calibrator = create_calibrator(
        Path(model_in), op_types, augmented_model_path=str(tmp / "augmented.onnx"),
        calibrate_method=CalibrationMethod.Entropy, use_external_data_format=large,
        extra_options={"num_bins": ENTROPY_NUM_BINS, "num_quantized_bins": 128},
    )
    calibrator.collect_data(reader)
    cache = tmp / "calibration.json"
    save_tensors_data(calibrator.compute_data(), cache)
    del calibrator
    return cache


# ORT's MatMulNBits `accuracy_level`: 0 = float compute.  4 (int8 compute of the activations) was slower on
# this AVX2 host without VNNI: MiniLM-L6 batch 1, group 32: 1.40x ORT fp32 against 1.04x at level 0
# (experiments/results/int4-ort-minilm-b1-2026-11-23-143120.md).
INT4_ACCURACY_LEVEL = 0


@handles("int4_weight_only", "onnx", preprocess=True)
def _int4(model_in: Path, dst: Path, opts: dict, calib, info: dict, large: bool) -> None:
    """int4 weight-only: every MatMul whose second input is a constant 2-D weight becomes a MatMulNBits with
    symmetric int4 blocks of ``group_size`` along K (round to nearest; no data needed).  Gemm (e.g. a CNN's
    classifier head) and MatMuls of two activations (attention scores) stay in float; a model with no
    quantizable MatMul is `unsupported` rather than passed off as int4."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    gs = int(opts["group_size"])
    info.update(group_size=gs, accuracy_level=INT4_ACCURACY_LEVEL, symmetric=True)
    qlog = logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer")
    level = qlog.level
    qlog.setLevel(logging.WARNING)  # it logs every node it skips at INFO
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            q = MatMulNBitsQuantizer(onnx.load(str(model_in)), bits=4, block_size=gs, is_symmetric=True,
                                     accuracy_level=INT4_ACCURACY_LEVEL, op_types_to_quantize=("MatMul",))
            q.process()
            model = q.model.model
    except Exception as e:  # noqa: BLE001 -- the quantizer crashed on this graph
        raise CandidateFailed(FailReason.COMPILE, f"onnxruntime int4 quantization failed: {type(e).__name__}: {e}") from e
    finally:
        qlog.setLevel(level)
    ops = [n.op_type for n in model.graph.node]
    done, kept = ops.count("MatMulNBits"), ops.count("MatMul") + ops.count("Gemm")
    if not done:
        raise CandidateFailed(FailReason.UNSUPPORTED,
                              f"int4_weight_only: no MatMul with a constant weight to quantize "
                              f"({kept} MatMul/Gemm node(s) stay float; ONNX Runtime's MatMulNBits covers MatMul only)")
    info.update(layers_quantized=done, layers_kept_float=kept)
    _save(model, dst, large)


@handles("fp8", "onnx", preprocess=True)
def _fp8(model_in: Path, dst: Path, opts: dict, calib, info: dict, large: bool) -> None:
    """Float8 (E4M3FN) Q/DQ for weights and activations, scales from ONNX Runtime's distribution calibration
    (the method it implements for float8; zero points are 0, as TensorRT requires).  The graph is for
    TensorRT on sm_89+; ONNX Runtime's CPU provider runs it correctly only without its graph fusions
    (ORT_ENABLE_ALL mangles the float8 Q/DQ: measured with 1.32), so the CPU is no place to time it."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    op_types = OP_TYPES[opts["op_types"]]
    info["op_types"] = op_types or "all"
    try:
        reader, n = _make_reader(model_in, calib)
        info["calib_samples"] = n
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            quantize_static(
                str(model_in), str(dst), reader,
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=op_types,
                per_channel=opts["per_channel"],
                activation_type=QuantType.QFLOAT8E4M3FN,
                weight_type=QuantType.QFLOAT8E4M3FN,
                calibrate_method=CalibrationMethod.Distribution,
                use_external_data_format=large,
                extra_options={"scenario": "same"},
            )
    except (ConfigError, CandidateFailed):
        raise
    except Exception as e:  # noqa: BLE001 -- the quantizer crashed on this graph
        raise CandidateFailed(FailReason.COMPILE, f"onnxruntime fp8 quantization failed: {type(e).__name__}: {e}") from e
    if not dst.is_file():
        raise CandidateFailed(FailReason.COMPILE, "onnxruntime fp8 quantization wrote no model")


def _int8_setup(opts: dict, info: dict, model_in: Path | None = None) -> tuple[list[str] | None, bool]:
    """(op types, reduce_range) of an ONNX Runtime int8 quantization, recorded in ``info``; op_types ``auto``
    (int8_static's default) is ``matmul`` on a graph with attention and ``all`` otherwise (`auto_op_types`)."""
    choice = opts["op_types"]
    if choice == "auto":
        choice = info["op_types_auto"] = auto_op_types(model_in)
    op_types = OP_TYPES[choice]
    info["op_types"] = op_types or "all"
    reduce_range = int8_saturates() if opts["reduce_range"] == "auto" else bool(opts["reduce_range"])
    info["reduce_range"] = reduce_range
    return op_types, reduce_range


def auto_op_types(model: Path | None) -> str:
    """``matmul`` for a graph with attention (a Softmax), else ``all``.  Quantizing every op ORT can on a
    transformer (embedding Gathers, LayerNorm, Softmax, residual Adds, per-tensor minmax) wrecks it: MiniLM-L6 lost
    0.63 (1 - cosine of its embeddings) with ``all`` and 0.08 with ``matmul``
    (`experiments/results/ort-int8-minilm-2026-12-06.md`); on a CNN ``all`` quantizes the convolutions too."""
    if model is None:
        return "all"
    import onnx

    try:
        graph = onnx.load(str(model), load_external_data=False).graph
    except Exception:  # noqa: BLE001 -- unreadable here: the quantizer reports it
        return "all"
    return "matmul" if any(n.op_type in ATTENTION_OPS for n in graph.node) else "all"


@contextlib.contextmanager
def _ort_quantizer(scheme: str, dst: Path):
    """Run an ONNX Runtime quantizer quietly; a crash on this graph, or no model written, fails the candidate."""
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):  # calibrators print
            warnings.simplefilter("ignore")
            yield
    except (ConfigError, CandidateFailed):
        raise
    except Exception as e:  # noqa: BLE001 -- the quantizer crashed on this graph
        raise CandidateFailed(FailReason.COMPILE,
                              f"onnxruntime {scheme} quantization failed: {type(e).__name__}: {e}") from e
    if not dst.is_file():
        raise CandidateFailed(FailReason.COMPILE, f"onnxruntime {scheme} quantization wrote no model")


@handles("int8_dynamic", "onnx", preprocess=True)
def _int8_dynamic(model_in: Path, dst: Path, opts: dict, calib, info: dict, large: bool) -> None:
    from onnxruntime.quantization import quantize_dynamic

    op_types, reduce_range = _int8_setup(opts, info)
    with _ort_quantizer("int8_dynamic", dst):
        quantize_dynamic(str(model_in), str(dst), op_types_to_quantize=op_types, per_channel=opts["per_channel"],
                         reduce_range=reduce_range, weight_type=_qtype(opts["weight_type"]),
                         use_external_data_format=large)


def _signed_activations_need_signed_weights(opts: dict) -> str | None:
    if opts["activation_type"] == "s8" and opts["weight_type"] == "u8":
        return "int8_static: onnxruntime does not support activation_type=s8 with weight_type=u8"
    return None


CALIBRATION_METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}  # -> CalibrationMethod


@handles("int8_static", "onnx", preprocess=True, refuse=_signed_activations_need_signed_weights)
def _int8_static(model_in: Path, dst: Path, opts: dict, calib, info: dict, large: bool) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_static

    op_types, reduce_range = _int8_setup(opts, info, model_in)
    with _ort_quantizer("int8_static", dst):
        reader, n = _make_reader(model_in, calib)
        info["calib_samples"] = n
        method = getattr(CalibrationMethod, CALIBRATION_METHODS[opts["calibrate_method"]])
        with tempfile.TemporaryDirectory(prefix="planner-calib-") as tmp:
            extra = {}
            if opts.get("symmetric"):
                extra["extra_options"] = {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False}
            if method == CalibrationMethod.Entropy:
                cache = _entropy_cache(model_in, op_types, reader, Path(tmp), large)
                if cache is not None:
                    extra["calibration_cache_path"] = str(cache)
                    info["entropy_num_bins"] = ENTROPY_NUM_BINS
                reader.rewind()

            def run_static(exclude: list[str]) -> None:
                reader.rewind()
                quantize_static(
                    str(model_in), str(dst), reader,
                    quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=op_types,
                    per_channel=opts["per_channel"],
                    reduce_range=reduce_range,
                    activation_type=_qtype(opts["activation_type"]),
                    weight_type=_qtype(opts["weight_type"]),
                    calibrate_method=method,
                    use_external_data_format=large,
                    nodes_to_exclude=exclude,
                    **extra,
                )

            run_static([])
            k = int(opts.get("fallback_layers") or 0)
            if k > 0:  # sensitive-layer fallback: re-quantize with the k worst layers left in fp32
                rank = opts.get("fallback_rank", "weight")
                info["fallback_rank"] = rank
                if rank == "activation":
                    ranked = sensitive_nodes_by_activation(model_in, dst, reader)
                    info["fallback_sqnr_drop_db"] = [round(v, 2) for _, v in ranked[:k]]
                else:
                    ranked = sensitive_nodes(model_in, dst)
                    info["fallback_sqnr_db"] = [round(v, 2) for _, v in ranked[:k]]
                info["fallback_nodes"] = [n for n, _ in ranked[:k]]
                run_static(info["fallback_nodes"])
