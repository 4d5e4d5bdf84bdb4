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


def confirm_reserve(opt, study) -> float:
    """Seconds of --timeout a new trial may not start into (issue 28): the estimated re-measurement of the
    current winner (the fastest feasible trial, `planner.select.confirm.estimated_seconds`, with a quarter
    more for margin) plus a typical trial of this study (the median wall time of its measured trials), which
    a trial started now would take out of it.  0 when nothing is to be re-measured."""
    if opt.opts.confirm_top_k <= 0 or opt.kind.remeasure_refusal:
        return 0.0
    from optuna.trial import TrialState

    from planner.select import confirm as cf

    points = cf.candidates(study, 1)
    if not points:
        return 0.0
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL))
            if t.duration is not None and t.user_attrs.get("duplicate_of") is None and t.user_attrs.get("mlflow_run_id")]
    durations = sorted(t.duration.total_seconds() for t in done)
    own = next((t.duration.total_seconds() for t in done if t.number == points[0].number), None)
    cost = cf.estimated_seconds(points[0], own, opt.opts.confirm_rounds, opt.target.measurement.warmup_seconds,
                                opt.target.traffic)
    typical = durations[len(durations) // 2] if durations else 0.0
    return 1.25 * (cost or 0.0) + typical
