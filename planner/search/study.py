"""The orchestrator: spec -> space -> config -> (worker: transform, compile, measure) -> record -> select.

Only `planner.search` and the CLI meet every stage.  This module holds the study's set-up and its loop (ask a
trial, sample, submit its job to the measurement runner, tell the result); the steps of one trial are
`planner.search.trials`, the Optuna side `planner.search.store`, MLflow `planner.search.recording` (an observer)
and the re-measurement `planner.search.remeasure`.  Optuna storage is the source of truth (resumable); every
candidate runs in its own worker process so that a crash, hang or OOM is one failed trial, never a dead study.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from planner.errors import ConfigError
from planner.model import ModelSpec
from planner.paths import Home
from planner.record.objectives import Objective, check_objectives, parse_objectives
from planner.search.outcome import Reporter, SilentReporter, StudyOptions, StudyResult, TrialOutcome
from planner.search.storage import make_storage, study_progress
from planner.search.trials import Trials, early_exit_bound
from planner.space import SearchSpace, batch_sizes, usable_backends
from planner.target import Target, check_host

__all__ = ["Optimizer", "StudyOptions", "StudyResult", "TrialOutcome", "Reporter", "SilentReporter", "optimize",
           "join_study", "default_study_name", "early_exit_bound"]


def default_study_name(model: ModelSpec, target: Target, space: SearchSpace) -> str:
    return f"{model.name}-{target.name}-{space.name}"


class Optimizer:
    """One study: set-up, the trial loop, and the final Pareto bookkeeping."""

    def __init__(self, model: ModelSpec, target: Target, space: SearchSpace, home: Home, options: StudyOptions,
                 reporter: Reporter | None = None, workload=None):
        from planner.search.kind import StudyKind

        self.model, self.target, self.opts = model, target, options
        if workload is None:
            self.kind = StudyKind()
        else:  # a decoder measured by TTFT/TPOT per its workload (planner.llm.workload.Workload)
            from planner.llm.study import DecoderKind

            self.kind = DecoderKind(workload)
        self.space = space = self.kind.space(space)
        self.home = home
        self.reporter = reporter or SilentReporter()
        self.objectives: tuple[Objective, ...] = parse_objectives(options.objectives or self.kind.default_objectives())
        check_objectives(self.objectives, target, workload)
        options.check()
        self.study_name = options.study_name or default_study_name(model, target, space) + self.kind.name_suffix
        self.storage_url = options.storage or home.optuna_url
        self.tracking_uri = options.tracking_uri or home.tracking_uri
        self.experiment = f"planner/{model.name}/{target.name}"
        self.study_dir = home.study_dir(self.study_name)
        self.space_notes: list[str] = []  # what the study's preparation left out of the space, and why
        self.prune_unusable: dict[str, str] = {}  # pruning methods this run's prepare found unusable -> why
        # methods a resumed study samples (its choices were fixed when it was created) that this run cannot use -> why
        self.prune_skipped: dict[str, str] = {}
        self.backends: list[str] | None = None  # what the study samples (`validate`; a resumed study: its own list)
        self.backend_skipped: dict[str, str] = {}  # a resumed study's backends this run cannot use -> why
        self.seeds_queued = 0  # seed configs this run enqueued into a new study (`enqueue_seeds`)
        self.model_info: dict[str, Any] | None = None  # what the prepare job found (`prepare`)
        self.t_start: float | None = None  # when `run` started its trial loop (`--timeout` counts from there)
        self._server = None  # the workers' fork server while `run`/`reconfirm` go (planner.measure.forkserver)
        self._env: dict[str, str] | None = None  # the workers' environment, fixed when the study starts

    # ------------------------------------------------------------------ set-up
    def validate(self) -> list[str]:
        """Everything checkable before any state is written.  Returns the usable backends."""
        from planner.measure.runner import start_mode

        check_host(self.target, self.opts.allow_mismatch)
        start_mode(self.target.device.kind)  # a bad PLANNER_WORKER_START
        fmt = "onnx" if self.model.kind == "onnx" else "torch"
        backends, skipped = usable_backends(self.space, self.target, fmt)
        for b in list(backends):
            why = self.kind.check_backend(b)
            if why:
                backends.remove(b)
                skipped[b] = why
        self.skipped = skipped
        self.backends = list(backends)
        if not backends:
            why = "; ".join(f"{b}: {r}" for b, r in skipped.items())
            raise ConfigError(f"search space '{self.space.name}': no backend usable on target '{self.target.name}' ({why})")

        if not batch_sizes(self.space, self.target):
            raise ConfigError(
                f"search space '{self.space.name}': batch_size values all exceed target '{self.target.name}' "
                f"max_batch_size {self.target.max_batch_size}"
            )
        return backends

    def prepare(self) -> dict[str, Any]:
        """Load the model in a worker and compute the fp32 reference (`planner.search.prepare`); user errors
        surface as ConfigError."""
        from planner.search.prepare import prepare_reference

        self.model_info, self._staging, unusable = prepare_reference(self)
        self.prune_unusable = dict(unusable)
        if unusable:  # left out of the space, with a note: they could only fail, trial after trial
            import sys

            from planner.space import drop_prune_methods

            self.space = drop_prune_methods(self.space, list(unusable))
            self.space_notes = [f"prune.methods: {m} left out for {self.model.ref}: {why}" for m, why in unusable.items()]
            for note in self.space_notes:
                print(f"note: {note}", file=sys.stderr)
        return self.model_info

    def install_reference(self) -> None:
        """Move the staged fp32 reference into the study folder (once storage and tracking are known good)."""
        self.study_dir.mkdir(parents=True, exist_ok=True)
        os.replace(self._staging / "reference.npz", self.study_dir / "reference.npz")
        _rmtree(self._staging)

    def connect_storage(self):
        """Reach the Optuna storage (creates no study)."""
        return make_storage(self.storage_url, self.opts.heartbeat_seconds, self.opts.retries)

    def open_study(self, storage):
        """Create (or resume) the Optuna study, its inputs recorded on it; the seeds queued on a new one."""
        from planner.search.store import open_study

        return open_study(self, storage)

    def connect_recorder(self):
        """Reach the MLflow store (creates no run)."""
        from planner.record.mlflow import MlflowRecorder

        return MlflowRecorder(self.tracking_uri, self.experiment, self.home.artifacts if self.opts.tracking_uri is None else None)

    def recording(self, study, rec):
        """The study's MLflow observer (`planner.search.recording.StudyRecording`)."""
        from planner.search.recording import StudyRecording

        return StudyRecording(rec, study, study_name=self.study_name, experiment=self.experiment,
                              study_dir=self.study_dir, model=self.model, target=self.target, space=self.space,
                              model_info=self.model_info or {}, sampler=self.opts.sampler, objectives=self.objectives)

    @contextmanager
    def _workers(self, backends: list[str]):
        """The study's fork server for its workers (`planner.measure.runner.start_mode`), closed when the study
        ends, however it ends (Ctrl-C, a fault): no server or worker outlives it."""
        from planner.measure.runner import open_server

        self._env = self.worker_env()
        self._server = open_server(self._env, backends, self.target.device.kind)
        try:
            yield self._server
        finally:
            if self._server is not None:
                self._server.close()
            self._server, self._env = None, None

    @property
    def server(self):
        """The study's worker fork server while it runs (None: workers are spawned)."""
        return self._server

    def worker_env(self) -> dict[str, str]:
        """The workers' environment: taken once when the study starts (what the fork server was started with;
        variables the planner process sets later, as MLflow's client settings, do not reach the workers)."""
        from planner.measure.runner import worker_env

        return dict(self._env) if self._env is not None else worker_env(self.target, self.home.cache)

    # ------------------------------------------------------------------ loop
    def run(self) -> StudyResult:
        backends = self.validate()
        self.home.ensure()
        with self._workers(backends):
            return self._run(backends)

    def _run(self, backends: list[str]) -> StudyResult:
        from planner.measure.runner import Runner
        from planner.search.store import StudyStore

        self.prepare()
        try:
            storage = self.connect_storage()
            rec = self.connect_recorder()
            study = self.open_study(storage)
        except BaseException:
            _rmtree(self._staging)
            raise
        self.install_reference()
        store = StudyStore(study, storage)
        recording = self.recording(study, rec)
        recording.start(store.left_open)
        total = self.opts.trials
        if self.opts.study_trials is not None:
            total = min(total, max(0, self.opts.study_trials - study_progress(study)[0]))
        self.reporter.start(self.study_name, total, {
            "backends": backends, "skipped": self.skipped, "experiment": self.experiment,
            "model_info": self.model_info, "seeds_queued": self.seeds_queued,
            # trials of earlier runs; the seeds this run queued (Optuna WAITING trials) are not among them
            "resumed": sum(t.state.name != "WAITING" for t in study.get_trials(deepcopy=False)),
        })
        slots = max(1, self.opts.compile_workers)
        runner = Runner(self.worker_env(), self.opts.trial_timeout, server=self._server, gated=slots > 1)
        # a resumed study samples the backends it was created with (`planner.search.store.keep_backends`)
        loop = _Loop(self, Trials(self, store, recording, runner, self.backends, self.model_info.get("format", "torch")))
        status = "FINISHED"
        self.t_start = time.monotonic()  # --timeout counts from here: the trial loop and the re-measurement
        try:
            loop.run()
            if self.opts.confirm_top_k > 0:  # with traffic, each round is a load point at the traffic's rate
                try:
                    from planner.search.remeasure import confirm

                    confirm(self, study, recording)
                except Exception as e:  # a planner fault here must not cost the study: its own figures stand
                    import sys

                    print(f"warning: could not re-measure the fastest trials ({type(e).__name__}: {e}); "
                          "the front uses the study's own measurements", file=sys.stderr)
        except KeyboardInterrupt:
            status = "KILLED"
            loop.stopped = "interrupted"
            raise
        finally:
            result = self._finish(study, recording, loop.outcomes, loop.stopped, status)
        self.reporter.end(result)
        return result

    def reconfirm(self) -> tuple[dict[str, Any] | None, list]:
        """``planner confirm``: re-measure the fastest trials of an existing study (e.g. once all its workers
        are done) and publish its front again; returns (the confirmation or None, the front)."""
        import optuna

        from planner.search.remeasure import confirm
        from planner.select.pareto import pareto_front

        check_host(self.target, self.opts.allow_mismatch)
        if self.kind.remeasure_refusal:
            raise ConfigError(f"--study {self.study_name}: {self.kind.remeasure_refusal}")
        if not (self.study_dir / "reference.npz").is_file():
            raise ConfigError(f"--study {self.study_name}: no fp32 reference at {self.study_dir / 'reference.npz'}; "
                              "run `planner confirm` with the --home the study was created in")
        study = optuna.load_study(study_name=self.study_name, storage=self.connect_storage())
        rec = self.connect_recorder()
        rec.parent_run_id = study.user_attrs.get("mlflow_parent_run_id")
        recording = self.recording(study, rec)
        fmt = "onnx" if self.model.kind == "onnx" else "torch"
        with self._workers(usable_backends(self.space, self.target, fmt)[0]):
            summary = confirm(self, study, recording)
        front = pareto_front(study)
        if rec.parent_run_id:
            recording.publish(front)
        return summary, front

    def _finish(self, study, recording, outcomes, stopped: str, status: str) -> StudyResult:
        from planner.select.pareto import pareto_front

        front = pareto_front(study)
        recording.finish(front, stopped, status)
        return StudyResult(self.study_name, self.storage_url, self.tracking_uri, self.experiment,
                           recording.parent_run_id, outcomes, front, self.home.root, stopped)


TIME_SKIPS = 3  # candidates in a row not started for want of time (`would_overrun`) before the search stops


class _Loop:
    """The trial loop: keep up to ``compile_workers`` candidates in flight (the runner measures one at a time,
    the others paused), ask for more while the budget lasts, and record each result as it comes back."""

    def __init__(self, opt: Optimizer, trials: Trials):
        self.opt, self.trials, self.runner = opt, trials, trials.runner
        self.outcomes: list[TrialOutcome] = []
        self.stopped = "trial budget reached"
        self.asked = self.dup_run = self.time_run = 0
        self.stop_asking = False
        # composites (planner.search.compose) need a pruned student and a sampler that takes queued trials
        self.composes = opt.opts.sampler != "grid" and any(m != "none" for m in opt.space.prune.methods)

    def run(self) -> None:
        slots = max(1, self.opt.opts.compile_workers)
        try:
            while True:
                waiting = self._fill(slots)
                if not len(self.runner):
                    if waiting and not self.stop_asking:
                        time.sleep(1.0)
                        continue
                    break
                for flight, res in self.runner.poll():
                    self.done(self.trials.complete(flight, res))
                if len(self.runner):
                    time.sleep(0.01 if slots > 1 else 0.05)
        except BaseException as e:
            for flight in self.runner.close():  # Ctrl-C or a planner bug: no orphan workers, no trial left RUNNING
                self.trials.abandon(flight, e)
            raise

    def _fill(self, slots: int) -> bool:
        """Launch trials until ``slots`` are in flight or the budget says stop; True when the study's goal is
        covered by trials in flight elsewhere (which may yet fail: wait, then ask again)."""
        opts, study = self.opt.opts, self.trials.store.study
        while not self.stop_asking and len(self.runner) < slots and self.asked < opts.trials:
            if opts.timeout is not None and time.monotonic() - self.opt.t_start > opts.timeout:
                self.stopped, self.stop_asking = f"study timeout ({opts.timeout:.0f} s) reached", True
                return False
            if opts.timeout is not None:
                from planner.search.remeasure import confirm_reserve

                reserve = confirm_reserve(self.opt, study)
                if reserve and opts.timeout - (time.monotonic() - self.opt.t_start) < reserve:
                    self.stopped = (f"study timeout ({opts.timeout:.0f} s): the last ~{reserve:.0f} s kept to "
                                    "re-measure the winner")
                    self.stop_asking = True
                    return False
            if opts.study_trials is not None:
                self.trials.fail_stale()
                finished, running = study_progress(study)
                if finished >= opts.study_trials:
                    self.stopped = f"the study holds {finished} finished trials (--study-trials {opts.study_trials})"
                    self.stop_asking = True
                    return False
                if finished + running >= opts.study_trials:
                    return True
            if self.composes:  # the fastest engine on the best student, once the seeds are measured
                from planner.search.compose import queue_composites

                queue_composites(study, self.opt.objectives[0], self.opt.target.constraints.max_quality_loss)
            self.asked += 1
            got = self.trials.launch({flight.key for flight, _ in self.runner.flights})
            if got is None:  # surplus: another worker asked for the study's last trial first
                self.asked -= 1
                return True
            if isinstance(got, TrialOutcome):
                self.done(got)
        return False

    def done(self, out: TrialOutcome) -> None:
        self.outcomes.append(out)
        self.opt.reporter.trial_done(out)
        free = out.status in ("duplicate", "skipped")  # answered from the study (a known config, a hopeless one)
        self.dup_run = self.dup_run + 1 if free else 0
        if free:  # it costs no measurement, so no trial of --trials
            self.asked -= 1
        # a candidate that would run into the time kept to re-measure the winner is not started; the sampler is
        # asked again (a cheaper one may fit: a demo stopped with 119 s left at a 3000-step student, where trials
        # without distillation took 5-10 s), until TIME_SKIPS in a row did not fit
        if out.reason == "time":
            self.time_run += 1
        elif not free:  # measured: the next candidate without time starts the count again
            self.time_run = 0
        if self.time_run >= TIME_SKIPS:
            self.stopped = f"study timeout ({self.opt.opts.timeout:.0f} s): {out.message}"
            self.stop_asking = True
        if getattr(self.trials.store.study.sampler, "exhausted", False):
            self.stopped, self.stop_asking = "search space exhausted (every combination measured)", True
        elif self.dup_run >= self.opt.opts.max_duplicates:
            self.stopped = (f"search space exhausted ({self.dup_run} suggestions in a row were already measured "
                            "or known hopeless)")
            self.stop_asking = True


def join_study(study_name: str, storage_url: str, home: Home, options: StudyOptions, reporter: Reporter | None = None) -> Optimizer:
    """An Optimizer for an existing study, from the specs stored in it (for extra workers on other machines)."""
    import dataclasses

    import optuna

    from planner.space import SearchSpace

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = make_storage(storage_url, options.heartbeat_seconds, options.retries)
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        names = [x.study_name for x in optuna.get_all_study_summaries(storage)]
        raise ConfigError(f"--study {study_name!r}: no such study in the storage; studies: {', '.join(names) or 'none'}") from None
    a = study.user_attrs
    if "model_spec" not in a:
        raise ConfigError(f"--study {study_name!r}: was not created by `planner optimize` (no model/target/space recorded)")
    # seed=None: workers joining one study must not all draw the same sequence
    opts = dataclasses.replace(options, study_name=study_name, storage=storage_url, objectives=tuple(a["objectives"]), seed=None,
                               sampler=a.get("sampler", options.sampler))
    workload = None
    if a.get("workload_spec"):
        from planner.llm.workload import Workload

        workload = Workload.from_dict(a["workload_spec"], f"study {study_name}")
    return Optimizer(ModelSpec.from_dict(a["model_spec"]), Target.model_validate(a["target_spec"]),
                     SearchSpace.model_validate(a["space_spec"]), home, opts, reporter, workload=workload)


def optimize(model: ModelSpec, target: Target, space: SearchSpace, home: Home | None = None,
             options: StudyOptions | None = None, reporter: Reporter | None = None) -> StudyResult:
    """Run (or resume) a study.  Raises ConfigError for bad input before writing anything."""
    home = home or Home.resolve()
    return Optimizer(model, target, space, home, options or StudyOptions(), reporter).run()


def _rmtree(p: Path) -> None:
    import shutil

    shutil.rmtree(p, ignore_errors=True)
