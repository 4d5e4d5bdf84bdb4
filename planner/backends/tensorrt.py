"""TensorRT through its Python API and ONNX parser (NVIDIA GPUs only).

TensorRT wheels are not reachable on CPU build machines, so this backend is
behind the availability check: `planner backends` says how to install it, and
sampling never offers it where `import tensorrt` fails or the target is a CPU.

Every build decision is data: `plan_build(cfg, target, trt_version, input_specs,
batch_sizes)` is a pure function (no tensorrt import) returning a frozen
`TrtBuildPlan`; `TensorRT.compile` only applies it with the real API.  So the
decisions are tested on any machine (tests/backends/test_tensorrt_plan.py) and
only the API calls need a GPU (tests/gpu/).

Precision.  TensorRT >= 10.12 networks are built strongly typed (weak typing is
deprecated there, and TensorRT 11 removed it with the precision builder flags):
precision comes from the ONNX graph itself -- casts or Q/DQ nodes written by the
planner's ONNX transforms (`planner.transforms.quantize.quantize_onnx`) -- and no
precision flag is set.  Older 10.x releases are weakly typed: the builder flags
FP16 / BF16 / INT8 / FP8 allow the lower precision (int8 and fp8 still need the
Q/DQ graph: implicit calibration is deprecated since 10.1).  A scheme is
rejected (`CandidateFailed(UNSUPPORTED)`) when the GPU cannot run it (bf16 below
sm_80, fp8 below sm_89) or when a strongly typed build would need a graph
transform the planner does not have yet (bf16 casts): a trial is never built at
fp32 while labelled bf16.  fp8 comes from the ONNX transform's float8 E4M3 Q/DQ
(calibrated; zero points 0).

Timing cache.  One file per GPU model and TensorRT version in the planner cache
(``<cache>/tensorrt/timing-<gpu>-trt<version>.cache``), loaded before every build
and merged back after it, so later trials and studies skip tactic timing already
done.  A corrupt file is set aside (``.corrupt``) and the build starts from an
empty cache (`load_timing_cache`); the file helpers take the TensorRT calls as
arguments and are tested without TensorRT.
"""

from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence, TypeVar

import numpy as np
from pydantic import Field

from planner.backends.base import DECISIVE, Backend, BackendOptions, BuildResult, Runtime
from planner.errors import CandidateFailed, ConfigError, FailReason
from planner.schemes import PRECISIONS, precision_of, schemes_for_format

T = TypeVar("T")

MIN_VERSION = (10, 0)  # execute_async_v3, named I/O tensors, INT64 I/O, builder optimization levels
STRONGLY_TYPED_FROM = (10, 12)  # weak typing deprecated in 10.12, removed in 11.0
DEFAULT_OPTIMIZATION_LEVEL = 3  # TensorRT's own default
DEFAULT_WORKSPACE_MB = 4096
# builder flag a weakly typed build needs for each scheme (None: none needed)
WEAK_FLAGS = {"none": None, "fp16": "FP16", "bf16": "BF16", "int8_static": "INT8", "fp8": "FP8"}
SPARSE_FROM = (8, 0)  # 2:4 sparse tensor cores: Ampere and later


class TensorRTOptions(BackendOptions):
    optimization_level: int = Field(DEFAULT_OPTIMIZATION_LEVEL, ge=0, le=5,
                                    description="builder optimization level (TensorRT's default: 3)",
                                    json_schema_extra=DECISIVE)
    workspace_mb: int | None = Field(None, ge=1, description=f"builder workspace in MiB (None: {DEFAULT_WORKSPACE_MB}, "
                                                               "capped at the target GPU's memory)")
    sparse_weights: bool = Field(False, description="2:4 sparse tensor cores for weights that have the pattern",
                                 json_schema_extra=DECISIVE)
    cuda_graph: bool = Field(False, description="replay each batch as one CUDA graph", json_schema_extra=DECISIVE)


# --------------------------------------------------------------------------- the plan (pure)


def parse_version(v: str) -> tuple[int, int]:
    """``"10.12.0.36"`` -> ``(10, 12)``; `CandidateFailed(UNSUPPORTED)` when it is not a version."""
    m = re.match(r"^\s*(\d+)(?:\.(\d+))?", str(v))
    if not m:
        raise CandidateFailed(FailReason.UNSUPPORTED, f"cannot read the TensorRT version {v!r}")
    return int(m.group(1)), int(m.group(2) or 0)


def is_strongly_typed(trt_version: str) -> bool:
    return parse_version(trt_version) >= STRONGLY_TYPED_FROM


def _cc(target) -> tuple[int, int] | None:
    gpu = getattr(target.device, "gpu", None)
    if gpu is None:
        return None
    major, _, minor = str(gpu.compute_capability).partition(".")
    return int(major), int(minor or 0)


def _ort_int8_options() -> tuple[str, ...]:
    from planner.transforms.quantize import ORT_INT8_STATIC_OPTIONS

    return ORT_INT8_STATIC_OPTIONS


def _onnx_schemes() -> tuple[str, ...]:
    return schemes_for_format("onnx")


@dataclass(frozen=True)
class PrecisionPlan:
    strongly_typed: bool
    onnx_scheme: str  # quantize_onnx scheme applied to the exported graph before parsing ("none": as exported)
    flags: tuple[str, ...]  # BuilderFlag names the precision needs (weakly typed builds only)


def plan_precision(scheme: str, trt_version: str, compute_capability: tuple[int, int] | None,
                   quant_options: dict[str, Any] | None = None,
                   onnx_schemes: Iterable[str] | None = None) -> PrecisionPlan:
    """How TensorRT ``trt_version`` gets quantization ``scheme``: a graph transform and/or builder flags.

    `CandidateFailed(UNSUPPORTED)` when this TensorRT, this GPU or the planner's ONNX
    transforms cannot produce that precision.
    """
    version = parse_version(trt_version)
    if version < MIN_VERSION:
        raise CandidateFailed(FailReason.UNSUPPORTED,
                              f"TensorRT {trt_version} is older than {MIN_VERSION[0]}.{MIN_VERSION[1]}, which planner needs")
    if scheme not in WEAK_FLAGS:
        raise CandidateFailed(FailReason.UNSUPPORTED,
                              f"tensorrt does not implement quantization scheme {scheme!r} "
                              f"(it builds: {', '.join(WEAK_FLAGS)})")
    need = PRECISIONS[precision_of(scheme)].min_compute_capability  # lowest GPU with the precision's kernels
    if need and compute_capability is not None and compute_capability < need:
        raise CandidateFailed(FailReason.UNSUPPORTED,
                              f"{scheme} needs compute capability >= {need[0]}.{need[1]}; this GPU has "
                              f"{compute_capability[0]}.{compute_capability[1]}")
    strongly = version >= STRONGLY_TYPED_FROM
    transforms = tuple(_onnx_schemes() if onnx_schemes is None else onnx_schemes)
    if scheme == "int8_static":
        opts = quant_options or {}
        unsigned = [k for k in ("activation_type", "weight_type") if opts.get(k, "s8") != "s8"]
        if unsigned:
            raise CandidateFailed(FailReason.UNSUPPORTED,
                                  "TensorRT Q/DQ is signed int8 only: int8_static needs "
                                  + " and ".join(f"{k}=s8" for k in unsigned))
    if scheme == "none":
        return PrecisionPlan(strongly, "none", ())
    if scheme == "fp8" and "fp8" not in transforms:
        # FP8 needs explicit Q/DQ in the graph whatever the TensorRT version
        raise CandidateFailed(FailReason.UNSUPPORTED,
                              "fp8 needs FP8 Q/DQ nodes in the ONNX graph; the planner's ONNX transforms do not "
                              f"write them yet (they write: {', '.join(transforms)})")
    if scheme == "bf16" and strongly and "bf16" not in transforms:
        raise CandidateFailed(FailReason.UNSUPPORTED,
                              f"TensorRT {trt_version} builds strongly typed networks: bf16 must come from casts in "
                              "the ONNX graph, and the planner's ONNX transforms do not write bf16 yet "
                              f"(they write: {', '.join(transforms)})")
    onnx_scheme = scheme if scheme in transforms else "none"
    flags: tuple[str, ...] = () if strongly else (str(WEAK_FLAGS[scheme]),)
    return PrecisionPlan(strongly, onnx_scheme, flags)


def supported_schemes(trt_version: str | None, onnx_schemes: Iterable[str] | None = None) -> tuple[str, ...]:
    """Quantization schemes TensorRT ``trt_version`` can build from the planner's ONNX transforms.

    Unknown version (TensorRT not installed here): the strongly typed set, as current releases build.
    """
    version = trt_version or f"{STRONGLY_TYPED_FROM[0]}.{STRONGLY_TYPED_FROM[1]}"
    out = []
    for scheme in WEAK_FLAGS:
        try:
            plan_precision(scheme, version, None, None, onnx_schemes)
        except CandidateFailed:
            continue
        out.append(scheme)
    return tuple(out) or ("none",)  # a too-old TensorRT: `plan_precision` then says why


def validate_options(opts: dict[str, Any], target) -> dict[str, Any]:
    """The backend options with defaults filled in (`TensorRTOptions`, the workspace capped at the target GPU's
    memory); `ConfigError` listing every bad one."""
    out = TensorRT.resolve_options(opts)
    gpu = getattr(target.device, "gpu", None)
    limit = int(gpu.memory_gb * 1024) if gpu is not None else None
    if out["workspace_mb"] is None:
        out["workspace_mb"] = min(DEFAULT_WORKSPACE_MB, limit) if limit is not None else DEFAULT_WORKSPACE_MB
    elif limit is not None and out["workspace_mb"] > limit:
        raise ConfigError(f"tensorrt option workspace_mb={out['workspace_mb']}: more than the GPU memory of target "
                          f"'{target.name}' ({limit} MiB)")
    return out


@dataclass(frozen=True)
class InputProfile:
    """One input's optimization-profile shapes (batch axis 0)."""

    name: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


def plan_profiles(input_specs, batch_sizes: Iterable[int], batch: int) -> tuple[InputProfile, ...]:
    """One profile covering every searched batch size, optimized for the trial's ``batch``."""
    sizes = sorted({*(int(b) for b in batch_sizes), int(batch)})
    if sizes[0] < 1:
        raise ConfigError(f"tensorrt: batch sizes must be >= 1 (got {sizes})")
    specs = list(input_specs)
    if not specs:
        raise ConfigError("tensorrt: the model declares no inputs, so no optimization profile can be built")
    lo, hi = sizes[0], sizes[-1]
    return tuple(
        InputProfile(s.name, (lo, *map(int, s.shape)), (int(batch), *map(int, s.shape)), (hi, *map(int, s.shape)))
        for s in specs
    )


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", str(text).lower()).strip("-.") or "unknown"


def timing_cache_path(cache_dir: Path, gpu_name: str, trt_version: str) -> Path:
    """The timing cache shared by every build on this GPU model with this TensorRT."""
    return Path(cache_dir) / "tensorrt" / f"timing-{_slug(gpu_name)}-trt{_slug(trt_version)}.cache"


@dataclass(frozen=True)
class TrtBuildPlan:
    """Everything `TensorRT.compile` sets on the builder, decided without TensorRT."""

    trt_version: str
    strongly_typed: bool
    network_flags: tuple[str, ...]  # NetworkDefinitionCreationFlag names
    builder_flags: tuple[str, ...]  # BuilderFlag names
    onnx_scheme: str  # ONNX transform applied before parsing ("none": the exported fp32 graph)
    precision: str
    optimization_level: int
    workspace_mb: int
    profiles: tuple[InputProfile, ...]
    timing_cache: Path | None
    cuda_graph: bool
    notes: tuple[str, ...] = ()

    @property
    def workspace_bytes(self) -> int:
        return self.workspace_mb << 20

    def info(self) -> dict[str, Any]:
        """Facts for the manifest (numeric ones also become ``build.*`` metrics)."""
        return {
            "tensorrt_version": self.trt_version,
            "strongly_typed": self.strongly_typed,
            "network_flags": list(self.network_flags),
            "builder_flags": list(self.builder_flags),
            "onnx_scheme": self.onnx_scheme,
            "optimization_level": self.optimization_level,
            "workspace_mb": self.workspace_mb,
            "profile": {p.name: {"min": list(p.min), "opt": list(p.opt), "max": list(p.max)} for p in self.profiles},
            "timing_cache": str(self.timing_cache) if self.timing_cache else None,
            "cuda_graph": self.cuda_graph,
            "plan_notes": list(self.notes),
        }


def plan_build(cfg, target, trt_version: str, input_specs, batch_sizes: Sequence[int], *,
               cache_dir: Path | None = None, gpu_name: str | None = None,
               onnx_schemes: Iterable[str] | None = None) -> TrtBuildPlan:
    """Decide a TensorRT build for trial ``cfg`` on ``target`` (pure: no tensorrt import).

    ``input_specs``: objects with ``name`` and ``shape`` (without the batch axis).
    ``batch_sizes``: the searched batch sizes the engine's profile must accept.
    ``gpu_name``: the device actually building (keys the timing cache; default: the target's GPU).
    Raises `ConfigError` for bad options and `CandidateFailed(UNSUPPORTED)` for a precision
    this TensorRT/GPU/transform set cannot build.
    """
    if target.device.kind != "cuda":
        raise CandidateFailed(FailReason.UNSUPPORTED, f"tensorrt runs on NVIDIA GPUs only; target '{target.name}' is "
                                                      f"{target.device.kind}")
    opts = validate_options(cfg.options(), target)
    from planner.transforms.quantize import resolve_options

    qopts = resolve_options(cfg.quant) if cfg.quant.scheme in _onnx_schemes() else cfg.quant.opts()
    cc = _cc(target)
    prec = plan_precision(cfg.quant.scheme, trt_version, cc, qopts, onnx_schemes)
    notes = []
    flags = list(prec.flags)
    sparse_why = "prune method 2:4" if cfg.prune.method == "2:4" else ("option sparse_weights" if opts["sparse_weights"] else None)
    if sparse_why:
        flags.append("SPARSE_WEIGHTS")
        notes.append(f"SPARSE_WEIGHTS: {sparse_why}")
        if cc is not None and cc < SPARSE_FROM:
            notes.append(f"sparse tensor cores need sm_80+; on {cc[0]}.{cc[1]} the flag has no effect")
    if prec.strongly_typed:
        notes.append("strongly typed: precision from the ONNX graph, no precision builder flags")
    gpu = gpu_name or (target.device.gpu.name if target.device.gpu else target.name)
    return TrtBuildPlan(
        trt_version=str(trt_version),
        strongly_typed=prec.strongly_typed,
        network_flags=("STRONGLY_TYPED",) if prec.strongly_typed else (),
        builder_flags=tuple(flags),
        onnx_scheme=prec.onnx_scheme,
        precision=cfg.precision,
        optimization_level=int(opts["optimization_level"]),
        workspace_mb=int(opts["workspace_mb"]),
        profiles=plan_profiles(input_specs, batch_sizes, cfg.batch_size),
        timing_cache=timing_cache_path(cache_dir, gpu, str(trt_version)) if cache_dir is not None else None,
        cuda_graph=bool(opts["cuda_graph"]),
        notes=tuple(notes),
    )


def qdq_problems(onnx_path: Path) -> list[str]:
    """Why TensorRT's ONNX parser would reject this graph's Q/DQ nodes (empty: it accepts them).

    TensorRT quantization is symmetric (every zero point 0) and dequantizes only
    int8/fp8/int4 tensors (an int32 bias DequantizeLinear is rejected).
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path), load_external_data=False)
    inits = {i.name: i for i in model.graph.initializer}
    signed = {onnx.TensorProto.INT8, onnx.TensorProto.INT4}
    ok_types = signed | {getattr(onnx.TensorProto, n) for n in ("FLOAT8E4M3FN", "FLOAT8E5M2") if hasattr(onnx.TensorProto, n)}
    asym, types = set(), set()
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        label = node.name or node.output[0]
        zp = inits.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if zp is not None and zp.data_type not in ok_types:
            types.add(label)
        elif zp is not None and zp.data_type in signed and np.any(numpy_helper.to_array(zp) != 0):
            asym.add(label)
        if node.op_type == "DequantizeLinear" and node.input[0] in inits and inits[node.input[0]].data_type not in ok_types:
            types.add(label)
    problems = []
    if asym:
        problems.append(f"{len(asym)} Q/DQ node(s) with non-zero zero points (TensorRT quantization is symmetric), "
                        f"e.g. {', '.join(sorted(asym)[:3])}")
    if types:
        problems.append(f"{len(types)} Q/DQ node(s) on uint8/int32 tensors (TensorRT quantizes to int8/fp8/int4 only; "
                        f"an int32-quantized bias is rejected), e.g. {', '.join(sorted(types)[:3])}")
    return problems


# --------------------------------------------------------------------------- timing cache files (no tensorrt)


def load_timing_cache(path: Path | None, create: Callable[[bytes], T]) -> tuple[T, str]:
    """A timing cache object from ``path``: ``create(blob)`` makes one (``b""``: empty).

    Returns the object and how it was obtained: ``"loaded"``, ``"new"`` (no file, or no
    path), or ``"corrupt"`` -- ``create`` raised or returned None for the file's bytes;
    the file is renamed to ``<name>.corrupt`` and an empty cache is returned.
    """
    if path is None or not Path(path).is_file():
        return create(b""), "new"
    path = Path(path)
    try:
        blob = path.read_bytes()
    except OSError as e:
        print(f"tensorrt: timing cache {path} unreadable ({e}); starting from an empty cache", file=sys.stderr)
        return create(b""), "corrupt"
    cache = None
    if blob:
        try:
            cache = create(blob)
        except Exception as e:  # noqa: BLE001 -- any rejection of the bytes means "corrupt"
            print(f"tensorrt: timing cache {path} rejected ({type(e).__name__}: {e})", file=sys.stderr)
            cache = None
    if cache is None:
        aside = path.with_name(path.name + ".corrupt")
        try:
            path.replace(aside)
        except OSError:
            aside = path
        print(f"tensorrt: timing cache {path} is corrupt or empty; kept as {aside}, starting from an empty cache",
              file=sys.stderr)
        return create(b""), "corrupt"
    return cache, "loaded"


def store_timing_cache(path: Path, serialize: Callable[[], bytes], merge: Callable[[bytes], Any] | None = None) -> str:
    """Write the cache to ``path`` atomically, first merging what other workers wrote there meanwhile.

    Under a file lock: ``merge(blob)`` folds the file's current bytes into the cache (a failure
    is ignored: a corrupt file is simply replaced), then ``serialize()`` is written.
    Returns ``"merged"`` or ``"written"``.
    """
    import fcntl

    from planner.cache import atomic_path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    how = "written"
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if merge is not None and path.is_file():
            try:
                blob = path.read_bytes()
                if blob and merge(blob) is not False:
                    how = "merged"
            except Exception as e:  # noqa: BLE001 -- an unmergeable file is overwritten
                print(f"tensorrt: could not merge timing cache {path} ({type(e).__name__}: {e}); overwriting",
                      file=sys.stderr)
        data = bytes(serialize())
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
    return how


# --------------------------------------------------------------------------- runtime


class TrtRuntime(Runtime):
    device = "cuda"

    def __init__(self, engine, batch: int, use_cuda_graph: bool = False):
        import torch

        self.torch = torch
        self.engine = engine
        self.context = engine.create_execution_context()
        self.batch = batch
        self.use_cuda_graph = use_cuda_graph
        self.stream = torch.cuda.Stream()
        import tensorrt as trt

        self.names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.inputs = [n for n in self.names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in self.names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self._trt = trt

    def _prepare(self, inputs: dict[str, np.ndarray]):
        torch, trt = self.torch, self._trt
        bufs = {}
        for name, arr in zip(self.inputs, inputs.values()):
            t = torch.from_numpy(np.ascontiguousarray(arr)).cuda()
            self.context.set_input_shape(name, tuple(t.shape))
            bufs[name] = t
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            dtype = torch.from_numpy(np.empty(0, dtype=trt.nptype(self.engine.get_tensor_dtype(name)))).dtype
            bufs[name] = torch.empty(shape, dtype=dtype, device="cuda")
        for name, t in bufs.items():
            self.context.set_tensor_address(name, t.data_ptr())
        return bufs

    def bind(self, inputs: dict[str, np.ndarray]) -> Callable[[], Any]:
        self._bufs = self._prepare(inputs)
        handle = self.stream.cuda_stream
        ctx = self.context
        if self.use_cuda_graph:
            torch = self.torch
            ctx.execute_async_v3(handle)  # one launch before capture, as TensorRT requires
            self.stream.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=self.stream):
                ctx.execute_async_v3(self.stream.cuda_stream)
            self._graph = graph
            stream = self.stream

            def replay():
                with torch.cuda.stream(stream):  # replay queues on the current stream: the timed one
                    graph.replay()

            return replay
        return lambda: ctx.execute_async_v3(handle)

    def timing_stream(self):
        return self.stream

    def bind_host(self, inputs: dict[str, np.ndarray]) -> Callable[[], Any]:
        """Host arrays in, host outputs out, through the engine's device buffers."""
        torch = self.torch
        bufs = self._prepare(inputs)
        host_in = [torch.from_numpy(np.ascontiguousarray(a)) for a in inputs.values()]
        ctx, stream = self.context, self.stream

        def run():
            with torch.cuda.stream(stream):
                for name, h in zip(self.inputs, host_in):
                    bufs[name].copy_(h)
                ctx.execute_async_v3(stream.cuda_stream)
                outs = [bufs[n].cpu() for n in self.outputs]
            stream.synchronize()
            return outs

        return run

    def infer(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        bufs = self._prepare(inputs)
        self.context.execute_async_v3(self.stream.cuda_stream)
        self.stream.synchronize()
        return [bufs[n].float().cpu().numpy() for n in self.outputs]

    def synchronize(self) -> None:
        self.stream.synchronize()


# --------------------------------------------------------------------------- backend


def installed_version() -> str | None:
    """The installed TensorRT version from package metadata (no import), or None."""
    import importlib.util
    from importlib.metadata import PackageNotFoundError, version

    if importlib.util.find_spec("tensorrt") is None:
        return None
    for dist in ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu11"):
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    return None


class TensorRT(Backend):
    name = "tensorrt"
    modules = ("tensorrt",)
    preload = False  # not checked: importing tensorrt loads the CUDA libraries (planner.measure.forkserver)
    pip_extra = "tensorrt"
    install_hint = "pip install 'planner[tensorrt]' on a machine with an NVIDIA GPU and driver"
    engine_files = ("model.plan",)
    triton = 'platform: "tensorrt_plan"'
    decoder_note = "TensorRT decoders (TensorRT-LLM) are not integrated; use torch, torch_compile or onnxruntime"
    devices = ("cuda",)
    input_format = "onnx"
    profile_batch_sizes = True  # compile(batch_sizes=...): the optimization profile spans the searched batch sizes
    # what the installed TensorRT builds from the planner's ONNX transforms (see `supported_schemes`)
    quant_schemes = supported_schemes(installed_version())
    scheme_options = {"int8_static": _ort_int8_options()}  # its Q/DQ come from ONNX Runtime's quantizer, not NNCF
    Options = TensorRTOptions

    @classmethod
    def check(cls, cfg, target, model_format: str) -> str | None:
        why = super().check(cfg, target, model_format)
        if why:
            return why
        try:
            validate_options(cfg.options(), target)
            version = installed_version()
            if version is not None:
                plan_precision(cfg.quant.scheme, version, _cc(target), cfg.quant.opts())
        except ConfigError as e:
            return "; ".join(e.errors)
        except CandidateFailed as e:
            return e.message
        return None

    @classmethod
    def load_artifact(cls, engine_dir: Path, batch: int, device: str) -> "TrtRuntime":
        return load_artifact(engine_dir, batch=batch)

    @classmethod
    def describe_engine(cls, rt) -> dict[str, Any]:
        """The plan's input/output tensors (name, mode, dtype, shape) for a Triton config."""
        import tensorrt as trt

        eng = rt.engine
        ios = []
        for name in rt.names:
            ios.append({"name": name, "mode": "input" if name in rt.inputs else "output",
                        "dtype": str(trt.nptype(eng.get_tensor_dtype(name)).__name__),
                        "shape": list(eng.get_tensor_shape(name))})
        return {"io": ios}

    def compile(self, source, cfg, target, workdir: Path, batch_sizes: Sequence[int] | None = None) -> BuildResult:
        """Build per `plan_build`.  ``batch_sizes``: the searched batch sizes the profile must
        cover (default: 1 up to the trial's batch size)."""
        import tensorrt as trt
        import torch

        t0 = time.perf_counter()
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        gpu_name = torch.cuda.get_device_name() if torch.cuda.is_available() else None
        plan = plan_build(cfg, target, trt.__version__, source.inputs, batch_sizes or (1, cfg.batch_size),
                          cache_dir=Path(source.cache_dir), gpu_name=gpu_name)
        info: dict[str, Any] = {**plan.info(), "gpu_name": gpu_name}
        onnx_path = source.onnx_path(cfg)
        if plan.onnx_scheme != "none":
            # precision lives in the graph: casts or Q/DQ from the ONNX transforms
            from planner.transforms.quantize import quantize_onnx

            q = workdir / f"model.{plan.onnx_scheme}.onnx"
            calib = source.calibration_inputs(32, seed=21) if plan.onnx_scheme in ("int8_static", "fp8") else None
            quant = replace(cfg.quant, scheme=plan.onnx_scheme)
            if plan.onnx_scheme == "int8_static":  # TensorRT's Q/DQ: zero points 0, float biases
                from planner.config import freeze_options

                quant = replace(quant, options=freeze_options({**dict(quant.options), "symmetric": True}))
            quantize_onnx(onnx_path, q, quant, calib)
            if calib is not None:
                info["calibration_data"] = source.calibration_source
                problems = qdq_problems(q)
                if problems:
                    raise CandidateFailed(FailReason.UNSUPPORTED,
                                          "the quantized graph is not one TensorRT parses: " + "; ".join(problems))
            onnx_path = q

        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        net_flags = 0
        for name in plan.network_flags:
            flag = getattr(trt.NetworkDefinitionCreationFlag, name, None)
            if flag is None and name == "STRONGLY_TYPED" and parse_version(trt.__version__) >= (11, 0):
                continue  # strong typing is unconditional from TensorRT 11
            if flag is None:
                raise CandidateFailed(FailReason.UNSUPPORTED,
                                      f"TensorRT {trt.__version__} has no NetworkDefinitionCreationFlag.{name}")
            net_flags |= 1 << int(flag)
        network = builder.create_network(net_flags)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(onnx_path)):
            errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise CandidateFailed(FailReason.COMPILE, f"TensorRT ONNX parser: {errs[:500]}")
        config = builder.create_builder_config()
        config.builder_optimization_level = plan.optimization_level
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, plan.workspace_bytes)
        for name in plan.builder_flags:
            flag = getattr(trt.BuilderFlag, name, None)
            if flag is None:
                raise CandidateFailed(FailReason.UNSUPPORTED, f"TensorRT {trt.__version__} has no BuilderFlag.{name}")
            config.set_flag(flag)
        profile = builder.create_optimization_profile()
        for p in plan.profiles:
            profile.set_shape(p.name, p.min, p.opt, p.max)
        config.add_optimization_profile(profile)

        cache, status = load_timing_cache(plan.timing_cache, config.create_timing_cache)
        if not config.set_timing_cache(cache, False):  # made by another device or TensorRT build
            cache, status = config.create_timing_cache(b""), "mismatch"
            config.set_timing_cache(cache, False)
        info["timing_cache_status"] = status
        info["timing_cache_loaded"] = float(status == "loaded")
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise CandidateFailed(FailReason.COMPILE, "TensorRT failed to build the engine (see worker.log)")
        if plan.timing_cache is not None:
            def merge(blob: bytes) -> bool:
                other = config.create_timing_cache(blob)
                return bool(other is not None and config.get_timing_cache().combine(other, False))

            info["timing_cache_store"] = store_timing_cache(
                plan.timing_cache, lambda: memoryview(config.get_timing_cache().serialize()).tobytes(), merge)
        engine_path = workdir / "model.plan"
        engine_path.write_bytes(memoryview(serialized))
        engine = trt.Runtime(logger).deserialize_cuda_engine(serialized)
        if engine is None:
            raise CandidateFailed(FailReason.COMPILE, "TensorRT could not deserialize the engine it built")
        rt = TrtRuntime(engine, cfg.batch_size, plan.cuda_graph)
        return BuildResult(rt, [engine_path], time.perf_counter() - t0, info)


def load_artifact(directory: Path, batch: int = 1, cuda_graph: bool = False) -> TrtRuntime:
    """Load ``model.plan`` with the TensorRT runtime API alone."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    engine = trt.Runtime(logger).deserialize_cuda_engine((Path(directory) / "model.plan").read_bytes())
    return TrtRuntime(engine, batch, cuda_graph)
