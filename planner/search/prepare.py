"""The study's first job: load the model in a worker, compute its fp32 reference, and try each pruning method of
the space once on it (issue 28), before any state is written.  A user error is a `ConfigError`."""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from planner.errors import ConfigError, FailReason
from planner.paths import safe_name

# a fp32 reference that fails so at its batch is computed again at the largest smaller batch that returns
REFERENCE_FALLBACK_REASONS = (FailReason.CRASH.value, FailReason.OOM.value, FailReason.TIMEOUT.value)


def prepare_reference(opt) -> tuple[dict[str, Any], Path, dict[str, str]]:
    """(the prepare job's result, the staging folder holding reference.npz, the pruning methods that cannot apply
    to the model -> why) for the Optimizer ``opt``."""
    from planner.measure.runner import run_job
    from planner.space import probe_ratio

    opt.home.cache.mkdir(parents=True, exist_ok=True)
    staging = opt.home.root / "staging" / f"{safe_name(opt.study_name)}-{os.getpid()}"
    common = dict(spec=opt.model.to_dict(), target=opt.target.model_dump(mode="json"), cache_dir=str(opt.home.cache),
                  reference=str(staging / "reference.npz"), eval_samples=opt.opts.eval_samples)
    probe = [m for m in opt.space.prune.methods if m != "none"]
    if probe:  # each pruning method is tried once on the model here, not once per trial (issue 28)
        common.update(prune_methods=tuple(probe), prune_ratio=probe_ratio(opt.space))
    job = opt.kind.prepare_job(**common)
    env = opt.worker_env()
    res = run_job(job, staging, opt.opts.trial_timeout, env, server=opt.server)
    if res["status"] == "failed" and res.get("reason") in REFERENCE_FALLBACK_REASONS and opt.kind.reference_batch_fallback:
        res = _largest_batch_that_returns(opt, job, res, staging, env)
    if res["status"] == "config_error":
        shutil.rmtree(staging, ignore_errors=True)
        raise ConfigError(res["message"].splitlines())
    if res["status"] != "ok":
        tail = (res.get("log_tail") or "").strip().splitlines()[-1:] or [""]
        shutil.rmtree(staging, ignore_errors=True)
        raise ConfigError(f"model {opt.model.ref}: could not be loaded and run in fp32 ({res.get('reason')}: "
                          f"{res.get('message')}) {tail[0]}")
    traffic = opt.target.traffic
    if traffic is not None and traffic.lengths == "data" and not any(
            i.get("length_axis") is not None for i in res.get("inputs") or []):
        shutil.rmtree(staging, ignore_errors=True)
        raise ConfigError(f"target {opt.target.name}: traffic.lengths: data needs a model input with a length_axis "
                          f"(token ids, a mask; see docs/targets-and-spaces.md); model {opt.model.ref} has inputs "
                          + ", ".join(i["name"] for i in res.get("inputs") or []) + "; valid: lengths: full")
    unusable = res.pop("prune_unusable", None) or {}
    return res, staging, unusable


def fallback_batches(failed: int) -> list[int]:
    """The batches a reference that failed at ``failed`` is tried at again: the powers of two below it."""
    out, b = [], 1
    while b < failed:
        out.append(b)
        b *= 2
    return out


def _largest_batch_that_returns(opt, job, first: dict, staging: Path, env: dict) -> dict:
    """Some models (exported, stateful) kill their process, or never return, above some batch (issue 29): the
    reference is computed at the largest power-of-two batch below the failed one that returns (a bisection: at most
    log2 of the batch further runs, each bounded by the trial timeout; batch 1 at worst); the study's b > that
    candidates then fail as their own trials.  ``first`` is returned when no smaller batch runs either."""
    from planner.measure.runner import run_job
    from planner.measure.worker import REFERENCE_BATCH

    failed = max(1, min(int(job.reference_batch or REFERENCE_BATCH), int(job.eval_samples)))
    sizes = fallback_batches(failed)
    best, lo, hi = None, 0, len(sizes) - 1
    while lo <= hi:
        mid = (lo + hi) // 2
        res = run_job(replace(job, reference_batch=sizes[mid]), staging, opt.opts.trial_timeout, env, server=opt.server)
        if res["status"] == "ok":
            best, lo = res, mid + 1
        elif res["status"] == "failed" and res.get("reason") in REFERENCE_FALLBACK_REASONS:
            hi = mid - 1
        else:
            return res  # a user error or a failure of another kind: reported as it is
    if best is None:
        return first
    print(f"note: model {opt.model.ref} failed at the reference batch {failed} ({first.get('reason')}: "
          f"{first.get('message')}); its fp32 reference was computed at batch {best.get('reference_batch')}, the "
          "largest that returned", file=sys.stderr)
    best["reference_fallback"] = f"{first.get('reason')}: {first.get('message')}"
    return best
