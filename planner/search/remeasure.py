"""After the search: re-measure the fastest feasible trials in interleaved rounds (the winner's curse, see
`planner.select.confirm`), within what ``--timeout`` left; the front and the registry then use the confirmed
figures.  Used at the end of `planner optimize` and by `planner confirm`."""

from __future__ import annotations

import shutil
import time
from typing import Any

from planner.space import batch_sizes


def confirm(opt, study, recording) -> dict[str, Any] | None:
    """Re-measure ``study``'s fastest feasible trials for the Optimizer ``opt``; the summary, or None when there
    is nothing to re-measure (or its kind is not re-measured)."""
    from planner.measure.jobs import ConfirmJob
    from planner.select import confirm as cf

    if opt.kind.remeasure_refusal:  # e.g. decoders: TTFT/TPOT come from a workload replay, not one timed call
        return None
    points = cf.candidates(study, opt.opts.confirm_top_k)
    traffic = opt.target.traffic  # with one, each round is a load point at its rate (served latency)
    closest = not points and traffic is not None
    if closest:  # nothing served the traffic within its SLO: the closest are re-measured and shown as such
        points = cf.closest_served(study, opt.opts.confirm_top_k)
    if not points:
        return None
    rounds = opt.opts.confirm_rounds
    # with --timeout, the re-measurement fits in what the search left of it: candidates whose estimated rebuild
    # and rounds do not fit are skipped (and said so), and no rebuild or round runs past the deadline
    budget = deadline = None
    if opt.opts.timeout is not None and opt.t_start is not None:
        deadline = opt.t_start + opt.opts.timeout
        budget = deadline - time.monotonic()
    trial_s = {t.number: (t.duration.total_seconds() if t.duration else None) for t in study.get_trials(deepcopy=False)}
    costs = {p.number: cf.estimated_seconds(p, trial_s.get(p.number), rounds, opt.target.measurement.warmup_seconds,
                                            traffic) for p in points}
    chosen, skipped = cf.fit_budget(points, costs, budget)
    for n, why in skipped.items():
        opt.reporter.confirming(f"not re-measuring #{n}: {why}")
    if chosen:
        which = (f"no trial served {traffic.describe()} within its SLO: re-measuring the {len(chosen)} closest" if closest
                 else f"re-measuring the {len(chosen)} fastest feasible trials")
        opt.reporter.confirming(f"{which} ({', '.join(f'#{p.number}' for p in chosen)}) in {rounds} interleaved rounds")
    root = opt.study_dir / "confirm"
    model_hash = (opt.model_info or {}).get("model_hash")  # None in `planner confirm` (no prepare ran)

    def make_job(p):
        jobdir = root / f"{p.number:04d}"
        return ConfirmJob(spec=opt.model.to_dict(), target=opt.target.model_dump(mode="json"), config=p.config,
                          cache_dir=str(opt.home.cache), workdir=str(jobdir / "build"),
                          reference=str(opt.study_dir / "reference.npz"), rounds=rounds,
                          batch_sizes=batch_sizes(opt.space, opt.target), model_hash=model_hash), jobdir

    results = cf.run_rounds(chosen, make_job, opt.worker_env(), rounds, opt.opts.trial_timeout,
                            opt.reporter.confirming, deadline=deadline, server=opt.server) if chosen else {}
    pct, slo = ((traffic.percentile, traffic.slo_ms) if traffic is not None else
                (opt.target.constraints.latency_percentile, opt.target.constraints.latency_slo_ms))
    summary = cf.record(study, points, results, pct, rounds, slo, {str(n): why for n, why in skipped.items()},
                        served=traffic.describe() if traffic is not None else None, closest=closest)
    recording.confirmation(summary, cf.markdown(summary, points), {p.number: p.run_id for p in points})
    for p in chosen:  # the engines were only rebuilt to be timed: keep the trial's own
        shutil.rmtree(root / f"{p.number:04d}" / "build", ignore_errors=True)
    opt.reporter.confirmed(summary, cf.rows(summary, points))
    return summary


def _measured(study) -> list:
    """The study's trials a worker ran to the end (no duplicates), with their wall times."""
    from optuna.trial import TrialState

    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL))
            if t.duration is not None and t.user_attrs.get("duplicate_of") is None and t.user_attrs.get("mlflow_run_id")]


def _confirm_cost(opt, study, done: list) -> float:
    """Seconds to re-measure the current winner (the fastest feasible trial, `planner.select.confirm.
    estimated_seconds`, with a quarter more for margin); 0 when nothing is to be re-measured."""
    if opt.opts.confirm_top_k <= 0 or opt.kind.remeasure_refusal:
        return 0.0
    from planner.select import confirm as cf

    points = cf.candidates(study, 1)
    if not points:
        return 0.0
    own = next((t.duration.total_seconds() for t in done if t.number == points[0].number), None)
    cost = cf.estimated_seconds(points[0], own, opt.opts.confirm_rounds, opt.target.measurement.warmup_seconds,
                                opt.target.traffic)
    return 1.25 * (cost or 0.0)


def confirm_reserve(opt, study) -> float:
    """Seconds of --timeout a new trial may not start into (issue 28): the re-measurement of the current winner
    (`_confirm_cost`) plus a typical trial of this study (the median wall time of its measured trials), which a
    trial started now would take out of it.  0 when nothing is to be re-measured."""
    done = _measured(study)
    cost = _confirm_cost(opt, study, done)
    if not cost:
        return 0.0
    durations = sorted(t.duration.total_seconds() for t in done)
    return cost + (durations[len(durations) // 2] if durations else 0.0)


def _distill_steps(cfg) -> int:
    """The distillation steps a trial's config runs (0: none; a config dict as trials store it, or a TrialConfig)."""
    from planner.config import TrialConfig

    if isinstance(cfg, dict):
        cfg = TrialConfig.from_dict(cfg)
    return cfg.distill.steps if cfg is not None and cfg.prune.active and cfg.distill.active else 0


def _trained_by(done: list, cfg, widths: dict | None) -> int | None:
    """The number of a trial among ``done`` that distilled ``cfg``'s student to the end: a network pruned the same
    (`planner.space.pruned_network` of the model's prunable ``widths``: the student cache is keyed by the pruned
    network), the same training settings and at least as many steps, not stopped (its stages are in the student
    cache, so ``cfg`` loads its student instead of training it); None when there is none or ``cfg`` does not
    distill."""
    from dataclasses import replace

    from planner.config import TrialConfig
    from planner.space import pruned_network

    def student(c):
        return pruned_network(c.prune, widths) or c.prune, replace(c.distill, steps=0)

    if not _distill_steps(cfg):
        return None
    mine = student(cfg)
    for t in done:
        a = t.user_attrs
        if t.state.name != "COMPLETE" or not a.get("config") or a.get("distill_stopped"):
            continue
        other = TrialConfig.from_dict(a["config"])
        if _distill_steps(other) >= cfg.distill.steps and student(other) == mine:
            return t.number
    return None


def would_overrun(opt, study, cfg, elapsed: float) -> str | None:
    """Why a candidate just sampled is not started under --timeout (issue 28): the longest measured trial built
    like it (the same distillation steps, which dominate a trial's time: 0 for one that does not distill, nor for
    one whose student a measured trial already trained, `_trained_by`), with a quarter more for margin (students
    of one length took 42-64 s in one demo), would end inside the time kept to re-measure the winner.
    `confirm_reserve` judges before sampling by a typical trial; this judges the candidate itself, so a 3000-step
    student is not started 50 s before the end because most trials took 5 s, and a new engine for a student
    already trained is (a demo left OpenVINO on the seeded student unmeasured, taken for 90 s of training).
    None: start it (also when no trial like it was measured yet)."""
    if opt.opts.timeout is None:
        return None
    done = _measured(study)
    cost = _confirm_cost(opt, study, done)
    if not cost:
        return None
    trained = _trained_by(done, cfg, opt.model_info.get("prune_widths"))
    steps = 0 if trained is not None else _distill_steps(cfg)
    like = [t.duration.total_seconds() for t in done if t.user_attrs.get("config")
            and _distill_steps(t.user_attrs["config"]) == steps]
    if not like:
        return None
    left = opt.opts.timeout - elapsed
    if left - 1.25 * max(like) >= cost:
        return None
    kind = (f"its student trained by #{trained}" if trained is not None
            else f"{steps} distillation steps" if steps else "no distillation")
    return (f"not started: trials like it ({kind}) took up to {max(like):.0f} s, and {left:.0f} s of --timeout "
            f"are left, ~{cost:.0f} s of them kept to re-measure the winner")
