"""Apache TVM (Relax + MetaSchedule): a compiled VM module per (model, batch, target), optionally auto-tuned.

Pipeline: torch.export -> Relax (``from_exported_program``), or ONNX -> Relax (``from_onnx``) for
ONNX files; static batch = ``cfg.batch_size``.  The module is legalized and fused once; with
``tuning_trials > 0`` MetaSchedule tunes the fused TIR kernels into a JSON database cached under
``source.cache_dir/tvm/<target>/<workload>``, which later configs with the same workload reuse
(only the missing trials are tuned).  Tuning time is reported separately (``info.tuning_seconds``),
never as compile time or latency.

TVM 0.27 facts this module relies on (see experiments/tvm_notes.md):
  * ``tvm.target.Target`` no longer parses CLI strings ("llvm -mcpu=x"); we convert them to the
    JSON-dict form, typed with the target kind's option schema.
  * MetaSchedule lives at ``tvm.s_tir.meta_schedule``.  Its local builder/runner use subprocess pools
    that need ``psutil`` and re-import TVM per worker; we build and time candidates in-process.
  * ``import tvm.s_tir.tensor_intrin`` (done by every TuneContext) parses ~250 TVMScript functions,
    each calling ``inspect.stack()``; with torch loaded that takes ~1 minute.  We import it once under a
    cheap ``inspect.stack`` (seconds).
  * The CPU thread pool size is fixed at its first use from ``TVM_NUM_THREADS`` (default: half the
    logical cores); ``runtime.config_threadpool`` can lower/raise it up to that cap afterwards.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable, Literal

from pydantic import Field, NonNegativeInt

from planner.backends.base import DECISIVE, Backend, BackendOptions, BuildResult, Runtime
from planner.errors import CandidateFailed, FailReason

META_FILE = "tvm_meta.json"
LIB_FILE = "model.so"
MIXED_DTYPES = {"fp16": "float16"}  # relax.transform.ToMixedPrecision emits float16 only
SKIPPED = "skipped: max_tuning_seconds reached"


def _log(msg: str) -> None:
    print(f"[tvm] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- threads


def _reserve_threads(n: int) -> None:
    """Raise the TVM thread-pool cap before the pool starts: it reads ``TVM_NUM_THREADS`` once, at first
    use (default: half the logical cores).  A value set by the caller is respected."""
    if "TVM_NUM_THREADS" not in os.environ:
        os.environ["TVM_NUM_THREADS"] = str(max(int(n), os.cpu_count() or 1))


def set_threads(n: int) -> int:
    """Use ``n`` worker threads for TVM CPU kernels (at most the pool's cap); returns the count in effect."""
    _reserve_threads(n)
    import tvm

    if tvm.runtime.num_threads() != n:
        tvm.get_global_func("runtime.config_threadpool")(1, int(n))
    return int(tvm.runtime.num_threads())


# ----------------------------------------------------------------------------- target


def parse_target(spec: str | dict | None, device_kind: str = "cpu", threads: int | None = None, gpu_cc: str | None = None) -> dict:
    """A TVM target as a JSON-able dict from a CLI-style string ("llvm -mcpu=haswell -num-cores=4"),
    a JSON string/dict or a tag ("nvidia/nvidia-a100").  ``num-cores`` follows ``threads`` on CPU."""
    if isinstance(spec, dict):
        d = dict(spec)
    elif spec is None or not str(spec).strip():
        d = {"kind": "cuda", "arch": f"sm_{gpu_cc.replace('.', '')}"} if device_kind == "cuda" and gpu_cc else {"kind": "cuda" if device_kind == "cuda" else "llvm"}
    else:
        s = str(spec).strip()
        if s.startswith("{"):
            d = json.loads(s)
        elif "/" in s.split()[0]:
            d = {"tag": s.split()[0]}
            d.update(_parse_flags(s.split()[1:], None))
        else:
            parts = s.split()
            d = {"kind": parts[0]}
            d.update(_parse_flags(parts[1:], parts[0]))
    if d.get("kind") == "llvm" and threads:
        d["num-cores"] = int(threads)
    return d


def _parse_flags(flags: list[str], kind: str | None) -> dict:
    types: dict[str, str] = {}
    if kind:
        try:
            from tvm.target import TargetKind

            types = TargetKind.options_from_name(kind)
        except Exception:  # unknown kind: let Target() report it
            types = {}
    out: dict[str, Any] = {}
    for f in flags:
        if not f.startswith("-"):
            raise ValueError(f"bad TVM target flag {f!r} (expected -key=value)")
        key, _, val = f.lstrip("-").partition("=")
        ty = types.get(key, "")
        if not val:
            out[key] = True
        elif ty == "int":
            out[key] = int(val)
        elif ty == "bool":
            out[key] = val.lower() in ("1", "true", "yes")
        elif ty.startswith("Array"):
            out[key] = [v for v in val.split(",") if v]
        else:
            out[key] = val
    return out


def target_dirname(d: dict) -> str:
    """Filesystem-safe, stable name of a target dict, e.g. ``llvm_mcpu=haswell_num-cores=2``."""
    head = str(d.get("kind") or d.get("tag"))
    rest = [f"{k}={','.join(map(str, v)) if isinstance(v, (list, tuple)) else v}" for k, v in sorted(d.items()) if k not in ("kind",)]
    return re.sub(r"[^A-Za-z0-9.,=+-]+", "_", "_".join([head, *rest]))[:150]


# ---------------------------------------------------------------------- fast imports


def _fast_outer_frames(frame, context: int = 1):
    import inspect
    import linecache

    out = []
    while frame is not None:
        co = frame.f_code
        line = linecache.getline(co.co_filename, frame.f_lineno) if context else ""
        out.append(inspect.FrameInfo(frame, co.co_filename, frame.f_lineno, co.co_name, [line] if line else None, 0 if line else None))
        frame = frame.f_back
    return out


@contextlib.contextmanager
def _cheap_inspect_stack():
    """``inspect.stack()`` resolves every frame's module by scanning sys.modules; TVMScript calls it per
    function.  The parser only reads frames, locals and one source line, which this provides cheaply."""
    import inspect

    saved = inspect.stack, inspect.getouterframes
    inspect.stack = lambda context=1: _fast_outer_frames(sys._getframe(1), context)
    inspect.getouterframes = _fast_outer_frames
    try:
        yield
    finally:
        inspect.stack, inspect.getouterframes = saved


def _import_meta_schedule(intrinsics: bool = True):
    if intrinsics and "tvm.s_tir.tensor_intrin" not in sys.modules:
        t0 = time.perf_counter()
        with _cheap_inspect_stack():
            import tvm.s_tir.tensor_intrin  # noqa: F401
        _log(f"loaded TVM tensor intrinsics in {time.perf_counter() - t0:.1f}s")
    from tvm.s_tir import meta_schedule as ms

    return ms


# -------------------------------------------------------------------------- runtime


def _flatten(out) -> list:
    import tvm

    if isinstance(out, tvm.runtime.Tensor):
        return [out]
    if isinstance(out, (list, tuple)) or type(out).__name__ == "Array":
        res = []
        for o in out:
            res.extend(_flatten(o))
        return res
    return [out]


class TVMRuntime(Runtime):
    """A Relax VirtualMachine over a built executable."""

    def __init__(self, executable, device: str, input_names: list[str], threads: int | None = None):
        import tvm
        from tvm import relax

        self.device = device
        self.threads = threads
        if device == "cpu" and threads:
            set_threads(threads)
        self.dev = tvm.cuda(0) if device == "cuda" else tvm.cpu(0)
        self.vm = relax.VirtualMachine(executable, self.dev)
        self.main = self.vm["main"]
        self.input_names = list(input_names)
        self.executable = executable

    def _args(self, inputs: dict) -> list:
        import numpy as np
        import tvm

        vals = [inputs[n] for n in self.input_names] if all(n in inputs for n in self.input_names) else list(inputs.values())
        return [tvm.runtime.tensor(np.ascontiguousarray(v), self.dev) for v in vals]

    def bind(self, inputs: dict) -> Callable[[], Any]:
        if self.device == "cpu" and self.threads:
            set_threads(self.threads)
        args = self._args(inputs)
        main, dev = self.main, self.dev
        if self.device == "cuda":

            def run():
                out = main(*args)
                dev.sync()
                return out

            return run
        return lambda: main(*args)

    def infer(self, inputs: dict) -> list:
        import numpy as np

        outs = _flatten(self.main(*self._args(inputs)))
        self.synchronize()
        return [np.asarray(o.numpy()) for o in outs]

    def synchronize(self) -> None:
        if self.device == "cuda":
            self.dev.sync()

    def bind_host(self, inputs: dict) -> Callable[[], Any] | None:
        """CUDA: numpy in, numpy out (copies both ways inside the call); None on the CPU."""
        if self.device != "cuda":
            return None
        import numpy as np

        host = {k: np.ascontiguousarray(v) for k, v in inputs.items()}

        def run():
            outs = _flatten(self.main(*self._args(host)))
            res = [o.numpy() for o in outs]
            self.dev.sync()
            return res

        return run

    def close(self) -> None:
        self.main = None
        self.vm = None


def load_artifact(directory: Path, threads: int | None = None) -> TVMRuntime:
    """Load ``model.so`` + ``tvm_meta.json`` written by `TVM.compile` (a fresh process needs nothing else)."""
    d = Path(directory)
    meta = json.loads((d / META_FILE).read_text())
    n = threads or meta.get("threads")
    if meta["device"] == "cpu" and n:
        _reserve_threads(int(n))
    import tvm

    lib = tvm.runtime.load_module(str(d / meta.get("library", LIB_FILE)))
    return TVMRuntime(lib, meta["device"], [i["name"] for i in meta["inputs"]], int(n) if n else None)


# -------------------------------------------------------------- in-process tuning I/O

_ARTIFACTS: dict[str, Any] = {}


def _inprocess_builder_runner(ms, device_type: str, deadline: float | None = None):
    """MetaSchedule Builder/Runner that compile and time candidates in this process (no psutil, no
    per-worker TVM import)."""
    import uuid

    import tvm
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.builder import BuilderResult, PyBuilder
    from tvm.s_tir.meta_schedule.builder.local_builder import default_build
    from tvm.s_tir.meta_schedule.runner import PyRunner
    from tvm.s_tir.meta_schedule.runner.config import EvaluatorConfig
    from tvm.s_tir.meta_schedule.runner.local_runner import LocalRunnerFuture
    from tvm.s_tir.meta_schedule.runner.utils import alloc_argument_common, run_evaluator_common

    @derived_object
    class InProcessBuilder(PyBuilder):
        def build(self, build_inputs):
            results = []
            for bi in build_inputs:
                if deadline is not None and time.perf_counter() > deadline:
                    # MetaSchedule has no time cap; past ours, candidates fail at once, which spends
                    # the remaining trial budget without building or timing anything
                    results.append(BuilderResult(None, SKIPPED))
                    continue
                try:
                    key = f"inprocess:{uuid.uuid4().hex}"
                    _ARTIFACTS[key] = default_build(bi.mod, bi.target, None)
                    results.append(BuilderResult(key, None))
                except Exception as e:  # a bad candidate: recorded by MetaSchedule, search goes on
                    results.append(BuilderResult(None, f"{type(e).__name__}: {e}"[:4000]))
            return results

    cfg = EvaluatorConfig(number=3, repeat=1, min_repeat_ms=20 if device_type == "cpu" else 40)

    @derived_object
    class InProcessRunner(PyRunner):
        def run(self, runner_inputs):
            fill = tvm.get_global_func("tvm.contrib.random.random_fill_for_measure", allow_missing=True)
            futures = []
            for ri in runner_inputs:
                rt_mod = _ARTIFACTS.pop(ri.artifact_path, None)
                try:
                    if rt_mod is None:
                        raise RuntimeError("built candidate missing")
                    dev = tvm.runtime.device(ri.device_type, 0)
                    args = alloc_argument_common(fill, dev, [a.as_json() for a in ri.args_info], 1)
                    futures.append(LocalRunnerFuture(res=run_evaluator_common(rt_mod, dev, cfg, args)))
                except Exception as e:
                    futures.append(LocalRunnerFuture(error_message=f"{type(e).__name__}: {e}"[:4000]))
            return futures

    return InProcessBuilder(), InProcessRunner()


def _record_callback(ms, database, n_tasks: int, budget: int, t0: float, state: dict):
    """Commit measured candidates to ``database`` (only those that built and ran: MetaSchedule's own
    AddToDatabase also stores failures, at 1e10 s, which would count as reusable records) and log progress."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.database import TuningRecord
    from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback

    @derived_object
    class Record(PyMeasureCallback):
        def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
            skipped = sum(1 for b in builder_results if b.error_msg == SKIPPED)
            n = len(measure_candidates) - skipped
            if skipped:
                state["skipped"] += skipped
                if not state["stopped"]:
                    state["stopped"] = True
                    _log(f"tuning: max_tuning_seconds reached after {state['done'] + n} trials; skipping the rest")
            if n <= 0:
                return
            ctx = task_scheduler.tasks_[task_id].ctx
            workload = database.commit_workload(ctx.mod)
            errs = 0
            for cand, b, r in zip(measure_candidates, builder_results, runner_results):
                if b.error_msg == SKIPPED:
                    continue
                if b.error_msg or r.error_msg or not r.run_secs:
                    errs += 1
                    continue
                database.commit_tuning_record(TuningRecord(cand.sch.trace, workload, [float(x) for x in r.run_secs], ctx.target, cand.args_info))
            state["done"] += n
            state["errors"] += errs
            _log(f"tuning: {state['done']}/{budget} trials, kernel {task_id + 1}/{n_tasks}"
                 + (f", {errs} failed" if errs else "") + f", {time.perf_counter() - t0:.1f}s")

    return Record()


# --------------------------------------------------------------------------- backend


class TVMOptions(BackendOptions):
    tuning_trials: NonNegativeInt = Field(0, description="MetaSchedule measured trials; 0 = untuned default schedules",
                                          json_schema_extra=DECISIVE)
    max_tuning_seconds: float | None = Field(
        None, ge=0, description="cap on the search time of one build (candidates past it are skipped)",
        json_schema_extra=DECISIVE)
    threads: NonNegativeInt = Field(0, description="CPU thread-pool size (0: the target's threads)")
    opt_level: Literal[3, 2, 1, 0] = Field(3, description="Relax build optimisation level", json_schema_extra=DECISIVE)
    tuning_strategy: Literal["auto", "replay-trace", "evolutionary"] = Field("auto", description="MetaSchedule search strategy")


class TVM(Backend):
    name = "tvm"
    modules = ("tvm",)
    distributions = {"tvm": "apache-tvm"}
    pip_extra = "tvm"
    engine_files = ("model.so", META_FILE)  # Triton: Python backend around load_artifact
    decoder_note = ("TVM has no decoder runtime here (a KV-cache decoder needs TVM Relax's paged KV cache / MLC-LLM, "
                    "which planner does not integrate); use torch, torch_compile or onnxruntime")
    devices = ("cpu", "cuda")
    input_format = "torch"
    accepts_onnx = True  # ONNX files go through the Relax ONNX frontend
    quant_schemes = ("none", "fp16")  # fp16 = Relax ToMixedPrecision (fp16 compute, fp32 accumulate)
    Options = TVMOptions

    @classmethod
    def check(cls, cfg, target, model_format: str) -> str | None:
        if cfg.quant.scheme == "bf16":
            return "tvm: bf16 is not implemented (Relax ToMixedPrecision only produces float16)"
        why = super().check(cfg, target, model_format)
        if why:
            return why
        return None

    @classmethod
    def load_artifact(cls, engine_dir: Path, batch: int, device: str) -> "TVMRuntime":
        return load_artifact(engine_dir)

    def compile(self, source, cfg, target, workdir: Path) -> BuildResult:
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        opts = self.resolve_options(cfg.options())
        device = "cuda" if target.device.kind == "cuda" else "cpu"
        threads = opts["threads"] or target.thread_count()
        trials = opts["tuning_trials"]
        info: dict[str, Any] = {"tuning_trials": trials, "tuning_seconds": 0.0, "tuning_trials_done": 0, "reused_records": 0}
        if cfg.quant.scheme not in ("none", *MIXED_DTYPES):
            raise CandidateFailed(FailReason.UNSUPPORTED, f"tvm does not implement {cfg.quant.scheme}")
        if device == "cpu":
            _reserve_threads(threads)  # before TVM's thread pool can start
        t0 = time.perf_counter()
        import tvm
        from tvm import relax

        info["tvm_version"] = tvm.__version__
        gpu = target.device.gpu
        try:
            tdict = parse_target(target.tvm_target, device, threads if device == "cpu" else None, gpu.compute_capability if gpu else None)
            tvm_target = tvm.target.Target(tdict)
        except Exception as e:
            raise CandidateFailed(FailReason.COMPILE, f"bad TVM target {target.tvm_target!r}: {_short(e)}") from None
        kind = tvm_target.kind.name
        if (kind == "cuda") != (device == "cuda") or kind not in ("llvm", "cuda"):
            raise CandidateFailed(FailReason.UNSUPPORTED, f"TVM target kind {kind!r} does not match device {device!r}")
        if device == "cuda" and not tvm.runtime.enabled("cuda"):
            raise CandidateFailed(FailReason.UNSUPPORTED, "this TVM install has no usable CUDA runtime (CPU-only build or no driver)")
        info["tvm_target"] = str(tvm_target)
        if device == "cpu":
            info["threads"] = set_threads(threads)

        # 1. import to Relax at the static batch size
        try:
            mod = self._import(source, cfg)
        except CandidateFailed:
            raise
        except Exception as e:
            raise CandidateFailed(FailReason.COMPILE, f"TVM import failed: {_short(e)}") from None
        info["import_seconds"] = round(time.perf_counter() - t0, 3)

        # 2. mixed precision, legalize + fuse (the form MetaSchedule tunes)
        try:
            mixed = MIXED_DTYPES.get(cfg.quant.scheme)
            mod = self._prepare(mod, tvm_target, mixed)
            if mixed:
                info["mixed_precision"] = mixed
        except Exception as e:
            raise CandidateFailed(FailReason.COMPILE, f"TVM lowering failed: {_short(e)}") from None
        compile_before_tuning = time.perf_counter() - t0

        # 3. MetaSchedule (its time is reported apart from compile time)
        database = None
        if trials > 0:
            try:
                database = self._tune(mod, tvm_target, tdict, source, cfg, trials, opts, workdir, info)
            except CandidateFailed:
                raise
            except Exception as e:
                raise CandidateFailed(FailReason.COMPILE, f"MetaSchedule tuning failed: {_short(e)}") from None

        # 4. build, export, load
        t1 = time.perf_counter()
        opt_level = opts["opt_level"]
        try:
            ex = self._build(mod, tvm_target, database, opt_level)
        except Exception as e:
            raise CandidateFailed(FailReason.COMPILE, f"TVM build failed: {_short(e)}") from None
        artifacts: list[Path] = []
        lib_path = workdir / LIB_FILE
        try:
            ex.export_library(str(lib_path))
            artifacts.append(lib_path)
        except Exception as e:  # e.g. no C compiler: still runnable in memory, not exportable
            info["export_error"] = _short(e)
        meta = {
            "tvm_version": tvm.__version__,
            "tvm_target": str(tvm_target),
            "target": tdict,
            "device": device,
            "threads": threads if device == "cpu" else None,
            "batch_size": cfg.batch_size,
            "precision": cfg.precision,
            "library": LIB_FILE,
            "inputs": [{"name": i.name, "shape": [cfg.batch_size, *i.shape], "dtype": i.dtype} for i in source.inputs],
            "tuning_trials": trials,
            "tuning_records": info.get("tuning_records", 0),
        }
        (workdir / META_FILE).write_text(json.dumps(meta, indent=2))
        artifacts.append(workdir / META_FILE)
        try:
            executable = tvm.runtime.load_module(str(lib_path)) if lib_path in artifacts else ex
            runtime = TVMRuntime(executable, device, source.input_names, threads if device == "cpu" else None)
        except Exception as e:
            raise CandidateFailed(FailReason.COMPILE, f"TVM could not load the built module: {_short(e)}") from None
        compile_seconds = compile_before_tuning + (time.perf_counter() - t1)
        info["compile_seconds"] = round(compile_seconds, 3)
        return BuildResult(runtime, artifacts, compile_seconds, info)

    # ------------------------------------------------------------------ steps
    @staticmethod
    def _import(source, cfg):
        if source.format == "onnx":
            import onnx
            from tvm.relax.frontend.onnx import from_onnx

            model = onnx.load(str(source.onnx_path(cfg)))
            shapes = {i.name: [cfg.batch_size, *i.shape] for i in source.inputs}
            dtypes = {i.name: i.dtype for i in source.inputs}
            return from_onnx(model, shape_dict=shapes, dtype_dict=dtypes, keep_params_in_input=False)
        import torch
        from tvm.relax.frontend.torch import from_exported_program

        module = source.torch_module(cfg)
        args = tuple(torch.from_numpy(v) for v in source.example_inputs(cfg.batch_size).values())
        with torch.no_grad():
            try:
                ep = torch.export.export(module, args)
            except Exception as e:
                raise CandidateFailed(FailReason.COMPILE, f"torch.export failed: {_short(e)}") from None
        return from_exported_program(ep, keep_params_as_input=False)

    @staticmethod
    def _prepare(mod, target, mixed_dtype: str | None = None):
        """Decompose (batch-norm etc.), optionally mixed precision, then legalize to TIR and fuse."""
        import tvm
        from tvm import relax

        passes = [
            relax.backend.DispatchSampling(),
            relax.backend.DispatchSortScan(),
            relax.transform.DecomposeOpsForInference(),
            relax.transform.CanonicalizeBindings(),
            *([relax.transform.ToMixedPrecision(out_dtype="float32")] if mixed_dtype else []),
            relax.transform.LegalizeOps(),
            relax.transform.AnnotateTIROpPattern(),
            relax.transform.FoldConstant(),
            relax.transform.FuseOps(),
            relax.transform.FuseTIR(),
        ]
        with target, tvm.transform.PassContext(opt_level=3):
            return tvm.transform.Sequential(passes)(mod)

    @staticmethod
    def _build(mod, target, database, opt_level: int):
        import tvm
        from tvm import relax

        gpu = target.kind.name == "cuda"
        with contextlib.ExitStack() as ctx:
            ctx.enter_context(target)
            if database is not None:
                ctx.enter_context(database)
            ctx.enter_context(tvm.transform.PassContext(opt_level=opt_level))
            if database is not None:  # tuned kernels replace their fused TIR functions
                mod = relax.transform.MetaScheduleApplyDatabase(enable_warning=False)(mod)
            if gpu:  # GPU kernels need thread bindings: DLight default schedules for the rest
                from tvm.s_tir import dlight as dl

                mod = dl.ApplyDefaultSchedule(dl.gpu.Matmul(), dl.gpu.GEMV(), dl.gpu.Reduction(), dl.gpu.GeneralReduction(), dl.gpu.Fallback())(mod)
            lower = [
                relax.transform.RewriteDataflowReshape(),
                relax.transform.ToNonDataflow(),
                relax.transform.RemovePurityChecking(),
                relax.transform.CallTIRRewrite(),
                relax.transform.StaticPlanBlockMemory(),
                *([relax.transform.RewriteCUDAGraph()] if gpu else []),
                relax.transform.LowerAllocTensor(),
                relax.transform.KillAfterLastUse(),
                relax.transform.LowerRuntimeBuiltin(),
                relax.transform.ComputePrimValue(),
                relax.transform.VMShapeLower(),
                relax.transform.AttachGlobalSymbol(),
            ]
            return relax.build(mod, target=target, relax_pipeline=tvm.transform.Sequential(lower))

    def _tune(self, mod, target, tdict: dict, source, cfg, trials: int, opts: dict, workdir: Path, info: dict):
        import fcntl
        import importlib.util

        import tvm

        ms = _import_meta_schedule(intrinsics=target.kind.name == "cuda")
        key = f"{source.model_hash()}-{source.transform_key(cfg)}-b{cfg.batch_size}-{cfg.precision}-tvm{tvm.__version__}"
        db_dir = Path(source.cache_dir) / "tvm" / target_dirname(tdict) / key
        db_dir.mkdir(parents=True, exist_ok=True)
        info["tuning_database"] = str(db_dir)
        t0 = time.perf_counter()
        with open(db_dir / ".lock", "w") as lock:  # one tuner per workload at a time
            fcntl.flock(lock, fcntl.LOCK_EX)
            database = ms.database.JSONDatabase(
                path_workload=str(db_dir / "database_workload.json"),
                path_tuning_record=str(db_dir / "database_tuning_record.json"),
                allow_missing=True,
            )
            # trials measured so far for this workload: records, plus candidates that failed to
            # build/run (MetaSchedule keeps no record of those), so a budget is never re-spent
            state_file = db_dir / "trials.json"
            try:
                measured = int(json.loads(state_file.read_text()).get("measured", 0))
            except (OSError, ValueError):
                measured = 0
            records_before = len(database)
            have = max(records_before, measured)
            info["reused_records"] = records_before
            missing = trials - have
            left = os.environ.get("PLANNER_TUNING_SECONDS_LEFT")  # the study's remaining tuning budget
            if missing <= 0:
                _log(f"tuning: reusing {have} records (>= {trials} requested) from {db_dir}")
            elif left is not None and float(left) <= 0:
                _log(f"tuning: the study's tuning budget is spent; applying the {have} existing records only")
                info["tuning_stopped_by_cap"] = True
            else:
                _import_meta_schedule(intrinsics=True)
                tasks = ms.relax_integration.extract_tasks(mod, target)
                tasks = [t for t in tasks if not t.mod.attrs or not t.mod.attrs.get("tirx.is_scheduled", False)]
                if not tasks:
                    _log("tuning: no tunable kernels")
                else:
                    cap = opts["max_tuning_seconds"]
                    if left is not None:
                        cap = min(float(cap), float(left)) if cap else float(left)
                    has_xgb = importlib.util.find_spec("xgboost") is not None
                    strategy = opts["tuning_strategy"]
                    if strategy == "auto":
                        strategy = "evolutionary" if has_xgb else "replay-trace"
                    _log(f"tuning: {missing} trials ({have} records reused) over {len(tasks)} kernels, "
                         f"strategy {strategy}, cost model {'xgb' if has_xgb else 'random'}"
                         + (f", cap {float(cap):g}s" if cap else ""))
                    logging_quiet()
                    log_dir = workdir / "tvm_tuning"
                    contexts, weights = _tune_contexts(ms, tasks, log_dir, strategy, seed=have + 1)
                    deadline = time.perf_counter() + float(cap) if cap else None  # the search itself, after set-up
                    builder, runner = _inprocess_builder_runner(ms, "cuda" if target.kind.name == "cuda" else "cpu", deadline)
                    state = {"done": 0, "errors": 0, "skipped": 0, "stopped": False}
                    callbacks = [_record_callback(ms, database, len(contexts), missing, t0, state), ms.measure_callback.UpdateCostModel()]
                    per_iter = max(1, min(64, math.ceil(missing / len(contexts))))
                    try:
                        ms.tune_tasks(
                            tasks=contexts, task_weights=weights, work_dir=str(log_dir),
                            max_trials_global=missing, max_trials_per_task=missing, num_trials_per_iter=per_iter,
                            builder=builder, runner=runner, database=database,
                            cost_model="xgb" if has_xgb else "random", measure_callbacks=callbacks,
                            task_scheduler="gradient",
                        )
                    except Exception as e:
                        raise CandidateFailed(FailReason.COMPILE, f"MetaSchedule tuning failed: {_short(e)}") from None
                    finally:
                        _ARTIFACTS.clear()
                        _close_tune_loggers(log_dir)
                    info["tuning_failed_candidates"] = state["errors"]
                    info["tuning_stopped_by_cap"] = state["stopped"]
                    info["tuning_trials_done"] = state["done"]
                    state_file.write_text(json.dumps({"measured": have + state["done"]}))
            info["tuning_records"] = len(database)
        info["tuning_seconds"] = round(time.perf_counter() - t0, 3)
        _log(f"tuning: {info['tuning_trials_done']} new trials in {info['tuning_seconds']:.1f}s; database holds {info['tuning_records']}")
        return database


def _tune_contexts(ms, tasks, log_dir: Path, strategy: str, seed: int):
    """TuneContexts for extracted tasks, like ``relax_integration.extracted_tasks_to_tune_contexts`` but
    with plain file loggers: that helper re-runs ``logging.config.dictConfig`` on every call, which
    breaks on handlers without names (e.g. pytest's) and rewires the host process's logging."""
    import logging

    from tvm.s_tir.meta_schedule.utils import fork_seed

    log_dir.mkdir(parents=True, exist_ok=True)
    contexts, weights = [], []
    for i, (task, rand_state) in enumerate(zip(tasks, fork_seed(seed, n=len(tasks)))):
        logger = logging.getLogger(f"planner.tvm.tune.{log_dir.as_posix()}.task_{i}")
        logger.propagate = False
        logger.setLevel(logging.DEBUG)
        if not logger.handlers:
            h = logging.FileHandler(log_dir / f"task_{i:02d}_{task.task_name[:80]}.log")
            h.setFormatter(logging.Formatter("%(asctime)s [%(levelname)s] %(message)s"))
            logger.addHandler(h)
        contexts.append(ms.TuneContext(
            mod=task.dispatched[0], target=task.target, space_generator="post-order-apply", search_strategy=strategy,
            task_name=task.task_name, logger=logger, rand_state=rand_state, num_threads=max(1, os.cpu_count() or 1),
        ).clone())
        weights.append(task.weight)
    return contexts, weights


def _close_tune_loggers(log_dir: Path) -> None:
    import logging

    prefix = f"planner.tvm.tune.{log_dir.as_posix()}."
    for name, lg in list(logging.Logger.manager.loggerDict.items()):
        if name.startswith(prefix) and isinstance(lg, logging.Logger):
            for h in list(lg.handlers):
                lg.removeHandler(h)
                h.close()


def logging_quiet() -> None:
    """MetaSchedule logs every batch to stdout; keep its console at WARNING (full logs go to files)."""
    import logging

    logging.getLogger("tvm.s_tir.meta_schedule").setLevel(logging.WARNING)


def _short(e: BaseException, n: int = 400) -> str:
    text = str(e).strip()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    # TVM errors carry a C++ backtrace; the message is usually the last line
    msg = lines[-1] if lines else type(e).__name__
    return f"{type(e).__name__}: {msg}"[:n]
