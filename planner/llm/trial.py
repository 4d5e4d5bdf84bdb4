"""Worker-side jobs of an LLM study: the fp32 reference (`prepare_llm`) and one trial (`run_llm_trial`).

Both run inside the isolated worker process, like `planner.measure.worker.do_prepare` /
``do_trial``, and return result dicts of the same shape, so the orchestrator's
bookkeeping keeps working:

* ``latency`` is the timer dict of the TTFT (prefill) of the prompt length with the worst
  TTFT at the workload's percentile (the longest prompt, in practice);
* ``quality`` holds ``quality_loss`` (= next-token disagreement, see `planner.llm.quality`);
* ``llm`` holds the flat TTFT/TPOT/tokens-per-second metrics (worst case over prompt
  lengths) and ``by_prompt`` (the same per prompt length); ``tpot_latency`` is the timer
  dict of the worst TPOT.

Jobs: `planner.measure.jobs.LlmPrepareJob` / `LlmTrialJob` (the worker jobs' fields plus ``workload``,
a `planner.llm.workload.Workload` as a dict).  ``abort_above_ms`` applies to the TTFT of
the shortest prompt (the first one measured).

The worker runs them for the job kinds ``llm_prepare`` and ``llm_trial`` (`planner.measure.jobs.HANDLERS`).
"""

from __future__ import annotations

import os
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from planner.errors import CandidateFailed, ConfigError, FailReason

if TYPE_CHECKING:  # pragma: no cover
    from planner.measure.jobs import LlmPrepareJob, LlmTrialJob


def _decoder_dims(module) -> dict[str, int]:
    from planner.llm.runtimes import check_is_decoder

    try:
        check_is_decoder(module)
    except CandidateFailed as e:
        raise ConfigError(e.message + "; LLM workloads need a decoder such as the zoo's gpt-mini") from None
    c = module.config
    try:
        heads, head_dim = module.cache_heads()
    except ValueError as e:
        raise ConfigError(f"model {type(module).__name__}: {e}") from None
    return {"vocab": int(c.vocab), "max_positions": int(c.max_positions), "layers": int(getattr(module, "num_layers", 0)),
            "heads": int(heads), "head_dim": int(head_dim)}


def _common(job: "LlmPrepareJob | LlmTrialJob"):
    from planner.llm.workload import Workload
    from planner.measure.worker import setup_threads
    from planner.model import ModelSpec
    from planner.source import ModelSource
    from planner.target import Target

    spec = ModelSpec.from_dict(job.spec)
    target = Target.model_validate(job.target)
    workload = Workload.from_dict(job.workload, "workload")
    setup_threads(target)
    src = ModelSource(spec, Path(job.cache_dir))
    if src.format == "onnx":
        raise ConfigError(f"model {spec.ref}: LLM workloads need a PyTorch decoder (prefill/decode API), not an ONNX file")
    return spec, target, workload, src


def prepare_llm(job: "LlmPrepareJob") -> dict[str, Any]:
    """Load the decoder, check the workload fits it, store the teacher-forced fp32 reference."""
    import numpy as np

    from planner.llm.quality import eval_tokens, reference_continuation, reference_logits

    spec, target, workload, src = _common(job)
    module = src.base_module()
    dims = _decoder_dims(module)
    workload.check_model(dims["max_positions"])
    ev = workload.eval
    p = workload.eval_prompt_length
    t0 = time.perf_counter()
    prompts = src.prompt_tokens(ev.sequences, p, ev.seed)
    if prompts is None:  # no real prompts: seeded random tokens, random forced tokens
        tokens = eval_tokens(dims["vocab"], ev.sequences, p, ev.forced_tokens, ev.seed)
    else:  # real prompts, forced tokens = the reference's own greedy answer (agreement: keeps fp32's answer)
        tokens = reference_continuation(module, prompts, ev.forced_tokens)
    ref = reference_logits(module, tokens, p)
    ref_seconds = time.perf_counter() - t0
    out_path = Path(job.reference)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_suffix(".tmp.npz")
    np.savez(tmp, tokens=tokens, ref=ref, prompt_length=np.int64(p))
    os.replace(tmp, out_path)
    return {
        "status": "ok",
        "model_hash": src.model_hash(),
        "inputs": [i.to_dict() for i in src.inputs],
        "output_kind": "logits",
        "output_shape": list(ref.shape[1:]),
        "param_count": sum(p.numel() for p in module.parameters()),
        "synthetic_data": prompts is None,
        "has_labels": False,
        "format": src.format,
        "reference_seconds": ref_seconds,
        "llm": {**dims, "eval_sequences": ev.sequences, "eval_prompt_length": p, "eval_forced_tokens": ev.forced_tokens,
                "eval_prompts": "random" if prompts is None else "model"},
    }


def _strip(m: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in m.items() if not k.endswith("_stats")}


def run_llm_trial(job: "LlmTrialJob") -> dict[str, Any]:
    """Build the decoder runtime of ``job.config``, check quality, measure TTFT/TPOT per the workload."""
    import numpy as np

    from planner.config import TrialConfig
    from planner.llm.measure import measure_workload
    from planner.llm.quality import llm_quality, teacher_forced_logits
    from planner.llm.runtimes import build_decoder, cache_length, check_decoder_config
    from planner.measure.timer import EarlyExit
    from planner.measure.worker import early_exit_result, peak_memory_mb, rss_mb, runnable_backend, wait_for_turn

    spec, target, workload, src = _common(job)
    cfg = TrialConfig.from_dict(job.config)
    workdir = Path(job.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    why = check_decoder_config(cfg.backend, cfg.quant.scheme)
    if why:
        raise CandidateFailed(FailReason.UNSUPPORTED, why)
    runnable_backend(cfg, target, src.format)

    with np.load(job.reference, allow_pickle=False) as z:
        tokens, ref, p_eval = z["tokens"], z["ref"], int(z["prompt_length"])
    dims = _decoder_dims(src.base_module())
    workload.check_model(dims["max_positions"])
    cache_len = cache_length(workload.max_context, dims["max_positions"])
    shapes = sorted(set(workload.prompt_lengths) | {p_eval})

    rss0 = rss_mb()
    t0 = time.perf_counter()
    try:
        build = build_decoder(src, cfg, target, workdir, cache_len, warm=(shapes, cfg.batch_size))
    except (CandidateFailed, ConfigError):
        raise
    except MemoryError:
        raise CandidateFailed(FailReason.OOM, "out of memory while compiling") from None
    except Exception as e:
        traceback.print_exc()
        msg = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
        raise CandidateFailed(FailReason.COMPILE, f"{type(e).__name__}: {msg}") from None
    build_seconds = time.perf_counter() - t0
    rt = build.runtime
    if cfg.backend not in ("torch", "torch_compile"):  # the engine serves alone: the torch module goes
        src.release_modules()
    wait_for_turn(job.gate)  # with compile workers: measure one candidate at a time
    measured_from = time.time()

    try:
        cand = teacher_forced_logits(rt, tokens, p_eval, cfg.batch_size)
    except Exception as e:
        traceback.print_exc()
        raise CandidateFailed(FailReason.CRASH, f"decoding failed: {type(e).__name__}: {str(e)[:300]}") from None
    try:
        quality = llm_quality(ref, cand, tokens, p_eval)
    except ValueError as e:
        raise CandidateFailed(FailReason.QUALITY, str(e)) from None

    try:
        agg = measure_workload(rt, workload, cfg.batch_size, target.measurement, dims["vocab"],
                               abort_above_ms=job.abort_above_ms)
    except EarlyExit as e:
        return early_exit_result(e, quality, build)
    serving = rss_mb()  # what the process holds while it serves (the peak also counts the build)
    peak, gpu_peak = peak_memory_mb(rt)
    artifacts = [Path(p) for p in build.artifacts if Path(p).is_file()]
    llm = _strip(agg)
    llm["by_prompt"] = [_strip(m) for m in agg["by_prompt"]]
    llm["cache_len"] = cache_len
    return {
        "status": "ok",
        "latency": agg["ttft_stats"],
        "tpot_latency": agg["tpot_stats"],
        "quality": quality,
        "llm": llm,
        "compile_seconds": build.compile_seconds,
        "build_seconds": build_seconds,
        "build_info": build.info,
        "transform_info": src.transform_info,
        "artifacts": [str(p.relative_to(workdir)) if p.is_relative_to(workdir) else str(p) for p in artifacts],
        "artifact_mb": sum(p.stat().st_size for p in artifacts) / 2**20,
        "peak_rss_mb": peak,
        "model_rss_mb": max(0.0, peak - rss0),
        "serving_rss_mb": serving,
        "gpu_peak_mb": gpu_peak,
        "device": rt.device,
        "measured_window": [measured_from, time.time()],  # wall clock: quality check + TTFT/TPOT protocol
    }
