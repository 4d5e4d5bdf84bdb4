"""The isolated worker, the child side of the worker protocol: one job per process.

Run as ``python -m planner.measure.worker JOB.json``, or forked by the fork server (`planner.measure.forkserver`,
which has numpy, torch and the backends' libraries imported already) to run the same `run_file`.  It reads the
typed job (`planner.measure.jobs`), runs the handler its kind names in `jobs.HANDLERS` (prepare the reference,
build and measure one trial, re-measure one candidate, or a decoder workload's forms of these) and writes
``result.json`` beside the job.
The parent side (`planner.measure.runner`) turns a crash, hang or OOM of this process into a failed trial
with its reason: user model code and compiled engines never run in the planner process.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from planner.errors import CandidateFailed, ConfigError, FailReason
from planner.measure.gate import Gate, die_with_parent

if TYPE_CHECKING:  # pragma: no cover
    from planner.measure.jobs import ConfirmJob, PrepareJob, TrialJob, WorkerJob

# ------------------------------------------------------------------ worker side


def rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def batches(inputs: dict, n: int, batch: int, axes: dict | None = None):
    """Yield (feed, valid) covering n samples in batches of exactly ``batch`` (last one padded).  ``inputs`` are
    sample-major; ``axes`` (input name -> batch axis, None for none; default 0) puts each in the model's layout."""
    import numpy as np

    from planner.source import to_model_layout

    for start in range(0, n, batch):
        idx = np.arange(start, start + batch) % n
        valid = min(batch, n - start)
        feed = {k: np.ascontiguousarray(v[idx]) for k, v in inputs.items()}
        yield (to_model_layout(feed, axes) if axes else feed), valid


def flat_outputs(outs: list, axes: "list[int] | None" = None) -> "Any":
    """The outputs of one batch as one row per sample: each output's batch axis (``axes``, default 0) first."""
    import numpy as np

    if axes:
        outs = [np.moveaxis(np.asarray(o), a, 0) if a else o for o, a in zip(outs, axes)]
    b = outs[0].shape[0]
    return np.concatenate([np.asarray(o, dtype=np.float32).reshape(b, -1) for o in outs], axis=1)


def read_reference(path: str) -> dict:
    """What a trial needs of ``reference.npz``: inputs (sample-major), their batch axes, the reference outputs, the
    outputs' batch axes, the columns quality is judged on (None: all) and the labels."""
    import numpy as np

    with np.load(path, allow_pickle=False) as z:
        files = set(z.files)
        inputs = {k[3:]: z[k] for k in z.files if k.startswith("in:")}
        axes = {k: (int(z[f"axis:{k}"]) if f"axis:{k}" in files else 0) for k in inputs}
        return {"inputs": inputs, "axes": {k: (None if a < 0 else a) for k, a in axes.items()},
                "ref": z["ref"] if "ref" in files else None,
                "out_axes": [int(a) for a in z["out_axes"]] if "out_axes" in files else None,
                "qcols": z["qcols"] if "qcols" in files else None,
                "labels": z["labels"] if "labels" in files else None}


def quality_columns(a, qcols) -> "Any":
    """The columns of flattened outputs ``a`` that quality is judged on (``qcols``: [start, stop) pairs)."""
    import numpy as np

    if qcols is None:
        return a
    return np.concatenate([a[:, int(lo):int(hi)] for lo, hi in qcols], axis=1)


def setup_threads(target) -> None:
    try:
        import torch

        torch.set_num_threads(target.thread_count())
    except ImportError:
        pass


REFERENCE_BATCH = 8  # batch of the fp32 reference (a job's ``reference_batch`` overrides it, e.g. 1)


def do_prepare(job: "PrepareJob") -> dict:
    """Load the model, compute its hash and the fp32 eager reference outputs on the evaluation set, in batches of
    ``job.reference_batch`` (default `REFERENCE_BATCH`; 1 for a model that only runs at batch 1)."""
    import numpy as np

    from planner.model import ModelSpec
    from planner.source import ModelSource
    from planner.target import Target

    spec = ModelSpec.from_dict(job.spec)
    target = Target.model_validate(job.target)
    setup_threads(target)
    src = ModelSource(spec, Path(job.cache_dir))
    n = int(job.eval_samples)
    inputs = src.sample_inputs(n, seed=int(job.seed))
    ref_batch = max(1, min(int(job.reference_batch or REFERENCE_BATCH), n))
    axes = src.batch_axes
    t0 = time.perf_counter()
    run, params, out_axes = _fp32_runner(src, spec, target)
    names, chosen = src.output_names, src.quality_outputs
    ref, widths = _reference_outputs(run, inputs, n, ref_batch, axes, out_axes)
    ref_seconds = time.perf_counter() - t0
    arrays = {f"in:{k}": v for k, v in inputs.items()}
    arrays.update({f"axis:{k}": np.int64(-1 if a is None else a) for k, a in axes.items()})
    arrays["ref"] = ref
    if out_axes:
        arrays["out_axes"] = np.asarray(out_axes, dtype=np.int64)
    if len(widths) == len(names):  # the columns of the chosen outputs in a flattened row
        starts = np.cumsum([0] + widths)
        arrays["qcols"] = np.asarray([[starts[i], starts[i + 1]] for i in chosen], dtype=np.int64)
    elif spec.outputs:
        raise ConfigError(f"model {spec.ref}: --output: the model returned {len(widths)} outputs, not the "
                          f"{len(names)} named {', '.join(names)}")
    evaluation = _reference_evaluation(spec, run, ref_batch)
    for k, v in (evaluation or {}).items():
        arrays[f"evalref:{k}"] = np.float64(v)
    data = src.data()
    if data is not None and "labels" in data:
        arrays["labels"] = data["labels"][np.arange(n) % len(data["labels"])]
    out_path = Path(job.reference)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, out_path)
    unusable, prune_widths = _prune_probe(src, job)
    return {
        "status": "ok",
        "prune_unusable": unusable,
        "prune_widths": prune_widths,  # what a pruned model's layer widths are predicted from (planner.space)
        "model_hash": src.model_hash(),
        "inputs": [i.to_dict() for i in src.inputs],
        "output_kind": src.output_kind,
        "output_shape": list(ref.shape[1:]),
        "output_names": names,
        "output_axes": [int(a) for a in out_axes] if out_axes and any(out_axes) else None,  # None: all on axis 0
        "quality_outputs": [names[i] for i in chosen],
        "param_count": params,
        "synthetic_data": src.synthetic,
        "has_labels": "labels" in arrays,
        "evaluation": evaluation,
        "format": src.format,
        "reference_seconds": ref_seconds,
        "reference_batch": ref_batch,
    }


def _fp32_runner(src, spec, target):
    """(a call from a feed to the fp32 model's outputs as numpy arrays, its parameter count or None, its outputs'
    batch axes or None): ONNX Runtime without graph optimisation for an ONNX file, eager torch otherwise."""
    import numpy as np

    if src.format == "onnx":
        from planner.backends.onnxruntime import make_session
        from planner.source import onnx_output_axes

        sess = make_session(Path(spec.ref), {"graph_optimization_level": "disable"}, target)
        return (lambda feed: [np.asarray(o) for o in sess.run(None, feed)]), None, onnx_output_axes(Path(spec.ref), src.inputs)
    import torch

    module = src.base_module()

    def run(feed):
        with torch.inference_mode():
            out = module(*[torch.from_numpy(v) for v in feed.values()])
        return [o.float().numpy() for o in (out if isinstance(out, (tuple, list)) else [out])]

    return run, sum(p.numel() for p in module.parameters()), None


def _reference_outputs(run, inputs: dict, n: int, ref_batch: int, axes: dict, out_axes) -> tuple:
    """(the flattened outputs of every sample, the values per sample of each output)."""
    import numpy as np

    outs, widths = [], []
    for feed, valid in batches(inputs, n, ref_batch, axes):
        got = run(feed)
        if not widths:
            widths = [int(np.size(o)) // max(1, np.shape(o)[a] if np.ndim(o) else 1)
                      for o, a in zip(got, out_axes or [0] * len(got))]
        outs.append(flat_outputs(got, out_axes)[:valid])
    return np.concatenate(outs), widths


def _reference_evaluation(spec, run, ref_batch: int) -> dict | None:
    """The task metrics of the fp32 model from the user's evaluator (what every trial's are compared with)."""
    if not spec.evaluator:
        return None
    from planner.measure.evaluator import evaluator_quality, load_evaluator, make_predict, parse_metric, run_evaluator

    fn = load_evaluator(spec.evaluator)
    try:
        evaluation = run_evaluator(fn, make_predict(run, ref_batch), ref_batch, f"--evaluator {spec.evaluator} (fp32 reference)")
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(f"--evaluator {spec.evaluator}: raised on the fp32 model: {type(e).__name__}: {e}") from None
    name, goal = parse_metric(spec.evaluator_metric)
    evaluator_quality(evaluation, evaluation, name, goal)  # the chosen metric exists
    return evaluation


def _prune_probe(src, job) -> tuple[dict, Any]:
    """(pruning methods that cannot apply to the model's structure -> why, its prunable widths): tried once,
    here, not once per trial (issue 28)."""
    if not job.prune_methods or src.format == "onnx":
        return {}, None
    import torch

    from planner.transforms.prune import channel_widths, transformer_widths, unusable_methods

    example = tuple(torch.from_numpy(v) for v in src.example_inputs(2, seed=123).values())
    return (unusable_methods(src.base_module(), job.prune_methods, example, job.prune_ratio),
            transformer_widths(src.base_module()) or channel_widths(src.base_module(), example))


def _is_oom(e: BaseException) -> bool:
    """MemoryError, or an allocator failure reported as another exception (torch, CUDA, ONNX Runtime)."""
    text = str(e).lower()
    return isinstance(e, MemoryError) or any(k in text for k in ("out of memory", "can't allocate memory", "bad_alloc", "failed to allocate"))


def early_exit_result(e, quality: dict, build) -> dict:
    """The failed-trial result of a hopeless candidate (see `timer.EarlyExit`)."""
    return {
        "status": "failed", "reason": FailReason.EARLY_EXIT.value,
        "message": f"hopeless: {e}", "quality": quality, "early_exit_median_ms": e.median_ms,
        "compile_seconds": build.compile_seconds,
    }


def device_info(rt) -> dict | None:
    """The GPU a CUDA engine was measured on, and the CUDA runtime of this process (None on the CPU)."""
    if not rt.device.startswith("cuda"):
        return None
    import torch

    p = torch.cuda.get_device_properties(torch.cuda.current_device())
    return {"gpu": p.name, "compute_capability": f"{p.major}.{p.minor}", "sm_count": p.multi_processor_count,
            "memory_gb": round(p.total_memory / 2**30, 1), "cuda_runtime": torch.version.cuda, "torch": torch.__version__}


def peak_memory_mb(rt) -> tuple[float, float | None]:
    """Peak RSS of this worker and, on CUDA, the peak GPU memory allocated by torch."""
    gpu_peak = None
    if rt.device.startswith("cuda"):
        import torch

        gpu_peak = torch.cuda.max_memory_allocated() / 2**20
    return peak_rss_mb(), gpu_peak


def compile_kwargs(backend_cls, job: "TrialJob | ConfirmJob") -> dict:
    """Extra arguments a backend's `compile` declares it takes: the searched batch sizes for engines
    with an optimization profile (`Backend.profile_batch_sizes`)."""
    if getattr(backend_cls, "profile_batch_sizes", False) and job.batch_sizes:
        return {"batch_sizes": [int(b) for b in job.batch_sizes]}
    return {}


def runnable_backend(cfg, target, model_format: str):
    """The backend class of ``cfg``, or `CandidateFailed(UNSUPPORTED)` when it cannot run it here."""
    from planner.backends import registry

    backend_cls = registry.get(cfg.backend)
    reason = backend_cls.check(cfg, target, model_format)
    if reason:
        raise CandidateFailed(FailReason.UNSUPPORTED, reason)
    avail = backend_cls.availability()
    if not avail.usable:
        raise CandidateFailed(FailReason.UNSUPPORTED, avail.detail)
    return backend_cls


def wait_for_turn(gate: str | None) -> None:
    """With --compile-workers, compiled candidates queue here: measurement is one at a time per device."""
    if gate:
        g = Gate(gate)
        g.say_ready()
        g.wait()


@dataclass
class Engine:
    """What `build_engine` made of a job: the compiled runtime and how it came about."""

    spec: Any  # planner.model.ModelSpec
    target: Any  # planner.target.Target
    cfg: Any  # planner.config.TrialConfig
    src: Any  # planner.source.ModelSource
    build: Any  # planner.backends.base.BuildResult
    build_seconds: float
    rss_before_mb: float  # this process before the model was loaded
    import_seconds: float = 0.0  # importing numpy/torch (the heavy libraries every job needs)

    def time_split(self) -> dict[str, float]:
        """Seconds of the build by phase: imports, model (build the fp32 module), transforms (prune, distill),
        export (ONNX), and compile (the backend's own work: everything else inside `compile`)."""
        t = self.src.timings
        split = {"imports": self.import_seconds, **{k: t.get(k, 0.0) for k in ("model", "transforms", "export")}}
        split["compile"] = max(0.0, self.build_seconds - sum(t.values()))
        return split


def build_engine(job: "TrialJob | ConfirmJob") -> Engine:
    """Load the model, apply the config's transforms (cached) and compile it.  A compile fault is
    `CandidateFailed` with its reason."""
    from planner.config import TrialConfig
    from planner.model import ModelSpec
    from planner.source import ModelSource
    from planner.target import Target

    t_imports = time.perf_counter()
    import numpy  # noqa: F401  (timed: the heavy imports every job pays for)

    try:
        import torch  # noqa: F401
    except ImportError:
        pass
    import_seconds = time.perf_counter() - t_imports
    spec = ModelSpec.from_dict(job.spec)
    target = Target.model_validate(job.target)
    cfg = TrialConfig.from_dict(job.config)
    workdir = Path(job.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    setup_threads(target)
    src = ModelSource(spec, Path(job.cache_dir), model_hash=job.model_hash)
    if job.kind == "trial" and cfg.prune.active and cfg.distill.active:
        mode = target.constraints.quality_loss_mode
        src.distill_judge = (evaluator_judge(spec, job.reference, cfg.batch_size, mode) if spec.evaluator
                             else distill_judge(job.reference, job.output_kind, mode))
        src.distill_bound = target.constraints.max_quality_loss
    backend_cls = runnable_backend(cfg, target, src.format)
    src.variable_length = served_lengths(target, backend_cls, src)

    rss0 = rss_mb()
    t0 = time.perf_counter()
    try:
        build = backend_cls().compile(src, cfg, target, workdir, **compile_kwargs(backend_cls, job))
    except (CandidateFailed, ConfigError):
        raise
    except Exception as e:
        traceback.print_exc()
        if _is_oom(e):
            raise CandidateFailed(FailReason.OOM, f"out of memory while compiling: {str(e)[:300]}") from None
        raise CandidateFailed(FailReason.COMPILE, f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}") from None
    build_seconds = time.perf_counter() - t0
    if not build.ok:
        raise CandidateFailed(FailReason.COMPILE, build.error or "backend returned no runtime")
    assert build.runtime is not None
    if src.variable_length:  # the hand-off (Triton dims, signature) gives the length axes as -1
        build.info["length_axes"] = {i.name: i.length_axis for i in src.inputs if i.length_axis is not None}
    return Engine(spec, target, cfg, src, build, build_seconds, rss0, import_seconds)


def distill_judge(reference: str, output_kind: str, mode: str):
    """The quality loss of a student (eager torch, fp32) on the study's evaluation set against its fp32 reference,
    as a trial measures it: what a staged distillation judges a student by after each stage (issue 28)."""
    import numpy as np

    from planner.measure.quality import quality_metrics

    with np.load(reference, allow_pickle=False) as z:
        ref = z["ref"]
        inputs = {k[3:]: z[k] for k in z.files if k.startswith("in:")}
        labels = z["labels"] if "labels" in z.files else None

    def judge(student) -> float:
        import torch

        outs = []
        with torch.inference_mode():
            for feed, valid in batches(inputs, len(ref), REFERENCE_BATCH):
                out = student(*[torch.from_numpy(v) for v in feed.values()])
                outs.append(flat_outputs([o.float().numpy() for o in (out if isinstance(out, (tuple, list)) else [out])])[:valid])
        q = quality_metrics(ref, np.concatenate(outs), output_kind, labels)
        if mode == "relative" and q.get("accuracy_reference"):
            return max(0.0, q["accuracy_drop"]) / q["accuracy_reference"]
        return float(q["quality_loss"])

    return judge


def evaluator_judge(spec, reference: str, batch_size: int, mode: str):
    """The judge of a staged distillation for a model with a user evaluator: the evaluator's quality loss of the
    student (eager torch, fp32), as `task_quality` computes a trial's, against the fp32 model's metrics recorded
    in ``reference``; the user's evaluator runs once per judged stage."""

    class _Eager:
        def __init__(self, student):
            self.student = student

        def infer(self, feed: dict) -> list:
            import torch

            with torch.inference_mode():
                out = self.student(*[torch.from_numpy(v) for v in feed.values()])
            return [o.float().numpy() for o in (out if isinstance(out, (tuple, list)) else [out])]

    def judge(student) -> float:
        return float(task_quality(spec, _Eager(student), batch_size, reference, {}, mode)["quality_loss"])

    return judge


def do_trial(job: "TrialJob") -> dict:
    import numpy as np

    from planner.measure.quality import quality_metrics
    from planner.measure.timer import EarlyExit, measure

    eng = build_engine(job)
    spec, target, cfg, src, build, build_seconds, rss0 = (eng.spec, eng.target, eng.cfg, eng.src, eng.build,
                                                          eng.build_seconds, eng.rss_before_mb)
    rt = build.runtime
    workdir = Path(job.workdir)
    split = eng.time_split()
    t0 = time.perf_counter()
    wait_for_turn(job.gate)
    split["waiting"] = time.perf_counter() - t0
    measured_from = time.time()
    t0 = time.perf_counter()

    # quality on the fixed evaluation set, against the fp32 eager reference
    r = read_reference(job.reference)
    ref, inputs, labels, axes = r["ref"], r["inputs"], r["labels"], r["axes"]
    n = len(ref)
    outs = []
    try:
        for feed, valid in batches(inputs, n, cfg.batch_size, axes):
            outs.append(flat_outputs(rt.infer(feed), r["out_axes"])[:valid])
    except Exception as e:
        traceback.print_exc()
        reason = FailReason.OOM if _is_oom(e) else FailReason.CRASH
        raise CandidateFailed(reason, f"inference failed: {type(e).__name__}: {str(e)[:300]}") from None
    try:
        quality = quality_metrics(quality_columns(ref, r["qcols"]), quality_columns(np.concatenate(outs), r["qcols"]),
                                  job.output_kind, labels)
    except ValueError as e:
        raise CandidateFailed(FailReason.QUALITY, str(e)) from None
    quality.update(task_quality(spec, rt, cfg.batch_size, job.reference, quality, target.constraints.quality_loss_mode))

    split["quality"] = time.perf_counter() - t0
    t0 = time.perf_counter()

    # latency: one batch, inputs in place, per the target's protocol
    feed, _ = next(batches(inputs, n, cfg.batch_size, axes))
    fn, time_one, timing = timed_call(rt, feed)
    try:
        stats = measure(fn, target.measurement, sync=rt.synchronize, abort_above_ms=job.abort_above_ms,
                        time_one=time_one)
    except EarlyExit as e:
        return early_exit_result(e, quality, build)
    host_fn = rt.bind_host(feed)  # device engines: the same batch from host memory and back, copies included
    with_copies = measure(host_fn, target.measurement, sync=rt.synchronize).to_dict() if host_fn is not None else None
    split["timing"] = time.perf_counter() - t0
    served = None
    if target.traffic is not None:  # the same engine under the target's traffic (planner.measure.serving)
        t0 = time.perf_counter()
        lengths, laxes = _lengths(src, target, inputs)
        served = served_figures(rt, cfg, target, inputs, lengths, laxes)
        split["serving"] = time.perf_counter() - t0
    peak, gpu_peak = peak_memory_mb(rt)
    artifacts = [p for p in build.artifacts if Path(p).is_file()]
    return {
        "status": "ok",
        "latency": stats.to_dict(),
        "timing": timing,
        # host<->device copies: not in `latency` (inputs placed on the device before timing, outputs left
        # there); `latency_with_copies` times the call from host arrays to host outputs.  None on the host.
        "copies_included": False if with_copies is not None else None,
        "latency_with_copies": with_copies,
        "served": served,  # None without traffic
        "quality": quality,
        "compile_seconds": build.compile_seconds,
        "build_seconds": build_seconds,
        "time_split": split,
        "build_info": build.info,
        "transform_info": src.transform_info,
        "artifacts": [str(Path(p).relative_to(workdir)) if Path(p).is_relative_to(workdir) else str(p) for p in artifacts],
        "artifact_mb": sum(Path(p).stat().st_size for p in artifacts) / 2**20,
        "peak_rss_mb": peak,
        "model_rss_mb": max(0.0, peak - rss0),
        "gpu_peak_mb": gpu_peak,
        "device": rt.device,
        "device_info": device_info(rt),
        "measured_window": [measured_from, time.time()],  # wall clock: quality check + latency protocol
    }


def served_lengths(target, backend_cls, src) -> bool:
    """Whether requests go at their own lengths: the traffic asks for it (``lengths: data``), the model declares
    length axes (`InputSpec.length_axis`) and the engine takes any length (`Backend.variable_length`); else each
    request is padded to the model's input length.  A traffic asking for lengths of a model without length axes
    fails the candidate (the study's prepare says it once, before any trial)."""
    traffic = target.traffic
    if traffic is None or traffic.lengths != "data":
        return False
    from planner.model import length_axes

    if not length_axes(src.inputs):
        raise CandidateFailed(FailReason.UNSUPPORTED, "traffic.lengths: data needs an input with a length_axis "
                              "(token ids, a mask); this model's inputs: " + ", ".join(src.input_names))
    return bool(backend_cls.variable_length)


def _lengths(src, target, inputs: dict) -> tuple[list[int] | None, dict[str, int] | None]:
    """(each request's padded length, the inputs' length axes) when requests go at their own lengths (the engine
    was built for them: `served_lengths`), else (None, None)."""
    from planner.measure.serving import request_lengths

    if not src.variable_length:
        return None, None
    axes = {i.name: i.length_axis for i in src.inputs if i.length_axis is not None}
    t = target.traffic
    return request_lengths(inputs, axes, t.request_batch, t.length_multiple, t.seed), axes


def _served_round(rt, cfg, target, inputs: dict, lengths=None, axes=None):
    """One re-measurement round under ``target.traffic``: the load point at the traffic's rate (or concurrency),
    as the trial measured it (`planner.measure.serving.served`), without the sustained-rate search."""
    from planner.config import ServingConfig
    from planner.measure.serving import engine_calls, served

    sv = cfg.serving or ServingConfig()
    calls = engine_calls(rt, sv.instances, inputs, target.traffic.request_batch, sv.max_batch, lengths=lengths,
                         length_axes=axes)

    def one_round() -> dict:
        try:
            return {"served": served(calls, target.traffic, sv, lengths=lengths).to_dict()}
        except ValueError as e:
            raise CandidateFailed(FailReason.MEASURE, f"served latency: {e}") from None

    return one_round


def served_figures(rt, cfg, target, inputs: dict, lengths=None, axes=None) -> dict:
    """Served latency of the built engine under ``target.traffic``, as ``cfg.serving`` serves it
    (`planner.measure.serving.measure_served`); an engine that fails under load fails the trial.  ``lengths``:
    each request's padded length (`_lengths`), for an engine built for them."""
    from planner.config import ServingConfig
    from planner.measure.serving import engine_calls, measure_served

    sv = cfg.serving or ServingConfig()
    traffic = target.traffic
    try:
        calls = engine_calls(rt, sv.instances, inputs, traffic.request_batch, sv.max_batch, lengths=lengths,
                             length_axes=axes)
        out = measure_served(calls, traffic, sv, lengths)
    except NotImplementedError as e:
        raise CandidateFailed(FailReason.UNSUPPORTED, str(e)) from None
    except ValueError as e:
        raise CandidateFailed(FailReason.MEASURE, f"served latency: {e}") from None
    except Exception as e:
        traceback.print_exc()
        reason = FailReason.OOM if _is_oom(e) else FailReason.CRASH
        raise CandidateFailed(reason, f"inference failed under load: {type(e).__name__}: {str(e)[:300]}") from None
    out["traffic"] = traffic.model_dump(mode="json")
    if traffic.lengths == "data":  # what the requests were: their own lengths, or padded for a fixed-length engine
        out["lengths"] = ({"requests": "own", "padded_to_multiple_of": traffic.length_multiple}
                          if lengths else {"requests": "padded to the model's input length (the engine's is fixed)"})
    out["serving"] = {"instances": sv.instances, "threads_per_instance": sv.threads_per_instance(target.thread_count()),
                      "max_batch": sv.max_batch, "max_queue_delay_us": sv.max_queue_delay_us}
    return out


def timed_call(rt, feed: dict):
    """``(fn, time_one, timing)``: one call of the engine on ``feed`` already in place, and how a sample of it
    is taken (CUDA events on the engine's stream when it has one, else the host clock)."""
    from planner.measure.timer import cuda_event_timer

    fn = rt.bind(feed)
    stream = rt.timing_stream()
    if stream is not None:
        return fn, cuda_event_timer(stream), "cuda_events"
    return fn, None, "host_clock"


def do_confirm(job: "ConfirmJob") -> dict:
    """Re-measure one finished trial's deployment in rounds the parent interleaves with other candidates'.

    The engine is rebuilt from the trial's config (transforms come from the cache; TVM reuses its tuning
    records and tunes no further), then for each round ``r`` the worker waits for ``GATE/go-r``, runs the
    target's full latency protocol and writes ``GATE/round-r.json``.  The parent pauses every other
    candidate while one measures, so the rounds see the same machine state in turn."""
    from planner.measure.timer import measure

    os.environ["PLANNER_TUNING_SECONDS_LEFT"] = "0"  # the trial's tuning records are applied, none added
    eng = build_engine(job)
    rt, cfg, target = eng.build.runtime, eng.cfg, eng.target
    r = read_reference(job.reference)
    inputs = r["inputs"]
    n = len(next(iter(inputs.values())))
    if target.traffic is not None:  # served latency at the traffic's rate, queueing included, in each round
        lengths, laxes = _lengths(eng.src, target, inputs)
        one_round, timing = _served_round(rt, cfg, target, inputs, lengths, laxes), "served"
    else:
        feed, _ = next(batches(inputs, n, cfg.batch_size, r["axes"]))
        fn, time_one, timing = timed_call(rt, feed)

        def one_round() -> dict:
            return measure(fn, target.measurement, sync=rt.synchronize, time_one=time_one).to_dict()
    gate = Gate(job.gate)
    gate.say_ready()
    rounds = []
    for r in range(int(job.rounds)):
        gate.wait(r)
        try:
            stats = one_round()
        except CandidateFailed:
            raise
        except Exception as e:
            traceback.print_exc()
            reason = FailReason.OOM if _is_oom(e) else FailReason.CRASH
            raise CandidateFailed(reason, f"inference failed while re-measuring: {type(e).__name__}: {str(e)[:300]}") from None
        rounds.append(stats)
        gate.write_round(r, stats)
    return {"status": "ok", "rounds": rounds, "timing": timing, "build_seconds": eng.build_seconds,
            "build_info": eng.build.info}


def task_quality(spec, rt, batch_size: int, reference: str, quality: dict, mode: str) -> dict:
    """Quality from the user's evaluator (when the spec has one), else the relative form of a label
    accuracy drop (``quality_loss_mode: relative``); {} when neither applies."""
    import numpy as np

    if spec.evaluator:
        from planner.measure.evaluator import evaluator_quality, load_evaluator, make_predict, parse_metric, run_evaluator

        with np.load(reference, allow_pickle=False) as z:
            ref_metrics = {k[8:]: float(z[k]) for k in z.files if k.startswith("evalref:")}
        fn = load_evaluator(spec.evaluator)
        try:
            got = run_evaluator(fn, make_predict(rt.infer, batch_size), batch_size, f"--evaluator {spec.evaluator}")
        except Exception as e:  # on this candidate only (it passed on the fp32 model)
            raise CandidateFailed(FailReason.QUALITY, f"the evaluator failed on this deployment: {type(e).__name__}: {e}") from None
        name, goal = parse_metric(spec.evaluator_metric)
        return evaluator_quality(ref_metrics, got, name, goal, mode)
    if mode == "relative" and quality.get("accuracy_reference"):
        return {"quality_loss": max(0.0, quality["accuracy_drop"]) / quality["accuracy_reference"]}
    return {}


# how this process started: "spawn" (``python -m planner.measure.worker``) or "fork" (from the fork server,
# `planner.measure.forkserver`, which sets it in the child)
STARTED = "spawn"


def run(job: "WorkerJob") -> dict[str, Any]:
    """Run one typed job by the handler `jobs.HANDLERS` names for its kind; candidate faults become results.
    Every result says how the worker started (``worker_start``) and which heavy libraries it found already
    imported (``preimported``: a forked worker inherits them from the server)."""
    start = {"worker_start": STARTED, "preimported": [m for m in ("numpy", "torch") if m in sys.modules]}
    return {**_run(job), **start}


def _run(job: "WorkerJob") -> dict[str, Any]:
    import importlib

    from planner.measure.jobs import HANDLERS

    module, _, name = HANDLERS[job.kind][1].partition(":")
    t0 = time.perf_counter()
    try:
        res = getattr(importlib.import_module(module), name)(job)
        res["worker_seconds"] = time.perf_counter() - t0  # the parent's wall time less this: process start-up
        return res
    except ConfigError as e:
        return {"status": "config_error", "message": str(e)}
    except CandidateFailed as e:
        out = {"status": "failed", "reason": e.reason.value, "message": e.message}
        if getattr(e, "detail", None):  # e.g. where a staged distillation stopped (planner.transforms.distill)
            out["detail"] = e.detail
        return out
    except MemoryError:
        return {"status": "failed", "reason": FailReason.OOM.value, "message": "out of memory"}
    except Exception as e:  # anything else inside one candidate is that candidate's crash
        traceback.print_exc()
        return {"status": "failed", "reason": FailReason.CRASH.value, "message": f"{type(e).__name__}: {str(e)[:300]}"}


def write_result(res: dict[str, Any], path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(res, indent=2, default=json_default))
    os.replace(tmp, path)


def run_file(path: str | Path) -> int:
    """Read a ``job.json``, run it and write its result: the whole of a worker, spawned or forked."""
    from planner.measure.jobs import job_from_dict

    job = job_from_dict(json.loads(Path(path).read_text()))
    write_result(run(job), Path(job.result))
    return 0


def main(argv: list[str]) -> int:
    die_with_parent(int(os.environ.get("PLANNER_PARENT_PID", "0") or 0))
    return run_file(argv[0])


def json_default(o):
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
    except ImportError:
        pass
    return str(o)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
