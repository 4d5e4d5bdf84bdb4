"""OpenVINO (CPU): the cached ONNX export converted to an OpenVINO model, optionally quantized or
weight-compressed by NNCF, compiled by the CPU plugin; the IR (``model.xml`` + ``model.bin``) is the artifact.

Input.  The cached ONNX export (`ModelSource.onnx_path`), converted with ``openvino.convert_model``:
the same file ONNX Runtime and TensorRT build from (exported once per prune/distill transform and
shared across trials), and the only route for models given as ONNX files.  Converting the PyTorch
module directly would trace it again in every worker and exclude ONNX-file models.

Precision is the trial's quantization scheme, not a second option: the scheme table already keeps
a precision the target does not list out of the search (`planner.space.schemes_for`, `Backend.check`).

  none              INFERENCE_PRECISION_HINT f32 (OpenVINO's own default is bf16 on AMX / AVX-512 BF16
                    CPUs; a trial labelled fp32 must compute in fp32)
  bf16 / fp16       INFERENCE_PRECISION_HINT bf16 / f16; refused (`CandidateFailed(UNSUPPORTED)`) when the
                    CPU plugin does not list BF16 / FP16 among its capabilities, where OpenVINO would quietly
                    run f32 under the bf16 label
  int8_static       NNCF post-training quantization (``nncf.quantize``) on the model's calibration data
                    (held-out when the model has a ``calibration_dataset()``), options `NNCF_INT8_OPTIONS`:
                    preset, model_type (auto = transformer when the graph has a Softmax),
                    fast_bias_correction, subset_size, and fallback_layers: the k layers whose int8 weights
                    lose most (per-channel weight SQNR, `sensitive_layers`) stay in float (NNCF ignored scope);
                    accuracy_control: ``nncf.quantize_with_accuracy_control`` with the target's
                    max_quality_loss (absolute or relative, as the target says) as the maximum top-1 accuracy
                    drop on the model's labelled evaluation data, or, when the model has a user evaluator
                    (``--evaluator``), as the maximum drop of the evaluator's metric, NNCF ranking the layers to
                    restore by how much they change the outputs (recorded: ``accuracy_control_data``); a model
                    with neither is `UNSUPPORTED` for it
  int8_weight_only  ``nncf.compress_weights`` INT8_ASYM (MatMul / embedding weights; float compute)
  int4_weight_only  ``nncf.compress_weights`` INT4_SYM (option symmetric=False: INT4_ASYM, zero points per
                    group), group_size from the scheme option (NNCF keeps the embeddings and the last layer in
                    int8, its default backup mode)

For the quantized schemes the layers left in float run at bf16 when the target lists bf16 and the CPU
has it (what OpenVINO does by default on such CPUs), else at f32; the trial records which
(``inference_precision``).  Quantized IRs are cached in the artifact cache, keyed by the ONNX file, the
scheme and its options, the calibration data and the NNCF/OpenVINO versions.

Compiled models are cached across trials and studies in ``<planner cache>/openvino`` (OpenVINO's
``CACHE_DIR``); ``openvino_loaded_from_cache`` says whether a trial's compile was a cache hit.

Backend options: performance_hint (LATENCY | THROUGHPUT), num_streams (0: the hint's choice),
inference_num_threads (0: the target's threads), dynamic_batch (False: the IR is reshaped to the
trial's batch size; True: the batch axis stays dynamic).  The runtime runs one batch per call on one
infer request, which is what planner times: more streams only pay off with concurrent requests.

LLM decoders (`build_decoder_engine`, run by `planner.llm.runtimes.OpenVinoDecoder`): the decoder's cached step graph
(`planner.llm.runtimes.step_graph`: any number of new tokens on a past of any length, so one graph prefills with an
empty past and decodes) converted, weight-compressed for the weight-only schemes (cached), made stateful
(`make_decoder_stateful`: past_k/past_v become OpenVINO variables, so the KV cache stays in the infer request), and
compiled with the properties above: one compiled model, one copy of the weights.

NNCF, OpenVINO conversion and compile failures are `CandidateFailed` with their reason.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
from pydantic import Field, NonNegativeInt

from planner.backends.base import Backend, BackendOptions, BuildResult, Runtime, Serving
from planner.errors import CandidateFailed, ConfigError, FailReason

DEVICE = "CPU"
CONFIG_FILE = "openvino.json"  # the compile properties that were measured, beside the IR
PRECISION_HINT = {"none": "f32", "bf16": "bf16", "fp16": "f16"}  # scheme -> INFERENCE_PRECISION_HINT
CAPABILITY = {"bf16": "BF16", "f16": "FP16"}  # hint -> the CPU plugin's OPTIMIZATION_CAPABILITIES entry it needs
NNCF_SCHEMES = ("int8_static", "int8_weight_only", "int4_weight_only")
WEIGHT_OPS = ("Convolution", "GroupConvolution", "MatMul", "ConvolutionBackpropData")
COMPRESSED_TYPES = ("u8", "i8", "u4", "i4", "nf4")
INT4_TYPES = ("u4", "i4")
ATTENTION_OPS = ("Softmax", "ScaledDotProductAttention")


def _schemes() -> tuple[str, ...]:
    """The float precisions with OpenVINO alone; the NNCF ones when NNCF is installed (no import)."""
    base = ("none", "bf16", "fp16")
    return base + NNCF_SCHEMES if importlib.util.find_spec("nncf") is not None else base


class OpenVINOOptions(BackendOptions):
    performance_hint: Literal["LATENCY", "THROUGHPUT"] = Field(
        "LATENCY", description="OpenVINO's PERFORMANCE_HINT (LATENCY: OpenVINO's CPU default)")
    num_streams: NonNegativeInt = Field(0, description="NUM_STREAMS (0: OpenVINO's choice for the hint)")
    inference_num_threads: NonNegativeInt = Field(0, description="INFERENCE_NUM_THREADS (0: the target's threads)")
    dynamic_batch: bool = Field(False, description="compile with a dynamic batch axis instead of the trial's batch")


def float_precision(scheme: str, target, capabilities: list[str]) -> str:
    """The INFERENCE_PRECISION_HINT of a trial: the scheme's float precision, or for quantized schemes the
    precision the layers left in float run at (bf16 where the target lists it and the CPU has it)."""
    if scheme in PRECISION_HINT:
        return PRECISION_HINT[scheme]
    return "bf16" if "bf16" in target.precisions and CAPABILITY["bf16"] in capabilities else "f32"


def compile_properties(opts: dict[str, Any], precision: str, threads: int) -> dict[str, str]:
    """OpenVINO CPU properties (string form, as Triton's OpenVINO backend takes them too)."""
    props = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": opts["performance_hint"],
             "INFERENCE_NUM_THREADS": str(int(opts["inference_num_threads"] or threads))}
    if opts["num_streams"]:
        props["NUM_STREAMS"] = str(int(opts["num_streams"]))
    return props


class OvRuntime(Runtime):
    """A compiled OpenVINO model and one infer request: inputs bound once (`bind`), one batch per call."""

    def __init__(self, compiled, device: str = "cpu", dynamic_batch: bool | None = None):
        self.compiled = compiled
        self.device = device
        self.request = compiled.create_infer_request()
        self.n_outputs = len(compiled.outputs)
        self.input_names = [i.get_any_name() for i in compiled.inputs]
        self.dynamic_batch = dynamic_batch

    @staticmethod
    def _feeds(inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        # positional, in the model's input order; C order (np.asarray keeps a 0-d scalar 0-d, ascontiguousarray not)
        return [np.asarray(v, order="C") for v in inputs.values()]

    def bind(self, inputs: dict[str, np.ndarray]) -> Callable[[], Any]:
        import openvino as ov

        self._bound = self._feeds(inputs)  # kept alive: the tensors share their memory
        for i, a in enumerate(self._bound):
            self.request.set_input_tensor(i, ov.Tensor(a, shared_memory=True))
        return self.request.infer

    def infer(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        res = self.request.infer(self._feeds(inputs))
        return [np.array(res[i], copy=True) for i in range(self.n_outputs)]

    def serving_instances(self, n: int) -> list[Callable[[dict[str, np.ndarray]], list[np.ndarray]]]:
        """``n`` infer requests of the compiled model (compiled with NUM_STREAMS = n when served): one per
        server instance, each run by its own thread."""
        requests = [self.compiled.create_infer_request() for _ in range(n)]  # fresh: `bind` shares its tensors
        k, feeds = self.n_outputs, self._feeds

        def call(inputs, req):
            res = req.infer(feeds(inputs))
            return [np.array(res[i], copy=True) for i in range(k)]

        return [lambda inputs, r=r: call(inputs, r) for r in requests]

    def io(self) -> list[dict[str, Any]]:
        """Name, numpy dtype and shape (-1: dynamic) of each input and output of the compiled model."""
        out = []
        for mode, ports in (("input", self.compiled.inputs), ("output", self.compiled.outputs)):
            for p in ports:
                ps = p.get_partial_shape()
                out.append({"name": p.get_any_name(), "mode": mode, "dtype": _np_dtype(p.get_element_type()),
                            "shape": [d.get_length() if d.is_static else -1 for d in ps]})
        return out


def _np_dtype(t) -> str:
    try:
        return np.dtype(t.to_dtype()).name
    except Exception:  # noqa: BLE001 -- bf16 and the like have no numpy dtype
        return str(t.get_type_name())


def _ov_failure(what: str, e: Exception) -> CandidateFailed:
    msg = str(e).strip().splitlines()
    first = next((m for m in msg if m.strip() and not m.startswith(("Check ", "Exception from"))), msg[0] if msg else "")
    return CandidateFailed(FailReason.COMPILE, f"{what}: {type(e).__name__}: {first[:400]}")


def cpu_capabilities(core=None) -> list[str]:
    import openvino as ov

    core = core or ov.Core()
    return list(core.get_property(DEVICE, "OPTIMIZATION_CAPABILITIES"))


def is_transformer(model) -> bool:
    """Attention in the graph (a Softmax, or the fused ScaledDotProductAttention OpenVINO makes of
    ``torch.nn.functional.scaled_dot_product_attention``): NNCF's transformer model type then keeps
    its accuracy-sensitive parts float."""
    return any(op.get_type_name() in ATTENTION_OPS for op in model.get_ordered_ops())


def _weight_of(op):
    """(weights as float32, output-channel axis) of a Convolution/MatMul with a constant weight, else None."""
    src = op.input_value(1).get_node()
    while src.get_type_name() in ("Convert", "Reshape", "Unsqueeze", "Squeeze") and src.get_input_size():
        src = src.input_value(0).get_node()
    if src.get_type_name() != "Constant":
        return None
    w = np.asarray(src.get_data(), dtype=np.float32)
    if w.ndim < 2:
        return None
    if op.get_type_name() == "MatMul":
        return w, (w.ndim - 2 if op.get_attributes().get("transpose_b") else w.ndim - 1)
    return w, (1 if op.get_type_name() == "ConvolutionBackpropData" else 0)


def weight_sqnr(w: np.ndarray, axis: int) -> float:
    """SQNR (dB) of symmetric per-channel int8 weights, the quantization NNCF applies to weights."""
    m = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
    scale = np.abs(m).max(axis=1, keepdims=True) / 127.0
    scale[scale == 0] = 1.0
    err = m - np.clip(np.round(m / scale), -127, 127) * scale
    noise = float((err.astype(np.float64) ** 2).sum())
    return 100.0 if noise == 0 else float(10 * np.log10(max(float((m.astype(np.float64) ** 2).sum()), 1e-30) / noise))


def sensitive_layers(model) -> list[tuple[str, float]]:
    """Convolution/MatMul layers with constant weights, most sensitive to int8 first: the per-channel
    weight SQNR proxy ONNX Runtime's ``fallback_rank: weight`` uses, computed on the OpenVINO graph."""
    scores = []
    for op in model.get_ordered_ops():
        if op.get_type_name() not in WEIGHT_OPS:
            continue
        found = _weight_of(op)
        if found is not None:
            scores.append((op.get_friendly_name(), weight_sqnr(*found)))
    return sorted(scores, key=lambda kv: kv[1])


def integer_weight_layers(model) -> list[str]:
    """Convolution/MatMul layers whose weight is stored as an integer constant (decompressed or dequantized in
    the graph): what NNCF quantized, as opposed to the layers it left in float."""
    out = []
    for op in model.get_ordered_ops():
        if op.get_type_name() not in WEIGHT_OPS:
            continue
        todo, seen = [op.input_value(1).get_node()], 0
        while todo and seen < 8:  # Convert / Subtract / Multiply / Reshape / FakeQuantize chains are short
            node = todo.pop()
            seen += 1
            if node.get_type_name() == "Constant":
                if node.get_element_type().get_type_name() in COMPRESSED_TYPES:
                    out.append(op.get_friendly_name())
                    break
                continue
            if node.get_type_name() == "Parameter":
                continue
            todo.extend(node.input_value(i).get_node() for i in range(node.get_input_size()))
    return out


def compressed_weights(model) -> dict[str, int]:
    """Element type -> how many weight tensors of the model are compressed to it: u8/i8/u4/i4/nf4 constants
    feeding a Convert (the decompression), not counting zero points (their last axis has length 1)."""
    n: dict[str, int] = {}
    for op in model.get_ordered_ops():
        t = op.get_element_type().get_type_name() if op.get_type_name() == "Constant" else None
        if t in COMPRESSED_TYPES and len(op.get_output_shape(0)) >= 2 and op.get_output_shape(0)[-1] > 1:
            if any(i.get_node().get_type_name() == "Convert" for i in op.output(0).get_target_inputs()):
                n[t] = n.get(t, 0) + 1
    return n


def _calibration(source, model, n: int, seed: int = 21) -> list[dict[str, np.ndarray]]:
    """``n`` single-sample calibration items, keyed by the model's input names."""
    calib = source.calibration_inputs(n, seed=seed)
    names = [i.get_any_name() for i in model.inputs]
    arrays = list(calib.values())
    return [{name: a[i:i + 1] for name, a in zip(names, arrays)} for i in range(n)]


def _labelled_validation(source) -> list[tuple[dict[str, np.ndarray], int]]:
    """(single-sample inputs, label) pairs for NNCF's accuracy control: the model's labelled evaluation data."""
    data = source.data()
    if data is None or "labels" not in data or source.output_kind != "logits":
        raise CandidateFailed(FailReason.UNSUPPORTED,
                              "int8_static accuracy_control needs labelled data (a dataset() or --data with 'labels') "
                              "and a model with logits output, or a user evaluator (--evaluator)")
    names, labels = source.input_names, np.asarray(data["labels"]).reshape(-1)
    return [({k: np.ascontiguousarray(data[k][i:i + 1]) for k in names}, int(labels[i])) for i in range(len(labels))]


def _accuracy(compiled, items) -> tuple[float, list[float]]:
    """NNCF validation function: top-1 accuracy over ``items`` and each item's 0/1 score (for its layer ranking)."""
    hits = [float(int(np.asarray(compiled(list(inputs.values()))[0]).reshape(-1).argmax()) == label)
            for inputs, label in items]
    return (float(np.mean(hits)) if hits else 0.0), hits


def _evaluator_identity(source) -> list[str] | None:
    """What NNCF's accuracy control depends on of the user's evaluator: its name, metric and file content."""
    spec = source.spec
    if not spec.evaluator:
        return None
    from planner.cache import sha256_file
    from planner.model import parse_evaluator

    ref, kind = parse_evaluator(spec.evaluator)
    path = Path(ref.rpartition(":")[0])
    return [ref, spec.evaluator_metric or "", sha256_file(path) if kind == "file" and path.is_file() else ""]


def _evaluator_validation(source, model, batch_size: int) -> Callable:
    """NNCF validation function from the user's evaluator (``--evaluator``): its chosen metric on the model under
    test (negated for a lower-is-better metric: NNCF's drop is initial − quantized), and each item's outputs, so
    that NNCF ranks the quantizers to put back in float by how much they change the outputs."""
    from planner.model import parse_metric
    from planner.source import load_evaluator, make_predict, run_evaluator

    fn = load_evaluator(source.spec.evaluator)
    name, goal = parse_metric(source.spec.evaluator_metric)
    dim = model.inputs[0].get_partial_shape()[0]
    batch = dim.get_length() if dim.is_static else batch_size  # the IR's own batch when it fixes one
    names = [i.get_any_name() for i in model.inputs]

    def validate(compiled, items) -> tuple[float, list[list[np.ndarray]]]:
        def infer(feed):
            return [np.asarray(v) for v in compiled([feed[k] for k in names]).to_tuple()]

        outputs = [[np.asarray(v) for v in compiled([item[k] for k in names]).to_tuple()] for item in items]
        got = run_evaluator(fn, make_predict(infer, batch), batch, f"--evaluator {source.spec.evaluator} (NNCF accuracy control)")
        key = name or next(iter(got))
        if key not in got:
            raise ConfigError(f"--evaluator-metric {key!r}: the evaluator returned {sorted(got)}")
        return (got[key] if goal == "max" else -got[key]), outputs

    return validate


def nncf_model(source, cfg, model, info: dict[str, Any], target=None):
    """``model`` quantized or weight-compressed by NNCF per ``cfg.quant``; `CandidateFailed` when NNCF fails."""
    import logging

    import nncf

    from planner.transforms.quantize import resolve_options

    nncf.set_log_level(logging.WARNING)
    opts = resolve_options(cfg.quant)
    scheme = cfg.quant.scheme
    try:
        if scheme == "int8_static":
            n = int(opts["subset_size"])
            mtype = opts["model_type"]
            transformer = is_transformer(model) if mtype == "auto" else mtype == "transformer"
            k = int(opts.get("fallback_layers") or 0)
            ignored = None
            if k > 0:
                ranked = sensitive_layers(model)[:k]
                info["fallback_nodes"] = [name for name, _ in ranked]
                info["fallback_sqnr_db"] = [round(v, 2) for _, v in ranked]
                ignored = nncf.IgnoredScope(names=info["fallback_nodes"]) if ranked else None
            info.update(preset=opts["preset"], model_type="transformer" if transformer else "default",
                        fast_bias_correction=opts["fast_bias_correction"], calib_samples=n)
            common = dict(
                preset=nncf.QuantizationPreset.MIXED if opts["preset"] == "mixed" else nncf.QuantizationPreset.PERFORMANCE,
                model_type=nncf.ModelType.TRANSFORMER if transformer else None,
                fast_bias_correction=bool(opts["fast_bias_correction"]), subset_size=n, ignored_scope=ignored)
            calibration = nncf.Dataset(_calibration(source, model, n))
            if opts.get("accuracy_control"):
                bound = target.constraints.max_quality_loss if target is not None else 0.01
                relative = target is not None and target.constraints.quality_loss_mode == "relative"
                if source.spec.evaluator:  # the study's own quality measure: the user's task metric
                    items = _calibration(source, model, n)
                    validate = _evaluator_validation(source, model, cfg.batch_size)
                    info.update(accuracy_control_data="evaluator", accuracy_control_metric=source.spec.evaluator_metric
                                or "first returned")
                else:
                    items, validate = _labelled_validation(source), _accuracy
                    info["accuracy_control_data"] = "evaluation"
                info.update(accuracy_control=True, accuracy_control_max_drop=bound, accuracy_control_samples=len(items))
                out = nncf.quantize_with_accuracy_control(
                    model, calibration, nncf.Dataset(items), validation_fn=validate, max_drop=bound,
                    drop_type=nncf.DropType.RELATIVE if relative else nncf.DropType.ABSOLUTE, **common)
            else:
                out = nncf.quantize(model, calibration, **common)
        elif scheme == "int8_weight_only":
            out = nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_ASYM)
        else:  # int4_weight_only
            gs = int(opts["group_size"])
            sym = bool(opts.get("symmetric", True))
            info.update(group_size=gs, int4_mode="INT4_SYM" if sym else "INT4_ASYM")
            mode = nncf.CompressWeightsMode.INT4_SYM if sym else nncf.CompressWeightsMode.INT4_ASYM
            out = nncf.compress_weights(model, mode=mode, group_size=gs)
    except (CandidateFailed, ConfigError):
        raise
    except Exception as e:  # noqa: BLE001 -- NNCF failed on this graph: a failed trial with its reason
        raise _ov_failure(f"NNCF {scheme}", e) from e
    if scheme == "int8_static":
        done = sum(op.get_type_name() == "FakeQuantize" for op in out.get_ordered_ops())
        if not done and info.get("accuracy_control"):
            raise CandidateFailed(FailReason.QUALITY, f"int8_static: NNCF accuracy control could not keep the drop "
                                  f"({info['accuracy_control_data']}) within {info['accuracy_control_max_drop']} with "
                                  "any layer in int8")
        if not done:
            raise CandidateFailed(FailReason.UNSUPPORTED, "int8_static: NNCF inserted no quantizer into this model")
        info["quantizers"] = done  # activation quantizers (weights are stored as int8 constants)
        info["layers_int8"] = len(integer_weight_layers(out))
        return out
    by_type = compressed_weights(out)
    done = sum(by_type.get(t, 0) for t in INT4_TYPES) if scheme == "int4_weight_only" else sum(by_type.values())
    if not done:
        what = " to int4 (it kept every layer it compressed at int8)" if by_type else ""
        raise CandidateFailed(FailReason.UNSUPPORTED, f"{scheme}: NNCF compressed no weights of this model{what}; "
                              "nncf.compress_weights covers MatMul and embedding layers")
    info["layers_quantized"] = done
    info["layers_int8"] = sum(by_type.get(t, 0) for t in ("u8", "i8"))
    return out


def _source_model(source, cfg, info: dict[str, Any], workdir: Path, target=None):
    """The OpenVINO model of the trial before reshaping: converted from the cached ONNX export and, for the
    NNCF schemes, quantized (through the artifact cache: calibration takes a while)."""
    import openvino as ov

    onnx = source.onnx_path(cfg)
    if cfg.quant.scheme not in NNCF_SCHEMES:
        try:
            return ov.convert_model(str(onnx))
        except Exception as e:  # noqa: BLE001
            raise _ov_failure("OpenVINO could not convert the ONNX model", e) from e
    from importlib.metadata import version

    from planner.cache import ArtifactCache, cache_key, sha256_file
    from planner.transforms.quantize import resolve_options

    opts = resolve_options(cfg.quant)
    calibrated = cfg.quant.scheme == "int8_static"
    cache = ArtifactCache(Path(source.cache_dir) / "artifacts")
    control = calibrated and bool(opts.get("accuracy_control")) and target is not None
    key = cache_key("openvino-nncf", sha256_file(onnx), cfg.quant.scheme, sorted(opts.items()),
                    source.spec.data if calibrated else None, source.calibration_source if calibrated else None,
                    (target.constraints.max_quality_loss, target.constraints.quality_loss_mode) if control else None,
                    _evaluator_identity(source) if control else None,
                    version("openvino"), version("nncf"))
    if calibrated:
        info["calibration_data"] = source.calibration_source
        info["calibration_held_out"] = float(source.calibration_source == "held-out")
    hit = cache.get(key)
    core = ov.Core()
    if hit is not None:
        facts = hit / "info.json"
        if facts.is_file():
            info.update(json.loads(facts.read_text()))
        info["quantized_cached"] = 1
        return core.read_model(str(hit / "model.xml"))
    try:
        model = ov.convert_model(str(onnx))
    except Exception as e:  # noqa: BLE001
        raise _ov_failure("OpenVINO could not convert the ONNX model", e) from e
    t0 = time.perf_counter()
    qinfo: dict[str, Any] = {}
    model = nncf_model(source, cfg, model, qinfo, target)
    qinfo["nncf_seconds"] = round(time.perf_counter() - t0, 3)
    info.update(qinfo)
    info["quantized_cached"] = 0
    scratch = workdir / ".nncf"
    scratch.mkdir(exist_ok=True)
    ov.save_model(model, str(scratch / "model.xml"), compress_to_fp16=False)
    (scratch / "info.json").write_text(json.dumps(qinfo, default=str))
    cache.put(key, {n: scratch / n for n in ("model.xml", "model.bin", "info.json")})
    shutil.rmtree(scratch, ignore_errors=True)
    return model


def _reshape(model, batch: int | None, axes: dict[str, int | None] | None = None) -> None:
    """Fix the batch axis of every input to ``batch`` (None: make it dynamic).  ``axes``: each input's batch axis
    by name (`planner.source.ModelSource.batch_axes`; default 0); an input without one (None: a scalar, a
    configuration tensor) keeps the shape the model gives it."""
    import openvino as ov

    axes = axes or {}
    shapes = {}
    for inp in model.inputs:
        name = inp.get_any_name()
        axis = axes.get(name, 0)
        if axis is None:
            continue
        ps = inp.get_partial_shape()
        if ps.rank.is_dynamic or len(ps) <= axis:
            raise CandidateFailed(FailReason.UNSUPPORTED, f"input {name!r} has no batch axis {axis} to set")
        dims = [ps[i] for i in range(len(ps))]
        dims[axis] = ov.Dimension(batch) if batch is not None else ov.Dimension()
        shapes[name] = ov.PartialShape(dims)
    try:
        model.reshape(shapes)
    except Exception as e:  # noqa: BLE001
        raise _ov_failure(f"OpenVINO could not set the batch axis to {batch if batch else 'dynamic'}", e) from e


def _record_compiled(compiled, info: dict[str, Any]) -> None:
    """What OpenVINO compiled (precision, streams, threads, hint) and whether it came from its model cache."""
    for key in ("INFERENCE_PRECISION_HINT", "NUM_STREAMS", "INFERENCE_NUM_THREADS", "PERFORMANCE_HINT"):
        try:
            info[f"compiled_{key.lower()}"] = str(compiled.get_property(key))
        except Exception:  # noqa: BLE001 -- a property this plugin does not report
            pass
    try:
        info["openvino_loaded_from_cache"] = float(bool(compiled.get_property("LOADED_FROM_CACHE")))
    except Exception:  # noqa: BLE001
        pass


def _compile(core, model, props: dict[str, str], cache_dir: Path | None):
    full = dict(props)
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        full["CACHE_DIR"] = str(cache_dir)
    try:
        return core.compile_model(model, DEVICE, full)
    except Exception as e:  # noqa: BLE001
        raise _ov_failure("OpenVINO CPU compile failed", e) from e


OV_TRITON_PARAMETERS = ("PERFORMANCE_HINT", "NUM_STREAMS", "INFERENCE_NUM_THREADS")


def triton_options(config_json: Path, notes: list[str]) -> str:
    """The measured OpenVINO compile properties as parameters of Triton's OpenVINO backend (bf16 is its HINT_BF16;
    it takes no other precision, and rejects parameters it does not know)."""
    meta = json.loads(config_json.read_text()) if config_json.is_file() else {}
    props = dict(meta.get("properties") or {})
    if meta.get("per_instance"):  # served as N instances: Triton compiles one model per instance
        props.update(meta["per_instance"])
        notes.append("OpenVINO was measured as N streams of one compiled model; Triton compiles one model per "
                     "instance, so each gets one stream and the threads of one measured instance")
    text = ""
    for k in OV_TRITON_PARAMETERS:
        if props.get(k) is not None:
            text += f'parameters {{ key: "{k}" value: {{ string_value: "{props[k]}" }} }}\n'
    precision = props.get("INFERENCE_PRECISION_HINT")
    if precision == "bf16":
        text += 'parameters { key: "HINT_BF16" value: { string_value: "YES" } }\n'
    elif precision:
        notes.append(f"measured with OpenVINO inference precision {precision}; Triton's OpenVINO backend can only ask "
                     "for bf16 (HINT_BF16), so on a CPU with AMX or AVX-512 BF16 it runs OpenVINO's default there (bf16)")
    return text


# ------------------------------------------------------------------------------------------------ decoders

# the step graph's cache inputs -> the outputs that carry them to the next step (`planner.llm.runtimes.export_step_onnx`)
DECODER_STATE = {"past_k": "present_k", "past_v": "present_v"}
DECODER_SCHEMES = ("none", "bf16", "int8_weight_only", "int4_weight_only")


def _decoder_schemes() -> tuple[str, ...]:
    """What `planner.llm.runtimes.OpenVinoDecoder` implements, of the backend's schemes (the weight-only ones need NNCF)."""
    return tuple(s for s in DECODER_SCHEMES if s in _schemes())


def inference_precision(scheme: str, target, core) -> tuple[str, list[str]]:
    """(INFERENCE_PRECISION_HINT of the trial, the CPU plugin's capabilities); `CandidateFailed(UNSUPPORTED)` when
    the CPU lacks the precision (OpenVINO would quietly run f32 under the bf16 / fp16 label)."""
    caps = cpu_capabilities(core)
    precision = float_precision(scheme, target, caps)
    need = CAPABILITY.get(precision)
    if need and need not in caps:
        raise CandidateFailed(FailReason.UNSUPPORTED,
                              f"this CPU cannot run {precision}: OpenVINO's CPU plugin lists {', '.join(caps)} "
                              f"(no {need}); remove {scheme} from target '{target.name}' precisions")
    return precision, caps


def _convert(path: Path):
    import openvino as ov

    try:
        return ov.convert_model(str(path))
    except Exception as e:  # noqa: BLE001
        raise _ov_failure(f"OpenVINO could not convert {Path(path).name}", e) from e


def decoder_model(source, cfg, step_onnx: Path, info: dict[str, Any], workdir: Path):
    """The OpenVINO model of a decoder's step graph (`planner.llm.runtimes.step_graph`), converted from its cached ONNX
    export; for the weight-only schemes compressed by ``nncf.compress_weights`` (`nncf_model`), through the artifact
    cache."""
    import openvino as ov

    if cfg.quant.scheme not in NNCF_SCHEMES:
        return _convert(step_onnx)
    from importlib.metadata import version

    from planner.cache import ArtifactCache, cache_key, sha256_file
    from planner.transforms.quantize import resolve_options

    cache = ArtifactCache(Path(source.cache_dir) / "artifacts")
    key = cache_key("openvino-nncf-decoder", sha256_file(step_onnx), cfg.quant.scheme,
                    sorted(resolve_options(cfg.quant).items()), version("openvino"), version("nncf"))
    hit = cache.get(key)
    if hit is not None:
        if (hit / "info.json").is_file():
            info.update(json.loads((hit / "info.json").read_text()))
        info["quantized_cached"] = 1
        return ov.Core().read_model(str(hit / "model.xml"))
    t0 = time.perf_counter()
    qinfo: dict[str, Any] = {}
    model = nncf_model(source, cfg, _convert(step_onnx), qinfo)
    qinfo["nncf_seconds"] = round(time.perf_counter() - t0, 3)
    info.update(qinfo)
    info["quantized_cached"] = 0
    scratch = Path(workdir) / ".nncf"
    scratch.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, str(scratch / "model.xml"), compress_to_fp16=False)
    (scratch / "info.json").write_text(json.dumps(qinfo, default=str))
    cache.put(key, {n: scratch / n for n in ("model.xml", "model.bin", "info.json")})
    shutil.rmtree(scratch, ignore_errors=True)
    return model


def cache_dims(model) -> tuple[int, int, int]:
    """(layers, heads, head_dim) of the step graph's ``past_k [L, B, H, P, D]`` (static in planner's export)."""
    try:
        ps = model.input("past_k").get_partial_shape()
        return ps[0].get_length(), ps[2].get_length(), ps[4].get_length()
    except Exception as e:  # noqa: BLE001 -- no such input, or a dynamic layer/head axis
        raise CandidateFailed(FailReason.UNSUPPORTED, f"the decoder graph's past_k is not [L, B, H, P, D] with static "
                              f"L, H, D: {type(e).__name__}: {str(e)[:200]}") from None


def make_decoder_stateful(model) -> None:
    """Turn the step graph's past key/value inputs into OpenVINO state (ReadValue/Assign pairs, in place): a step then
    takes the token ids alone, and the stacked caches ``[L, B, H, P, D]`` stay in the infer request, grown by the
    step's tokens."""
    from openvino._offline_transformations import apply_make_stateful_transformation

    names = {p.get_any_name() for p in model.inputs} | {n for p in model.outputs for n in p.get_names()}
    missing = sorted((set(DECODER_STATE) | set(DECODER_STATE.values())) - names)
    if missing:
        raise CandidateFailed(FailReason.UNSUPPORTED, f"the decoder graph lacks {missing}: not planner's decoder export")
    try:
        apply_make_stateful_transformation(model, dict(DECODER_STATE))
    except Exception as e:  # noqa: BLE001
        raise _ov_failure("OpenVINO could not make the decoder graph stateful", e) from e


def build_decoder_engine(source, cfg, target, workdir: Path, step_onnx: Path,
                         info: dict[str, Any]) -> tuple[Any, list[Path], tuple[int, int, int]]:
    """(the compiled stateful decoder model, the files written, the cache's (layers, heads, head_dim)) of a decoder trial: the step graph converted,
    weight-compressed for the weight-only schemes, made stateful, saved as ``decoder.xml``/``.bin`` and compiled.

    Precision and options as `OpenVINO.compile` (``dynamic_batch`` does not apply: the graph keeps dynamic batch,
    token and cache axes); compiled models cached in ``<planner cache>/openvino``."""
    import openvino as ov

    workdir = Path(workdir)
    opts = OpenVINO.resolve_options(cfg.options())
    core = ov.Core()
    precision, caps = inference_precision(cfg.quant.scheme, target, core)
    info.update(inference_precision=precision, cpu_capabilities=",".join(caps))
    model = decoder_model(source, cfg, step_onnx, info, workdir)
    dims = cache_dims(model)
    make_decoder_stateful(model)
    xml = workdir / "decoder.xml"
    ov.save_model(model, str(xml), compress_to_fp16=False)
    props = compile_properties(opts, precision, target.thread_count())
    compiled = _compile(core, model, props, Path(source.cache_dir) / "openvino")
    del model
    (workdir / CONFIG_FILE).write_text(json.dumps({"properties": props, "stateful": True}, indent=2))
    _record_compiled(compiled, info)
    return compiled, [xml, workdir / "decoder.bin", workdir / CONFIG_FILE], dims


class OpenVINO(Backend):
    name = "openvino"
    modules = ("openvino",)
    preload = False  # importing openvino starts a Python thread (planner.measure.forkserver)
    install_hint = "pip install 'planner[openvino]' (openvino and nncf)"
    pip_extra = "openvino"
    engine_files = ("model.xml", "model.bin", CONFIG_FILE)
    triton = 'backend: "openvino"'
    devices = ("cpu",)
    input_format = "onnx"
    quant_schemes = _schemes()
    # planner.llm.runtimes.OpenVinoDecoder: one stateful step graph (the KV cache in the infer request)
    decoder_schemes = _decoder_schemes()
    # the int8 options NNCF acts on (ONNX Runtime's own int8_static options are not sampled for openvino)
    scheme_options = {"int8_static": ("preset", "model_type", "fast_bias_correction", "subset_size", "fallback_layers",
                                      "accuracy_control"),
                      "int8_weight_only": (), "int4_weight_only": ("group_size", "symmetric")}
    Options = OpenVINOOptions
    serving = Serving(instance="a CPU stream (NUM_STREAMS) with its own infer request",
                      threads="INFERENCE_NUM_THREADS = instances x threads per instance")
    variable_length = True  # the IR keeps the export's dynamic length axis (`_reshape` fixes the batch axis only)


    def compile(self, source, cfg, target, workdir: Path) -> BuildResult:
        import openvino as ov

        t0 = time.perf_counter()
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        opts = OpenVINO.resolve_options(cfg.options())
        core = ov.Core()
        precision, caps = inference_precision(cfg.quant.scheme, target, core)
        info: dict[str, Any] = {"inference_precision": precision, "cpu_capabilities": ",".join(caps)}
        model = _source_model(source, cfg, info, workdir, target)
        sv = cfg.serving
        if sv is not None and sv.batching:  # the server forms batches of any size up to its max batch
            opts["dynamic_batch"] = True
        _reshape(model, None if opts["dynamic_batch"] else cfg.batch_size, source.batch_axes)
        xml = workdir / "model.xml"
        ov.save_model(model, str(xml), compress_to_fp16=False)
        props = compile_properties(opts, precision, target.thread_count())
        if sv is not None:  # one stream per served instance, its threads each (planner.measure.serving)
            props["NUM_STREAMS"] = str(sv.instances)
            props["INFERENCE_NUM_THREADS"] = str(sv.instances * sv.threads_per_instance(target.thread_count()))
        compiled = _compile(core, model, props, Path(source.cache_dir) / "openvino")
        meta: dict[str, Any] = {"properties": props, "dynamic_batch": opts["dynamic_batch"], "batch_size": cfg.batch_size}
        if sv is not None:  # a Triton instance compiles its own model: one stream of the measured threads each
            meta["per_instance"] = {"NUM_STREAMS": "1", "INFERENCE_NUM_THREADS": str(sv.threads_per_instance(target.thread_count()))}
        (workdir / CONFIG_FILE).write_text(json.dumps(meta, indent=2))
        _record_compiled(compiled, info)
        rt = OvRuntime(compiled, "cpu", opts["dynamic_batch"])
        artifacts = [xml, workdir / "model.bin", workdir / CONFIG_FILE]
        return BuildResult(rt, artifacts, time.perf_counter() - t0, info)

    @classmethod
    def load_artifact(cls, engine_dir: Path, batch: int = 1, device: str = "cpu") -> "OvRuntime":
        """Load ``model.xml`` with OpenVINO alone, compiled with the properties recorded beside it."""
        return load_artifact(engine_dir, batch, device)

    @classmethod
    def describe_engine(cls, rt) -> dict[str, Any]:
        """The compiled IR's tensors (a dynamic batch axis is -1) for a Triton config."""
        return {"io": rt.io()}

    @classmethod
    def triton_parameters(cls, engine_dir: Path, gpu: bool, notes: list[str]) -> str:
        return triton_options(Path(engine_dir) / CONFIG_FILE, notes)


def load_artifact(engine_dir: Path, batch: int = 1, device: str = "cpu") -> OvRuntime:
    """``model.xml``/``model.bin`` compiled for the CPU with the measured properties (``openvino.json``)."""
    import openvino as ov

    d = Path(engine_dir)
    meta = json.loads((d / CONFIG_FILE).read_text()) if (d / CONFIG_FILE).is_file() else {}
    core = ov.Core()
    model = core.read_model(str(d / "model.xml"))
    compiled = core.compile_model(model, DEVICE, dict(meta.get("properties") or {}))
    return OvRuntime(compiled, "cpu", meta.get("dynamic_batch"))
