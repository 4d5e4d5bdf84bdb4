"""ONNX Runtime: the exported ONNX graph (optionally quantized) in an InferenceSession."""

from __future__ import annotations

import shutil
import time
import json
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
from pydantic import Field, NonNegativeInt

from planner.backends.base import DECISIVE, Backend, BackendOptions, BuildResult, Runtime, Serving
from planner.transforms.quantize import ORT_INT8_STATIC_OPTIONS

LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}


class OrtOptions(BackendOptions):
    graph_optimization_level: Literal["all", "extended", "basic", "disable"] = Field(
        "all", description="ONNX Runtime's graph optimisation level")
    execution_mode: Literal["sequential", "parallel"] = Field("sequential", description="operator scheduling")
    intra_op_threads: NonNegativeInt = Field(0, description="threads inside an operator (0: the target's threads)")
    inter_op_threads: NonNegativeInt = Field(0, description="threads across operators in parallel mode (0: 1)")
    execution_provider: Literal["cpu", "cuda", "tensorrt"] | None = Field(
        None, description="None: CUDA on a GPU target, else CPU", json_schema_extra=DECISIVE)


class OrtRuntime(Runtime):
    """An InferenceSession.  On CUDA, `bind` uses I/O binding: the inputs are copied to the GPU once and
    the outputs stay there, so the timed call is the device work alone (`bind_host` is the call with
    numpy in and out, the copies both ways included).  ``iobinding`` forces I/O binding on the CPU too
    (the same code path, testable without a GPU)."""

    def __init__(self, session, device: str = "cpu", iobinding: bool | None = None):
        self.session = session
        self.device = device
        self.iobinding = device != "cpu" if iobinding is None else iobinding
        self.output_names = [o.name for o in session.get_outputs()]
        self.input_names = [i.name for i in session.get_inputs()]
        # a symbolic (or unknown) first axis on every input: the graph takes any batch
        self.dynamic_batch = all(i.shape and not isinstance(i.shape[0], int) for i in session.get_inputs())

    def _feeds(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {name: np.ascontiguousarray(v) for name, v in zip(self.input_names, inputs.values())}

    def bind(self, inputs: dict[str, np.ndarray]) -> Callable[[], Any]:
        feeds = self._feeds(inputs)
        sess, names = self.session, self.output_names
        if not self.iobinding:
            return lambda: sess.run(names, feeds)
        import onnxruntime as ort

        where = "cuda" if self.device.startswith("cuda") else "cpu"
        io = sess.io_binding()
        self._bound = [ort.OrtValue.ortvalue_from_numpy(v, where, 0) for v in feeds.values()]  # kept alive
        for name, v in zip(feeds, self._bound):
            io.bind_ortvalue_input(name, v)
        for name in names:
            io.bind_output(name, where, 0)
        self._io = io
        return lambda: sess.run_with_iobinding(io)

    def bound_outputs(self) -> list[np.ndarray]:
        """The outputs of the last bound call, copied to the host (I/O binding only)."""
        return [np.asarray(o) for o in self._io.copy_outputs_to_cpu()]

    def bind_host(self, inputs: dict[str, np.ndarray]) -> Callable[[], Any] | None:
        if self.device == "cpu":
            return None
        feeds = self._feeds(inputs)
        sess, names = self.session, self.output_names
        return lambda: sess.run(names, feeds)

    def infer(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        return [np.asarray(o) for o in self.session.run(self.output_names, self._feeds(inputs))]

    new_session: Callable[[], Any] | None = None  # another session with the measured options (serving instances)

    def serving_instances(self, n: int) -> list[Callable[[dict[str, np.ndarray]], list[np.ndarray]]]:
        """``n`` sessions, this one and n-1 more with the same options: one per server instance (as Triton's
        onnxruntime backend makes one per instance)."""
        if n > 1 and self.new_session is None:
            return super().serving_instances(n)
        sessions = [self.session] + [self.new_session() for _ in range(n - 1)]  # type: ignore[misc]
        names = self.output_names
        return [lambda inputs, s=s: [np.asarray(o) for o in s.run(names, self._feeds(inputs))] for s in sessions]


def session_options(opts: dict, target) -> dict[str, Any]:
    """Every session option of a trial (``opts``: some or all of `OrtOptions`), with what depends on the target
    filled in: what session.json records and `make_session` builds."""
    o = OnnxRuntime.resolve_options(opts)
    o["intra_op_threads"] = int(o["intra_op_threads"] or target.thread_count())
    o["inter_op_threads"] = int(o["inter_op_threads"] or 1)
    o["execution_provider"] = o["execution_provider"] or ("cuda" if target.is_gpu else "cpu")
    return o


def make_session(path: Path, opts: dict, target, optimized_path: Path | None = None):
    import onnxruntime as ort

    opts = session_options(opts, target)
    so = ort.SessionOptions()
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, LEVELS[opts["graph_optimization_level"]])
    so.execution_mode = (
        ort.ExecutionMode.ORT_PARALLEL if opts["execution_mode"] == "parallel" else ort.ExecutionMode.ORT_SEQUENTIAL
    )
    so.intra_op_num_threads = opts["intra_op_threads"]
    so.inter_op_num_threads = opts["inter_op_threads"]
    so.log_severity_level = 3
    if optimized_path is not None:
        so.optimized_model_filepath = str(optimized_path)
    ep = opts["execution_provider"]
    providers = [PROVIDERS[ep]] + (["CPUExecutionProvider"] if ep != "cpu" else [])
    available = ort.get_available_providers()
    if PROVIDERS[ep] not in available:
        from planner.errors import CandidateFailed, FailReason

        raise CandidateFailed(FailReason.UNSUPPORTED, f"ONNX Runtime has no {PROVIDERS[ep]} here (has {available}); install onnxruntime-gpu")
    return ort.InferenceSession(str(path), sess_options=so, providers=providers)


ORT_TRITON_LEVEL = {"disable": 2, "basic": -1, "extended": 1}  # Triton's graph level codes; "all" is its default


def triton_options(session_json: Path, gpu: bool) -> str:
    """The measured ONNX Runtime session options in the Triton onnxruntime backend's terms."""
    opts = json.loads(session_json.read_text()) if session_json.is_file() else {}
    opt = []
    level = ORT_TRITON_LEVEL.get(opts.get("graph_optimization_level", "all"))
    if level is not None:
        opt.append(f"graph: {{ level: {level} }}")
    if gpu:
        opt.append('execution_accelerators { gpu_execution_accelerator: [ { name: "cuda" } ] }')
    text = f"optimization {{ {' '.join(opt)} }}\n" if opt else ""
    params = {"intra_op_thread_count": opts.get("intra_op_threads"), "inter_op_thread_count": opts.get("inter_op_threads"),
              "execution_mode": {"sequential": 0, "parallel": 1}.get(opts.get("execution_mode", "sequential"))}
    for k, v in params.items():
        if v is not None:
            text += f'parameters {{ key: "{k}" value: {{ string_value: "{int(v)}" }} }}\n'
    return text


class OnnxRuntime(Backend):
    name = "onnxruntime"
    modules = ("onnxruntime",)
    preload = False  # importing onnxruntime starts a native thread (planner.measure.forkserver)
    install_hint = "pip install onnxruntime (or onnxruntime-gpu for CUDA)"
    engine_files = ("model.onnx", "session.json")  # the graph and the session options that were measured
    triton = 'platform: "onnxruntime_onnx"'
    decoder_schemes = ("none", "int8_dynamic", "int4_weight_only")  # int4: MatMulNBits on both decoder graphs
    devices = ("cpu", "cuda")
    input_format = "onnx"
    quant_schemes = ("none", "int8_dynamic", "int8_static", "int4_weight_only", "fp16")
    # int8_static: not NNCF's options (openvino); int4: MatMulNBits, symmetric
    scheme_options = {"int8_static": ORT_INT8_STATIC_OPTIONS, "int4_weight_only": ("group_size",)}
    Options = OrtOptions
    serving = Serving(instance="an InferenceSession of its own", threads="intra_op_num_threads of each session")
    variable_length = True  # its session takes the export's dynamic length axis as it is

    @classmethod
    def load_artifact(cls, engine_dir: Path, batch: int, device: str) -> "OrtRuntime":
        return load_artifact(engine_dir)

    @classmethod
    def triton_parameters(cls, engine_dir: Path, gpu: bool, notes: list[str]) -> str:
        return triton_options(Path(engine_dir) / "session.json", gpu)

    def compile(self, source, cfg, target, workdir: Path) -> BuildResult:
        t0 = time.perf_counter()
        src = source.onnx_path(cfg)
        model = workdir / "model.onnx"
        info: dict[str, Any] = {}
        if cfg.quant.active:
            info.update(quantized_onnx(source, cfg, src, model))
        else:
            shutil.copyfile(src, model)
        opts = cfg.options()
        if cfg.serving is not None:  # threads per served instance (planner.measure.serving)
            opts["intra_op_threads"] = cfg.serving.threads_per_instance(target.thread_count())
        opts = session_options(opts, target)
        sess = make_session(model, opts, target)
        info["providers"] = sess.get_providers()
        device = "cuda" if target.is_gpu else "cpu"
        (workdir / "session.json").write_text(session_json(opts, target))
        rt = OrtRuntime(sess, device)
        rt.new_session = lambda: make_session(model, opts, target)
        return BuildResult(rt, [model, workdir / "session.json"], time.perf_counter() - t0, info)


def quantized_onnx(source, cfg, src: Path, dst: Path) -> dict[str, Any]:
    """Quantize ``src`` per ``cfg.quant`` into ``dst``, through the artifact cache (calibration can take minutes)."""
    from importlib.metadata import version

    from planner.cache import ArtifactCache, cache_key, sha256_file
    from planner.transforms.quantize import quantize_onnx

    cache = ArtifactCache(Path(source.cache_dir) / "artifacts")
    calib_n = 32 if cfg.quant.scheme == "int8_static" else 0
    key = cache_key("onnx-quant", sha256_file(src), cfg.quant.scheme, cfg.quant.options, calib_n,
                    source.spec.data, source.calibration_source if calib_n else None, version("onnxruntime"))
    hit = cache.get(key)
    if hit is not None:
        shutil.copyfile(hit / "model.onnx", dst)
        return {"quantized_cached": 1, **_calib_info(source, calib_n)}
    calib = source.calibration_inputs(calib_n, seed=21) if calib_n else None
    info = dict(quantize_onnx(src, dst, cfg.quant, calib) or {})
    info.update(_calib_info(source, calib_n))
    if not Path(str(dst) + ".data").exists():  # single-file models only
        cache.put(key, {"model.onnx": dst})
    info["quantized_cached"] = 0
    return info


def _calib_info(source, calib_n: int) -> dict:
    if not calib_n:
        return {}
    where = source.calibration_source
    return {"calibration_data": where, "calibration_held_out": float(where == "held-out")}


def session_json(opts: dict, target) -> str:
    import json

    return json.dumps(session_options(opts, target), indent=2)


def load_artifact(directory: Path, target=None) -> OrtRuntime:
    """Load ``model.onnx`` with the session options recorded beside it (used by export/verify)."""
    import json

    from types import SimpleNamespace

    d = Path(directory)
    opts = json.loads((d / "session.json").read_text()) if (d / "session.json").is_file() else {}
    tgt = target or SimpleNamespace(is_gpu=opts.get("execution_provider") == "cuda", thread_count=lambda: opts.get("intra_op_threads") or 1)
    return OrtRuntime(make_session(d / "model.onnx", opts, tgt))
