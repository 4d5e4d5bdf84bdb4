"""The orchestrator: spec -> space -> config -> (worker: transform, compile, measure) -> record -> select.

Only this module and the CLI meet every stage.  Optuna storage is the source
of truth (resumable); MLflow observes; every candidate runs in its own worker
process so that a crash, hang or OOM is one failed trial, never a dead study.
"""

from __future__ import annotations

import os
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from planner.config import TrialConfig
from planner.errors import ConfigError, FailReason
from planner.model import ModelSpec
from planner.paths import Home, safe_name
from planner.record.objectives import Objective, parse_objectives
from planner.search.samplers import SAMPLERS, make_sampler
from planner.search.storage import Heartbeat, make_storage, pid_alive, study_progress
from planner.space import SearchSpace, batch_sizes, sample, usable_backends
from planner.target import Target, check_host



@dataclass(frozen=True)
class StudyOptions:
    trials: int = 20  # candidates this process measures (a proposal answered from the study as a duplicate is free)
    study_trials: int | None = None  # stop once the study holds this many finished trials, all workers counted
    timeout: float | None = None  # seconds for the whole study
    trial_timeout: float = 900.0  # seconds per candidate (compile + measure)
    study_name: str | None = None
    storage: str | None = None
    tracking_uri: str | None = None
    sampler: str = "tpe"
    seed: int | None = 0
    objectives: tuple[str, ...] | None = None  # default: latency,quality (ttft,tpot,quality with a workload)
    eval_samples: int = 32
    early_exit_factor: float | None = 20.0  # stop measuring a candidate this many times slower than the best at its batch
    allow_mismatch: bool = False
    max_duplicates: int = 25  # consecutive already-measured suggestions before we call the space exhausted
    heartbeat_seconds: int = 30  # trials whose worker stops beating for 3 intervals are failed by other workers
    retries: int = 0  # re-run a trial that went stale (its worker died) this many times
    compile_workers: int = 1  # candidates compiled at once; measurement stays one at a time (others paused)
    tuning_budget_seconds: float | None = None  # total auto-tuning (TVM MetaSchedule) time for the study
    confirm_top_k: int = 3  # after the loop, re-measure the k fastest feasible trials (0: off; planner.select.confirm)
    confirm_rounds: int = 3  # interleaved rounds of that re-measurement


@dataclass
class TrialOutcome:
    number: int
    config: TrialConfig | None
    status: str  # ok | infeasible | failed | duplicate
    reason: str | None = None
    message: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    run_id: str | None = None


@dataclass
class StudyResult:
    study_name: str
    storage: str
    tracking_uri: str
    experiment: str
    parent_run_id: str | None
    outcomes: list[TrialOutcome]
    front: list  # list[select.pareto.Point]
    home: Path
    stopped_because: str = ""


class Reporter(Protocol):
    def start(self, study_name: str, total: int, info: dict[str, Any]) -> None: ...
    def trial_started(self, number: int, cfg: TrialConfig) -> None: ...
    def trial_done(self, outcome: TrialOutcome) -> None: ...
    def confirming(self, message: str) -> None: ...
    def confirmed(self, summary: dict[str, Any], rows: list[dict[str, Any]]) -> None: ...
    def end(self, result: StudyResult) -> None: ...


class SilentReporter:
    def start(self, study_name, total, info): pass
    def trial_started(self, number, cfg): pass
    def trial_done(self, outcome): pass
    def confirming(self, message): pass
    def confirmed(self, summary, rows): pass
    def end(self, result): pass


def default_study_name(model: ModelSpec, target: Target, space: SearchSpace) -> str:
    return f"{model.name}-{target.name}-{space.name}"


@dataclass
class _Flight:
    """A trial whose worker is running."""

    trial: Any
    cfg: TrialConfig
    key: str
    run_id: str
    workdir: Path
    job: Any  # planner.measure.runner.WorkerProcess
    beat: "Heartbeat"
    measuring: bool = False
    timed_out: bool = False

    def finished(self, timeout: float) -> bool:
        if self.job.poll() is not None:
            return True
        if self.job.active_seconds() > timeout:
            self.timed_out = True
            return True
        return False


def early_exit_bound(points, batch_size: int, factor: float | None) -> float | None:
    """The median (ms per batch) a candidate's first settled samples may not exceed before it is cut as
    hopeless: ``factor`` × the best feasible p50 at the candidate's own batch size, the deployments it has to
    beat to matter.  A point at another batch size is no yardstick: scaling its per-sample time to this batch
    cut a b=1 candidate that had the lowest latency of the study because a b=32 trial had a better time per
    sample.  None (measure it in full) until the study has a feasible trial at this batch size."""
    if not factor:
        return None
    best = [p.metrics["latency_p50_ms"] for p in points
            if int(p.config.get("batch_size", 0)) == batch_size and p.metrics.get("latency_p50_ms")]
    return min(best) * factor if best else None


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
        if options.sampler not in SAMPLERS:
            make_sampler(options.sampler, None, 1)  # raises ConfigError
        if options.trials < 1:
            raise ConfigError(f"--trials {options.trials}: must be ≥ 1")
        if options.study_trials is not None and options.study_trials < 1:
            raise ConfigError(f"--study-trials {options.study_trials}: must be ≥ 1")
        if options.timeout is not None and options.timeout <= 0:
            raise ConfigError(f"--timeout {options.timeout}: must be > 0 seconds")
        if options.trial_timeout <= 0:
            raise ConfigError(f"--trial-timeout {options.trial_timeout}: must be > 0 seconds")
        if options.confirm_top_k < 0:
            raise ConfigError(f"--confirm {options.confirm_top_k}: must be ≥ 0 (0 turns the re-measurement off)")
        if options.confirm_rounds < 1:
            raise ConfigError(f"--confirm-rounds {options.confirm_rounds}: must be ≥ 1")
        self.study_name = options.study_name or default_study_name(model, target, space) + self.kind.name_suffix
        self.storage_url = options.storage or home.optuna_url
        self.tracking_uri = options.tracking_uri or home.tracking_uri
        self.experiment = f"planner/{model.name}/{target.name}"
        self.study_dir = home.study_dir(self.study_name)
        self.seeds_queued = 0  # seed configs this run enqueued into a new study (`_enqueue_seeds`)
        self._t_start: float | None = None  # when `run` started its trial loop (`--timeout` counts from there)
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
        """Load the model in a worker and compute the fp32 reference; user errors surface as ConfigError."""
        from planner.measure.runner import run_job

        self.home.cache.mkdir(parents=True, exist_ok=True)
        staging = self.home.root / "staging" / f"{safe_name(self.study_name)}-{os.getpid()}"
        ref = staging / "reference.npz"
        common = dict(spec=self.model.to_dict(), target=self.target.model_dump(mode="json"),
                      cache_dir=str(self.home.cache), reference=str(ref), eval_samples=self.opts.eval_samples)
        job = self.kind.prepare_job(**common)
        env = self.worker_env()
        res = run_job(job, staging, self.opts.trial_timeout, env, server=self._server)
        if res["status"] == "failed" and res.get("reason") in (FailReason.CRASH.value, FailReason.OOM.value) \
                and self.kind.reference_batch_fallback:
            # some models (exported, stateful) only run at batch 1 and kill their process at a larger one: the
            # reference is computed at batch 1 then, and each b > 1 candidate fails as its own trial
            first = res
            res = run_job(replace(job, reference_batch=1), staging, self.opts.trial_timeout, env, server=self._server)
            if res["status"] == "ok":
                import sys

                print(f"note: model {self.model.ref} failed at the reference batch ({first.get('reason')}: "
                      f"{first.get('message')}); its fp32 reference was computed at batch 1", file=sys.stderr)
                res["reference_fallback"] = f"{first.get('reason')}: {first.get('message')}"
        if res["status"] == "config_error":
            _rmtree(staging)
            raise ConfigError(res["message"].splitlines())
        if res["status"] != "ok":
            tail = (res.get("log_tail") or "").strip().splitlines()[-1:] or [""]
            _rmtree(staging)
            raise ConfigError(f"model {self.model.ref}: could not be loaded and run in fp32 ({res.get('reason')}: {res.get('message')}) {tail[0]}")
        self.model_info = res
        self._staging = staging
        return res

    def install_reference(self) -> None:
        """Move the staged fp32 reference into the study folder (once storage and tracking are known good)."""
        self.study_dir.mkdir(parents=True, exist_ok=True)
        os.replace(self._staging / "reference.npz", self.study_dir / "reference.npz")
        _rmtree(self._staging)

    def connect_storage(self):
        """Reach the Optuna storage (creates no study)."""
        return make_storage(self.storage_url, self.opts.heartbeat_seconds, self.opts.retries)

    def open_study(self, storage):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        try:
            study = optuna.create_study(
                study_name=self.study_name, storage=storage, load_if_exists=True,
                directions=[o.direction for o in self.objectives],
                sampler=make_sampler(self.opts.sampler, self.opts.seed, len(self.objectives)),
            )
        except ConfigError:
            raise
        except ValueError as e:  # e.g. directions differ from the stored study
            raise ConfigError(f"--study {self.study_name}: {e}") from None
        attrs = study.user_attrs
        mine = {"model": self.model.ref, "model_hash": self.model_info["model_hash"], "target": self.target.name,
                "space": self.space.name, "objectives": [o.name for o in self.objectives],
                "workload": self.kind.workload.name if self.kind.workload is not None else None,
                # served and single-request latencies are different objectives: one study holds one kind
                "traffic": self.target.traffic.describe() if self.target.traffic is not None else None}
        if attrs.get("model_hash"):
            for k in ("model_hash", "target", "space", "objectives", "workload", "traffic"):
                if attrs.get(k) != mine[k]:
                    raise ConfigError(
                        f"--study {self.study_name}: exists with {k}={attrs.get(k)!r}, but this run has {mine[k]!r}; "
                        "choose another --study name to start a new study"
                    )
        else:
            for k, v in mine.items():
                study.set_user_attr(k, v)
            study.set_user_attr("sampler", self.opts.sampler)  # what joining workers use
            study.set_user_attr("model_spec", self.model.to_dict())
            study.set_user_attr("target_spec", self.target.model_dump(mode="json"))
            study.set_user_attr("space_spec", self.space.model_dump(mode="json"))
            for k, v in self.kind.study_attrs().items():
                study.set_user_attr(k, v)
            study.set_user_attr("model_info", {k: v for k, v in self.model_info.items() if k != "status"})
            from planner.select.pareto import noise_floor_for  # quality losses below it are ties (issue 19)

            study.set_user_attr("quality_noise_floor", noise_floor_for(self.model_info.get("output_kind")))
            study.set_metric_names([o.metric for o in self.objectives])
            self._enqueue_seeds(study)
        self._fail_orphans(study)
        optuna.storages.fail_stale_trials(study)
        return study

    def _enqueue_seeds(self, study) -> None:
        """The space's seeds become the new study's first trials (Optuna's enqueue_trial), in order; those this
        target or model cannot run are left out and listed as the study attr ``seeds_skipped``."""
        if not self.space.seeds or self.opts.sampler == "grid":  # grid measures every point anyway
            return
        from planner.space import seed_params

        fmt = self.model_info.get("format", "torch")
        backends, _ = usable_backends(self.space, self.target, fmt)
        skipped = []
        for i, seed in enumerate(self.space.seeds):
            params, why = seed_params(seed, self.space, self.target, fmt, backends)
            if params is None:
                skipped.append(f"seeds[{i}]: {why}")
                continue
            study.enqueue_trial(params, user_attrs={"seed": i}, skip_if_exists=True)
            self.seeds_queued += 1
        if skipped:
            study.set_user_attr("seeds_skipped", skipped)

    def _fail_orphans(self, study) -> None:
        """Trials left RUNNING by a dead process of this host are failed, so resume neither loses nor repeats work."""
        from optuna.trial import TrialState

        host = socket.gethostname()
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            pid = t.user_attrs.get("pid")
            if t.user_attrs.get("host") == host and pid and not pid_alive(int(pid)):
                study._storage.set_trial_user_attr(t._trial_id, "fail_reason", "interrupted")
                study._storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)

    def connect_recorder(self):
        """Reach the MLflow store (creates no run)."""
        from planner.record.mlflow import MlflowRecorder

        return MlflowRecorder(self.tracking_uri, self.experiment, self.home.artifacts if self.opts.tracking_uri is None else None)

    def start_recording(self, study, rec):
        snap = self.study_dir / "inputs"
        snap.mkdir(parents=True, exist_ok=True)
        (snap / "target.yaml").write_text(self.target.to_yaml())
        import yaml

        (snap / "search_space.yaml").write_text(yaml.safe_dump(self.space.model_dump(mode="json", exclude_none=True), sort_keys=False))
        files = [snap / "target.yaml", snap / "search_space.yaml"]
        params = {
            "study": self.study_name, "model": self.model.ref, "model_hash": self.model_info["model_hash"],
            "target": self.target.name, "search_space": self.space.name, "sampler": self.opts.sampler,
            "objectives": ",".join(o.name for o in self.objectives), "latency_percentile": self.target.constraints.latency_percentile,
            "max_quality_loss": self.target.constraints.max_quality_loss, "latency_slo_ms": self.target.constraints.latency_slo_ms,
            "synthetic_data": self.model_info.get("synthetic_data"), "param_count": self.model_info.get("param_count"),
        }
        tags = {"planner.study": self.study_name, "planner.model": self.model.name, "planner.target": self.target.name,
                "planner.data": "synthetic" if self.model_info.get("synthetic_data") else "user"}
        if self.target.traffic is not None:  # the latency of this study is served latency under this traffic
            tr = self.target.traffic
            params.update({"traffic": tr.describe(), "traffic.percentile": tr.percentile, "traffic.slo_ms": tr.slo_ms})
            tags["planner.traffic"] = tr.describe()
        parent = rec.start_study(self.study_name, study.user_attrs.get("mlflow_parent_run_id"), tags, params, files)
        if study.user_attrs.get("mlflow_parent_run_id") != parent:
            study.set_user_attr("mlflow_parent_run_id", parent)
        study.set_user_attr("mlflow_experiment", self.experiment)
        rec.close_dangling(keep=self._trial_numbers(study, "RUNNING"), lost=self._trial_numbers(study, "FAIL"))
        return rec

    @staticmethod
    def _trial_numbers(study, state: str) -> set[int]:
        """Numbers of the study's trials in ``state``: RUNNING ones belong to live workers (their MLflow runs
        stay open); a run still open for a FAILED trial lost its worker (killed, or failed as stale or orphaned
        by `open_study` before this worker's recorder existed)."""
        from optuna.trial import TrialState

        return {t.number for t in study.get_trials(deepcopy=False, states=(TrialState[state],))}

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
        self.prepare()
        try:
            storage = self.connect_storage()
            rec = self.connect_recorder()
            study = self.open_study(storage)
        except BaseException:
            _rmtree(self._staging)
            raise
        self.install_reference()
        self.start_recording(study, rec)
        seen = self._seen(study)
        fmt = self.model_info.get("format", "torch")
        outcomes: list[TrialOutcome] = []
        total = self.opts.trials
        if self.opts.study_trials is not None:
            total = min(total, max(0, self.opts.study_trials - study_progress(study)[0]))
        self.reporter.start(self.study_name, total, {
            "backends": backends, "skipped": self.skipped, "experiment": self.experiment,
            "model_info": self.model_info, "seeds_queued": self.seeds_queued,
            # trials of earlier runs; the seeds this run queued (Optuna WAITING trials) are not among them
            "resumed": sum(t.state.name != "WAITING" for t in study.get_trials(deepcopy=False)),
        })
        status = "FINISHED"
        self._stopped = "trial budget reached"
        self._t_start = time.monotonic()  # --timeout counts from here: the trial loop and the re-measurement
        try:
            self._loop(study, rec, backends, fmt, seen, outcomes)
            if self.opts.confirm_top_k > 0 and self.target.traffic is not None:
                # the re-measurement repeats the single-request protocol; served figures are not re-measured
                self.reporter.confirming("not re-measuring: the target declares traffic (served latency is measured "
                                         "once per trial)")
            elif self.opts.confirm_top_k > 0:
                try:
                    self.confirm(study, rec)
                except Exception as e:  # a planner fault here must not cost the study: its own figures stand
                    import sys

                    print(f"warning: could not re-measure the fastest trials ({type(e).__name__}: {e}); "
                          "the front uses the study's own measurements", file=sys.stderr)
        except KeyboardInterrupt:
            status = "KILLED"
            self._stopped = "interrupted"
            raise
        finally:
            result = self._finish(study, rec, outcomes, self._stopped, status)
        self.reporter.end(result)
        return result

    def _loop(self, study, rec, backends, fmt, seen, outcomes: list[TrialOutcome]) -> None:
        """Keep up to ``compile_workers`` candidates in flight; exactly one measures at a time, the others
        (compiling, or compiled and waiting) are paused while it does, so timings are not disturbed."""
        t_start, dup_run, asked = self._t_start, 0, 0
        inflight: list[_Flight] = []
        slots = max(1, self.opts.compile_workers)
        stop_asking = False
        goal = self.opts.study_trials

        def done(out: TrialOutcome) -> None:
            nonlocal dup_run, stop_asking, asked
            outcomes.append(out)
            self.reporter.trial_done(out)
            dup_run = dup_run + 1 if out.status == "duplicate" else 0
            if out.status == "duplicate":  # answered from the study: it costs no measurement, so no trial of --trials
                asked -= 1
            if getattr(study.sampler, "exhausted", False):
                self._stopped, stop_asking = "search space exhausted (every combination measured)", True
            elif dup_run >= self.opts.max_duplicates:
                self._stopped = f"search space exhausted ({dup_run} suggestions in a row were already measured)"
                stop_asking = True

        try:
            while True:
                waiting = False  # the study's goal is covered by trials in flight elsewhere, which may yet fail
                while not stop_asking and len(inflight) < slots and asked < self.opts.trials:
                    if self.opts.timeout is not None and time.monotonic() - t_start > self.opts.timeout:
                        self._stopped, stop_asking = f"study timeout ({self.opts.timeout:.0f} s) reached", True
                        break
                    if goal is not None:
                        self._fail_stale(study, rec)
                        finished, running = study_progress(study)
                        if finished >= goal:
                            self._stopped, stop_asking = f"the study holds {finished} finished trials (--study-trials {goal})", True
                            break
                        if finished + running >= goal:
                            waiting = True
                            break
                    asked += 1
                    got = self._launch(study, rec, backends, fmt, seen, {f.key for f in inflight}, gated=slots > 1)
                    if got is None:  # surplus: another worker asked for the study's last trial first
                        asked -= 1
                        waiting = True
                        break
                    if isinstance(got, TrialOutcome):
                        done(got)
                    else:
                        inflight.append(got)
                if not inflight:
                    if waiting and not stop_asking:
                        time.sleep(1.0)
                        continue
                    break
                self._schedule(inflight)
                for f in [f for f in inflight if f.finished(self.opts.trial_timeout)]:
                    inflight.remove(f)
                    res = f.job.collect(timed_out=self.opts.trial_timeout if f.timed_out else None)
                    if f.measuring:
                        for other in inflight:
                            other.job.resume()
                    done(self._complete(study, rec, f, res, seen))
                if inflight:
                    time.sleep(0.01 if slots > 1 else 0.05)
        except BaseException as e:
            for f in inflight:  # Ctrl-C or a planner bug: no orphan workers, no trial left RUNNING
                f.job.kill()
                self._abandon(study, rec, f, e)
            raise

    @staticmethod
    def _schedule(inflight: list["_Flight"]) -> None:
        """Give the measurement turn to the oldest compiled candidate; pause every other worker meanwhile."""
        turn = next((f for f in inflight if f.measuring), None)
        if turn is None:
            turn = next((f for f in inflight if f.job.ready), None)
            if turn is None:
                return
            turn.measuring = True
            turn.job.resume()
            turn.job.go()
        for other in inflight:
            if other is not turn:
                other.job.pause()

    def _seen(self, study) -> dict[str, Any]:
        from optuna.trial import TrialState

        return {
            t.user_attrs["config_key"]: t
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if "config_key" in t.user_attrs and t.user_attrs.get("duplicate_of") is None
        }

    @staticmethod
    def _tuning_spent(study) -> float:
        """Auto-tuning seconds already spent by this study's trials (all workers, resumed runs included)."""
        return sum(float((t.user_attrs.get("metrics") or {}).get("build.tuning_seconds", 0.0))
                   for t in study.get_trials(deepcopy=False) if t.user_attrs.get("duplicate_of") is None)

    def _launch(self, study, rec, backends, fmt, seen, inflight_keys: set[str], gated: bool):
        """Ask a trial, sample its config, and start its worker; a known config returns an outcome at once."""
        from optuna.trial import TrialState

        if self.opts.study_trials is None:  # with a study goal the loop has just done it, before counting
            self._fail_stale(study, rec)
        seen.update(self._seen(study))  # configs other workers measured meanwhile are not measured again
        trial = study.ask()
        if self.opts.study_trials is not None:
            finished, running = study_progress(study, before=trial.number)
            if finished + running >= self.opts.study_trials:  # lost the race for the last slot: give it back
                trial.set_user_attr("surplus", True)
                study.tell(trial, state=TrialState.PRUNED)
                return None
        beat = Heartbeat(study, trial).__enter__()
        try:
            return self._start(study, trial, rec, backends, fmt, seen, inflight_keys, gated, beat)
        except BaseException as e:  # a planner bug or Ctrl-C: never leave the Optuna trial RUNNING
            beat.__exit__()
            self._fail_running(study, trial, e)
            raise

    @staticmethod
    def _fail_stale(study, rec) -> None:
        """Fail the trials of workers that stopped beating (died elsewhere) and close their MLflow runs."""
        import optuna
        from optuna.trial import TrialState

        running = {t.number: t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
        if not running:
            return
        optuna.storages.fail_stale_trials(study)
        for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
            run_id = running[t.number].user_attrs.get("mlflow_run_id") if t.number in running else None
            if run_id:
                try:
                    if rec.client.get_run(run_id).info.status == "RUNNING":
                        rec.client.set_tag(run_id, "planner.status", "worker_lost")
                        rec.client.set_terminated(run_id, status="FAILED")
                except Exception:  # recording the loss must not stop this worker
                    pass

    @staticmethod
    def _fail_running(study, trial, e: BaseException) -> None:
        from optuna.trial import TrialState

        if study._storage.get_trial(trial._trial_id).state == TrialState.RUNNING:
            trial.set_user_attr("fail_reason", "interrupted" if isinstance(e, KeyboardInterrupt) else "planner_error")
            trial.set_user_attr("fail_message", f"{type(e).__name__}: {e}"[:2000])
            study.tell(trial, state=TrialState.FAIL)

    def _abandon(self, study, rec, f: "_Flight", e: BaseException) -> None:
        f.beat.__exit__()
        self._fail_running(study, f.trial, e)
        try:
            rec.end_trial(f.run_id, {}, {"planner.status": "interrupted"}, None, [], ok=False)
        except Exception:
            pass

    def _start(self, study, trial, rec, backends, fmt, seen, inflight_keys, gated, beat):
        from optuna.trial import TrialState

        from planner.measure.runner import WorkerProcess

        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        cfg = sample(trial, self.space, self.target, fmt, backends)
        key = cfg.key()
        trial.set_user_attr("config_key", key)
        trial.set_user_attr("config", cfg.to_dict())
        trial.set_user_attr("label", cfg.describe())

        prev = seen.get(key)
        if prev is not None:  # measured before: reuse, do not measure again
            trial.set_user_attr("duplicate_of", prev.number)
            if prev.user_attrs.get("mlflow_run_id"):
                trial.set_user_attr("mlflow_run_id", prev.user_attrs["mlflow_run_id"])
            trial.set_user_attr("metrics", prev.user_attrs.get("metrics", {}))
            for name, v in prev.constraints.items():
                trial.set_constraint(name, v)
            study.tell(trial, prev.values)
            beat.__exit__()
            return TrialOutcome(trial.number, cfg, "duplicate", message=f"same config as trial {prev.number}",
                                metrics=prev.user_attrs.get("metrics", {}), run_id=prev.user_attrs.get("mlflow_run_id"))
        if key in inflight_keys:  # the same config is being measured right now
            trial.set_user_attr("duplicate_of", "in-flight")
            study.tell(trial, state=TrialState.PRUNED)
            beat.__exit__()
            return TrialOutcome(trial.number, cfg, "duplicate", message="same config as a trial in flight")

        why = self.kind.check(cfg)
        if why:  # rejected before compiling: no worker, no MLflow run
            trial.set_user_attr("fail_reason", FailReason.UNSUPPORTED.value)
            trial.set_user_attr("fail_message", why)
            study.tell(trial, state=TrialState.FAIL)
            beat.__exit__()
            return TrialOutcome(trial.number, cfg, "failed", reason=FailReason.UNSUPPORTED.value, message=why)

        self.reporter.trial_started(trial.number, cfg)
        run_id = rec.start_trial(trial.number, {**cfg.flat(), "config_key": key}, {
            "backend": cfg.backend, "precision": cfg.precision, "batch_size": str(cfg.batch_size),
            "planner.label": cfg.describe(), "planner.status": "running",
        })
        trial.set_user_attr("mlflow_run_id", run_id)
        workdir = self.study_dir / "trials" / f"{trial.number:04d}"
        from planner.select.pareto import feasible_points

        # under traffic the single-request time is no yardstick (more instances, fewer threads each: slower alone)
        abort = None if self.target.traffic is not None else early_exit_bound(
            feasible_points(study), cfg.batch_size, self.opts.early_exit_factor)
        common = dict(spec=self.model.to_dict(), target=self.target.model_dump(mode="json"), config=cfg.to_dict(),
                      cache_dir=str(self.home.cache), workdir=str(workdir), reference=str(self.study_dir / "reference.npz"),
                      output_kind=self.model_info.get("output_kind", "logits"), abort_above_ms=abort,
                      batch_sizes=batch_sizes(self.space, self.target),  # what an engine's optimization profile must accept
                      model_hash=self.model_info["model_hash"])  # from this run's prepare: no model build for a cached export
        job = self.kind.trial_job(**common)
        flight = _Flight(trial, cfg, key, run_id, workdir, None, beat)  # type: ignore[arg-type]
        env = self.worker_env()
        if self.opts.tuning_budget_seconds is not None:
            env["PLANNER_TUNING_SECONDS_LEFT"] = str(max(0.0, self.opts.tuning_budget_seconds - self._tuning_spent(study)))
        try:
            flight.job = WorkerProcess(job, workdir, env, gated=gated, server=self._server)
        except BaseException:
            rec.end_trial(run_id, {}, {"planner.status": "failed"}, None, [], ok=False)
            raise
        return flight

    def _complete(self, study, rec, f: "_Flight", res: dict, seen) -> TrialOutcome:
        """Record a finished worker's result in Optuna and MLflow."""
        from optuna.trial import TrialState

        trial, cfg, run_id, workdir = f.trial, f.cfg, f.run_id, f.workdir
        f.beat.__exit__()
        try:
            if res.get("status") == "ok":
                metrics, cons = self.kind.metrics(res, cfg, self.target)
                feasible = all(v <= 0 for v in cons.values())
                for name, v in cons.items():
                    trial.set_constraint(name, v)
                trial.set_user_attr("metrics", metrics)
                values = [metrics[o.metric] for o in self.objectives]
                files = list(res.get("artifacts", []))
                manifest = self._manifest(workdir, files, trial.number, cfg, metrics, res, trial.params)
                study.tell(trial, values)
                seen[f.key] = study._storage.get_trial(trial._trial_id)
                status = "ok" if feasible else "infeasible"
                violated = ",".join(k for k, v in cons.items() if v > 0)
                tags = {"planner.status": status, "planner.violated": violated} if violated else {"planner.status": status}
                rec.end_trial(run_id, metrics, tags, workdir, files + [manifest, "worker.log"], ok=True)
                return TrialOutcome(trial.number, cfg, status,
                                    reason=(FailReason.QUALITY.value if "quality" in violated else (violated or None)),
                                    message=f"violates {violated}" if violated else None, metrics=metrics, run_id=run_id)

            reason = res.get("reason", FailReason.CRASH.value) if res.get("status") == "failed" else FailReason.CRASH.value
            message = res.get("message", "")
            trial.set_user_attr("fail_reason", reason)
            trial.set_user_attr("fail_message", message[:2000])
            study.tell(trial, state=TrialState.FAIL)
            partial = {f"quality.{k}": v for k, v in (res.get("quality") or {}).items()}
            if res.get("early_exit_median_ms"):
                partial["early_exit_median_ms"] = res["early_exit_median_ms"]
            rec.end_trial(run_id, partial, {"planner.status": "failed", "planner.fail_reason": reason,
                                            "planner.fail_message": message[:4000]}, workdir, ["worker.log"], ok=False)
            return TrialOutcome(trial.number, cfg, "failed", reason=reason, message=message, run_id=run_id)
        except BaseException as e:
            self._fail_running(study, trial, e)
            raise

    def _manifest(self, workdir: Path, files: list[str], number: int, cfg: TrialConfig, metrics, res, params) -> str:
        from planner.record.manifest import build_manifest, write_manifest

        m = build_manifest(
            directory=workdir, files=files,
            model={**self.model.to_dict(), "hash": self.model_info["model_hash"], "inputs": self.model_info["inputs"],
                   "output_kind": self.model_info.get("output_kind")},
            target=self.target.model_dump(mode="json"),
            trial={"study": self.study_name, "number": number, "config": cfg.to_dict(), "params": params, "config_key": cfg.key()},
            metrics=metrics,
            backend_info={"name": cfg.backend, **(res.get("build_info") or {}),
                          **({"measured_on": res["device_info"]} if res.get("device_info") else {})},  # the GPU, CUDA
            reproduce=f"planner export --study {self.study_name} --trial {number} --out DIR",
        )
        write_manifest(workdir / "manifest.json", m)
        return "manifest.json"

    def confirm(self, study, rec) -> dict[str, Any] | None:
        """Re-measure the fastest feasible trials in interleaved rounds (the winner's curse, see
        `planner.select.confirm`); the front and the registry then use the confirmed figures."""
        from planner.measure.jobs import ConfirmJob
        from planner.select import confirm as cf

        if self.kind.remeasure_refusal:  # e.g. decoders: TTFT/TPOT come from a workload replay, not one timed call
            return None
        points = cf.candidates(study, self.opts.confirm_top_k)
        if not points:
            return None
        rounds = self.opts.confirm_rounds
        # with --timeout, the re-measurement fits in what the search left of it: candidates whose estimated rebuild
        # and rounds do not fit are skipped (and said so), and no rebuild or round runs past the deadline
        budget = deadline = None
        if self.opts.timeout is not None and self._t_start is not None:
            deadline = self._t_start + self.opts.timeout
            budget = deadline - time.monotonic()
        trial_s = {t.number: (t.duration.total_seconds() if t.duration else None) for t in study.get_trials(deepcopy=False)}
        costs = {p.number: cf.estimated_seconds(p, trial_s.get(p.number), rounds, self.target.measurement.warmup_seconds)
                 for p in points}
        chosen, skipped = cf.fit_budget(points, costs, budget)
        for n, why in skipped.items():
            self.reporter.confirming(f"not re-measuring #{n}: {why}")
        if chosen:
            self.reporter.confirming(f"re-measuring the {len(chosen)} fastest feasible trials "
                                     f"({', '.join(f'#{p.number}' for p in chosen)}) in {rounds} interleaved rounds")
        root = self.study_dir / "confirm"

        def make_job(p):
            jobdir = root / f"{p.number:04d}"
            return ConfirmJob(spec=self.model.to_dict(), target=self.target.model_dump(mode="json"), config=p.config,
                              cache_dir=str(self.home.cache), workdir=str(jobdir / "build"),
                              reference=str(self.study_dir / "reference.npz"), rounds=rounds,
                              batch_sizes=batch_sizes(self.space, self.target),
                              model_hash=getattr(self, "model_info", {}).get("model_hash")), jobdir  # None in reconfirm

        results = cf.run_rounds(chosen, make_job, self.worker_env(), rounds,
                                self.opts.trial_timeout, self.reporter.confirming, deadline=deadline,
                                server=self._server) if chosen else {}
        summary = cf.record(study, points, results, self.target.constraints.latency_percentile, rounds,
                            self.target.constraints.latency_slo_ms, {str(n): why for n, why in skipped.items()})
        try:
            rec.log_confirmation(summary, cf.markdown(summary, points), {p.number: p.run_id for p in points})
        except Exception as e:  # the study attribute is the source of truth; MLflow only shows it
            import sys

            print(f"warning: could not record the re-measurement in MLflow: {e}", file=sys.stderr)
        for p in chosen:  # the engines were only rebuilt to be timed: keep the trial's own
            _rmtree(root / f"{p.number:04d}" / "build")
        self.reporter.confirmed(summary, cf.rows(summary, points))
        return summary

    def _publish(self, study, rec, front) -> None:
        """Tag the front's runs, log its table, register it and draw the plots (MLflow)."""
        from planner.select.pareto import markdown_table, table_rows

        rec.mark_pareto({p.run_id for p in front if p.run_id}, markdown_table(front), table_rows(front))
        try:  # registry versions + aliases, plots on the parent run: warn, never fail the study
            from planner.select.registry import publish_study

            publish_study(study, rec, front, self.target, self.model.name)
        except Exception as e:
            import sys

            print(f"warning: could not register the Pareto front / log plots: {e}", file=sys.stderr)

    def reconfirm(self) -> tuple[dict[str, Any] | None, list]:
        """``planner confirm``: re-measure the fastest trials of an existing study (e.g. once all its workers
        are done) and publish its front again; returns (the confirmation or None, the front)."""
        import optuna

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
        fmt = "onnx" if self.model.kind == "onnx" else "torch"
        with self._workers(usable_backends(self.space, self.target, fmt)[0]):
            summary = self.confirm(study, rec)
        front = pareto_front(study)
        if rec.parent_run_id:
            self._publish(study, rec, front)
        return summary, front

    def _finish(self, study, rec, outcomes, stopped: str, status: str) -> StudyResult:
        from planner.select.pareto import pareto_front

        front = pareto_front(study)
        try:
            self._publish(study, rec, front)
            rec.client.set_tag(rec.parent_run_id, "planner.stopped", stopped)
            rec.finish_study(status)
        except Exception as e:  # recording the summary must not hide the study's own outcome
            import sys

            print(f"warning: could not record the Pareto summary in MLflow: {e}", file=sys.stderr)
        return StudyResult(self.study_name, self.storage_url, self.tracking_uri, self.experiment, rec.parent_run_id,
                           outcomes, front, self.home.root, stopped)


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


# fail reasons that say the worker, not the candidate, was lost: such trials are re-run, not counted


def optimize(model: ModelSpec, target: Target, space: SearchSpace, home: Home | None = None,
             options: StudyOptions | None = None, reporter: Reporter | None = None) -> StudyResult:
    """Run (or resume) a study.  Raises ConfigError for bad input before writing anything."""
    home = home or Home.resolve()
    return Optimizer(model, target, space, home, options or StudyOptions(), reporter).run()


def _rmtree(p: Path) -> None:
    import shutil

    shutil.rmtree(p, ignore_errors=True)
