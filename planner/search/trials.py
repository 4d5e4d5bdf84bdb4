"""One trial's life in the parent: ask Optuna, sample the config, answer a config already measured from the
study, refuse one the kind rules out, else submit its job to the measurement runner; when the result comes
back, tell Optuna and close the trial's MLflow run.  `planner.search.study` drives these steps."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from planner.config import TrialConfig
from planner.errors import ConfigError, FailReason
from planner.search.compose import COMPOSED
from planner.search.outcome import TrialOutcome
from planner.space import batch_sizes, pruned_network, prunes_nothing, sample, shape_misfit


@dataclass
class Flight:
    """A trial whose worker is running."""

    trial: Any
    cfg: TrialConfig
    key: str
    run_id: str
    workdir: Path
    beat: Any  # planner.search.storage.Heartbeat


def early_exit_bound(points, batch_size: int, factor: float | None) -> float | None:
    """The median (ms per batch) a candidate's first settled samples may not exceed before it is cut as
    hopeless: ``factor`` × the best feasible p50 at the candidate's own batch size, the deployments it has to
    beat to matter.  A point at another batch size is no yardstick: scaling its per-sample time to this batch
    cut a b=1 candidate that had the lowest latency of the study because a b=32 trial had a better time per
    sample.  None (measure it in full) until the study has a feasible trial at this batch size."""
    if not factor:
        return None
    best = [p.metrics["latency_p50_ms"] for p in points
            if p.batch_size == batch_size and p.metrics.get("latency_p50_ms")]
    return min(best) * factor if best else None


def _origin(attrs: dict) -> str:
    """Who proposed a trial (the MLflow tag ``planner.origin``)."""
    if attrs.get(COMPOSED):
        c = attrs[COMPOSED]
        return f"composite of #{c['engine']} (engine) and #{c['student']} (student)"
    if attrs.get("seed") is not None:
        return f"seed {attrs['seed']}"
    return "sampler"


class Trials:
    """The steps of a trial for one study (`Optimizer` holds the study's facts and passes itself)."""

    def __init__(self, opt, store, recording, runner, backends: list[str], fmt: str):
        self.opt, self.store, self.recording, self.runner = opt, store, recording, runner
        self.backends, self.fmt = backends, fmt
        self.seen = store.seen()

    def launch(self, inflight_keys: set[str]) -> Flight | TrialOutcome | None:
        """Ask a trial, sample its config, and start its worker; a known config returns an outcome at once; None:
        the study's goal was reached by other workers while this one asked (the trial is given back)."""
        from optuna.trial import TrialState

        from planner.search.storage import study_progress

        opt, study = self.opt, self.store.study
        if opt.opts.study_trials is None:  # with a study goal the loop has just done it, before counting
            self.fail_stale()
        self.seen.update(self.store.seen())  # configs other workers measured meanwhile are not measured again
        trial = study.ask()
        # its first beat, then its owner, before anything else: a worker killed after the ask leaves a trial other
        # workers fail once its beats stop, and a resume on this host fails once its owner is dead (or, killed
        # before the owner was written, once it is `OWNER_GRACE_SECONDS` old: `StudyStore.fail_orphans`)
        beat = self.store.heartbeat(trial)
        try:
            trial.set_user_attr("host", socket.gethostname())
            trial.set_user_attr("pid", os.getpid())
            if opt.opts.study_trials is not None:
                finished, running = study_progress(study, before=trial.number)
                if finished + running >= opt.opts.study_trials:  # lost the race for the last slot: give it back
                    beat.__exit__()
                    trial.set_user_attr("surplus", True)
                    study.tell(trial, state=TrialState.PRUNED)
                    return None
            return self._start(trial, beat, inflight_keys)
        except BaseException as e:  # a planner bug or Ctrl-C: never leave the Optuna trial RUNNING
            beat.__exit__()
            self.store.fail_running(trial, e)
            raise

    def fail_stale(self) -> None:
        self.recording.workers_lost(self.store.fail_stale())

    def _start(self, trial, beat, inflight_keys: set[str]) -> Flight | TrialOutcome:
        from optuna.trial import TrialState

        opt, study = self.opt, self.store.study
        widths = opt.model_info.get("prune_widths")
        try:
            cfg = sample(trial, opt.space, opt.target, self.fmt, self.backends, widths=widths)
        except ValueError as e:  # Optuna: a parameter's choices differ from the study's (its target or space changed)
            if "dynamic value space" not in str(e) and "different distribution" not in str(e):
                raise
            raise ConfigError(f"--study {opt.study_name}: this run offers other choices for a parameter than the study was "
                              f"created with ({e}); the target '{opt.target.name}' or space '{opt.space.name}' changed "
                              "since: resume with the ones it was created with, or choose another --study name") from None
        key = cfg.key(pruned_network(cfg.prune, widths))  # a pruning that builds a measured network is a duplicate
        trial.set_user_attr("config_key", key)
        trial.set_user_attr("config", cfg.to_dict())
        trial.set_user_attr("label", cfg.describe())

        prev = self.seen.get(key)
        if prev is not None:  # measured before: reuse, do not measure again
            trial.set_user_attr("duplicate_of", prev.number)
            if prev.user_attrs.get("mlflow_run_id"):
                trial.set_user_attr("mlflow_run_id", prev.user_attrs["mlflow_run_id"])
            trial.set_user_attr("metrics", prev.user_attrs.get("metrics", {}))
            for name, v in prev.constraints.items():
                trial.set_constraint(name, v)
            study.tell(trial, prev.values)
            beat.__exit__()
            exact = "config" not in prev.user_attrs or TrialConfig.from_dict(prev.user_attrs["config"]) == cfg
            same = "same config" if exact else "prunes to the same network (otherwise the same config)"
            return TrialOutcome(trial.number, cfg, "duplicate", message=f"{same} as trial {prev.number}",
                                metrics=prev.user_attrs.get("metrics", {}), run_id=prev.user_attrs.get("mlflow_run_id"))
        if key in inflight_keys:  # the same config is being measured right now
            trial.set_user_attr("duplicate_of", "in-flight")
            study.tell(trial, state=TrialState.PRUNED)
            beat.__exit__()
            return TrialOutcome(trial.number, cfg, "duplicate", message="same config as a trial in flight")

        skip = self._known_hopeless(trial, cfg, widths)
        if skip is None and opt.opts.timeout is not None:  # it would eat the time kept to re-measure the winner
            from planner.search.remeasure import would_overrun

            why = would_overrun(opt, study, cfg, time.monotonic() - opt.t_start)
            if why:
                trial.set_user_attr("skip_reason", "time")
                trial.set_user_attr("skip_message", why)
                skip = TrialOutcome(trial.number, cfg, "skipped", reason="time", message=why)
        if skip is not None:  # known before compiling (issue 28): no worker, no MLflow run, no trial of --trials
            study.tell(trial, state=TrialState.PRUNED)
            beat.__exit__()
            return skip

        opt.reporter.trial_started(trial.number, cfg)
        run_id = self.recording.trial_started(trial.number, cfg, _origin(trial.user_attrs))
        trial.set_user_attr("mlflow_run_id", run_id)
        workdir = opt.study_dir / "trials" / f"{trial.number:04d}"
        from planner.select.pareto import feasible_points

        # under traffic the single-request time is no yardstick (more instances, fewer threads each: slower alone)
        abort = None if opt.target.traffic is not None else early_exit_bound(
            feasible_points(study), cfg.batch_size, opt.opts.early_exit_factor)
        common = dict(spec=opt.model.to_dict(), target=opt.target.model_dump(mode="json"), config=cfg.to_dict(),
                      cache_dir=str(opt.home.cache), workdir=str(workdir), reference=str(opt.study_dir / "reference.npz"),
                      output_kind=opt.model_info.get("output_kind", "logits"), abort_above_ms=abort,
                      batch_sizes=batch_sizes(opt.space, opt.target),  # what an engine's optimization profile must accept
                      model_hash=opt.model_info["model_hash"])  # from this run's prepare: no model build for a cached export
        job = opt.kind.trial_job(**common)
        flight = Flight(trial, cfg, key, run_id, workdir, beat)
        env = opt.worker_env()
        if opt.opts.tuning_budget_seconds is not None:
            env["PLANNER_TUNING_SECONDS_LEFT"] = str(max(0.0, opt.opts.tuning_budget_seconds - self.store.tuning_spent()))
        try:
            self.runner.submit(job, workdir, flight, env)
        except BaseException:
            self.recording.trial_failed(run_id, {}, "planner_error", "the worker could not start", None)
            raise
        return flight

    def _known_hopeless(self, trial, cfg: TrialConfig, widths) -> TrialOutcome | None:
        """The outcome of a candidate skipped before any worker, with the constraint the sampler learns from (the
        caller tells it PRUNED): one its kind or the pruned shapes rule out, or one a measured trial already shows
        far outside the quality bound (`planner.search.feasibility`); None: measure it."""
        why = self.opt.kind.check(cfg) or shape_misfit(cfg, widths) or prunes_nothing(cfg, widths)
        if not why and cfg.prune.method in self.opt.prune_skipped:  # a resumed study's method this run cannot use
            why = f"prune.method {cfg.prune.method}: {self.opt.prune_skipped[cfg.prune.method]}"
        if not why and cfg.backend in self.opt.backend_skipped:  # a resumed study's backend this run cannot use
            why = f"backend {cfg.backend}: {self.opt.backend_skipped[cfg.backend]}"
        if why:
            trial.set_user_attr("skip_reason", FailReason.UNSUPPORTED.value)
            trial.set_user_attr("skip_message", why)
            trial.set_constraint("supported", 1.0)  # not a region to propose
            return TrialOutcome(trial.number, cfg, "skipped", reason=FailReason.UNSUPPORTED.value, message=why)
        if self.opt.opts.sampler == "grid":  # a grid is asked for in full
            return None
        from optuna.trial import TrialState

        from planner.search.feasibility import evidence, explain, feasible_students, hopeless, slow, slow_cuts

        cuts = slow_cuts(self.store.study.get_trials(deepcopy=False, states=(TrialState.FAIL,)))
        cut = slow(cfg, cuts)
        if cut:
            if any(n == cut[0] and c.key() == cfg.key() for n, c in cuts):
                msg = (f"hopeless: trial #{cut[0]}, this very config, was cut by the early exit, many times slower than "
                       "the best at this batch size (a bound that has only tightened since)")
            else:
                msg = (f"hopeless: trials {', '.join(f'#{n}' for n in cut)} ({cfg.backend}, {cfg.quant.scheme}, batch "
                       f"{cfg.batch_size}, with other options and no less pruning) were cut by the early exit, many "
                       "times slower than the best at this batch size")
            trial.set_user_attr("hopeless_like", cut[0])
            trial.set_user_attr("skip_reason", "hopeless")
            trial.set_user_attr("skip_message", msg)
            trial.set_constraint("early_exit", 1.0)  # a region the sampler should leave
            return TrialOutcome(trial.number, cfg, "skipped", reason="hopeless", message=msg)
        if not cfg.prune.active and cfg.quant.scheme == "none":
            return None

        bound = self.opt.target.constraints.max_quality_loss
        trials = self.store.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
        e = hopeless(cfg, evidence(trials, bound), feasible_students(trials, bound))
        if e is None:
            return None
        msg = explain(e, bound)
        trial.set_user_attr("hopeless_like", e.number)
        trial.set_user_attr("skip_reason", "hopeless")
        trial.set_user_attr("skip_message", msg)
        trial.set_constraint("quality", e.loss - bound)  # the region is infeasible
        return TrialOutcome(trial.number, cfg, "skipped", reason="hopeless", message=msg)

    def complete(self, f: Flight, res: dict) -> TrialOutcome:
        """Record a finished worker's result in Optuna and MLflow."""
        from optuna.trial import TrialState

        opt, study, trial, cfg = self.opt, self.store.study, f.trial, f.cfg
        f.beat.__exit__()
        try:
            if res.get("status") == "ok":
                metrics, cons = opt.kind.metrics(res, cfg, opt.target)
                for name, v in cons.items():
                    trial.set_constraint(name, v)
                trial.set_user_attr("metrics", metrics)
                curve = (res.get("transform_info") or {}).get("distill_curve")
                if curve:  # the student's quality after each stage: evidence for shorter requests (feasibility)
                    trial.set_user_attr("distill_curve", [[int(n), float(q)] for n, q in curve])
                values = [metrics[o.metric] for o in opt.objectives]
                params = trial.params
                self.seen[f.key] = study.tell(trial, values)
                violated = ",".join(k for k, v in cons.items() if v > 0)
                self.recording.trial_measured(f.run_id, trial.number, cfg, res, metrics, violated, f.workdir, params)
                return TrialOutcome(trial.number, cfg, "infeasible" if violated else "ok",
                                    reason=(FailReason.QUALITY.value if "quality" in violated else (violated or None)),
                                    message=f"violates {violated}" if violated else None, metrics=metrics, run_id=f.run_id,
                                    composed_of=trial.user_attrs.get(COMPOSED))
            reason = res.get("reason", FailReason.CRASH.value) if res.get("status") == "failed" else FailReason.CRASH.value
            message = res.get("message", "")
            if reason == FailReason.DISTILL_STOPPED.value and res.get("detail"):
                return self._stopped_student(f, res, message)
            trial.set_user_attr("fail_reason", reason)
            trial.set_user_attr("fail_message", message[:2000])
            study.tell(trial, state=TrialState.FAIL)
            self.recording.trial_failed(f.run_id, res, reason, message, f.workdir)
            return TrialOutcome(trial.number, cfg, "failed", reason=reason, message=message, run_id=f.run_id)
        except BaseException as e:
            self.store.fail_running(trial, e)
            raise

    def _stopped_student(self, f: Flight, res: dict, message: str) -> TrialOutcome:
        """A staged distillation stopped this candidate's student (issue 28): told PRUNED, with where it stopped
        (``distill_stopped``: what later proposals are judged against, `planner.search.feasibility`) and its
        extrapolated quality violation as the constraint the sampler learns from."""
        from optuna.trial import TrialState

        d = dict(res["detail"])
        bound = self.opt.target.constraints.max_quality_loss
        f.trial.set_user_attr("distill_stopped", d)
        f.trial.set_user_attr("skip_reason", FailReason.DISTILL_STOPPED.value)
        f.trial.set_user_attr("skip_message", message[:2000])
        f.trial.set_constraint("quality", max(float(d.get("predicted_loss", 0.0)), float(d.get("quality_loss", 0.0))) - bound)
        self.store.study.tell(f.trial, state=TrialState.PRUNED)
        self.recording.trial_stopped(f.run_id, d, message, f.workdir)
        return TrialOutcome(f.trial.number, f.cfg, "stopped", reason=FailReason.DISTILL_STOPPED.value, message=message,
                            run_id=f.run_id)

    def abandon(self, f: Flight, e: BaseException) -> None:
        f.beat.__exit__()
        self.store.fail_running(f.trial, e)
        self.recording.trial_abandoned(f.run_id)
