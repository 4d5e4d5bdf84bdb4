"""The study's Optuna side through Optuna's public API only: the storage object planner made (so a trial's id
comes from `get_trial_id_from_study_id_trial_number`, never from a private attribute), the trials of dead
workers failed, what was measured already, and heartbeats."""

from __future__ import annotations

import socket
from typing import Any

from planner.search.storage import Heartbeat, pid_alive

UPLOAD_SECONDS = 600.0  # a COMPLETE trial's run still RUNNING this long after it was told lost its worker
OWNER_GRACE_SECONDS = 10.0  # an asked trial without an owner after this long lost its process (see fail_orphans)


class StudyStore:
    def __init__(self, study, storage):
        self.study, self.storage = study, storage
        self.study_id = storage.get_study_id_from_name(study.study_name)

    def trial_id(self, number: int) -> int:
        return self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)

    def frozen(self, number: int):
        """The stored trial ``number`` as Optuna holds it now (a FrozenTrial)."""
        return self.storage.get_trial(self.trial_id(number))

    def heartbeat(self, trial) -> Heartbeat:
        """A started heartbeat for ``trial`` (stop it with ``__exit__``)."""
        return Heartbeat(self.storage, self.trial_id(trial.number)).__enter__()

    def numbers(self, state: str) -> set[int]:
        """Numbers of the study's trials in ``state`` (a `TrialState` name)."""
        from optuna.trial import TrialState

        return {t.number for t in self.study.get_trials(deepcopy=False, states=(TrialState[state],))}

    def fail(self, number: int, reason: str, message: str | None = None) -> None:
        """Fail a trial another (dead) process left RUNNING, with ``reason`` as its ``fail_reason``."""
        from optuna.trial import TrialState

        tid = self.trial_id(number)
        self.storage.set_trial_user_attr(tid, "fail_reason", reason)
        if message:
            self.storage.set_trial_user_attr(tid, "fail_message", message[:2000])
        self.storage.set_trial_state_values(tid, state=TrialState.FAIL)

    def fail_orphans(self) -> None:
        """Trials left RUNNING by a dead process of this host are failed, so resume neither loses nor repeats work."""
        from optuna.trial import TrialState

        host = socket.gethostname()
        ownerless = []
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            pid = t.user_attrs.get("pid")
            if pid is None:
                ownerless.append(t)
            elif t.user_attrs.get("host") == host and not pid_alive(int(pid)):
                self.fail(t.number, "interrupted")
        for t in self._still_ownerless(ownerless):
            self.fail(t.number, "interrupted")

    def _still_ownerless(self, trials, grace: float | None = None) -> list:
        """Of RUNNING trials without an owner (``pid``), those still without one ``grace`` seconds after they
        started: their process died between Optuna's ask and its first write (a kill -9 can land there).  A live
        process writes its owner right after the ask, so a younger one is waited for, never failed."""
        import datetime
        import time

        from optuna.trial import TrialState

        grace = OWNER_GRACE_SECONDS if grace is None else grace
        left = list(trials)
        while left:
            now = datetime.datetime.now()  # Optuna stamps datetime_start in local time
            ages = [(now - t.datetime_start).total_seconds() if t.datetime_start else grace for t in left]
            if min(ages) >= grace:
                return left
            time.sleep(min(0.5, grace - min(ages)))
            fresh = [self.frozen(t.number) for t in left]
            left = [t for t in fresh if t.state == TrialState.RUNNING and t.user_attrs.get("pid") is None]
        return []

    def left_open(self, number: int | None) -> str | None:
        """How a RUNNING MLflow run of trial ``number`` is closed when a study (re)starts: None while its worker may
        be alive (the trial RUNNING; or COMPLETE, its worker uploading artifacts, unless its owner on this host is
        dead or it was told more than `UPLOAD_SECONDS` ago), ``worker_lost`` when the trial was failed (its worker died, or ends the run itself right after),
        else ``interrupted``.  Read at the moment of asking: a stale list of RUNNING trials closed a live worker's
        run that finished meanwhile."""
        import datetime

        from optuna.trial import TrialState

        if number is None:
            return "interrupted"
        try:
            t = self.frozen(number)
        except Exception:  # noqa: BLE001 -- no such trial (another study's run under this parent)
            return "interrupted"
        if t.state in (TrialState.RUNNING, TrialState.WAITING):
            return None
        if t.state == TrialState.COMPLETE:
            pid = t.user_attrs.get("pid")
            dead = t.user_attrs.get("host") == socket.gethostname() and pid and not pid_alive(int(pid))
            # on another host: no upload takes this long after the trial was told
            old = t.datetime_complete is not None and (datetime.datetime.now() - t.datetime_complete).total_seconds() > UPLOAD_SECONDS
            return "interrupted" if dead or old else None
        return "worker_lost" if t.state == TrialState.FAIL else "interrupted"

    def fail_stale(self) -> list[str]:
        """Fail the trials of workers that stopped beating (died elsewhere); the MLflow run ids they had."""
        import optuna
        from optuna.trial import TrialState

        running = {t.number: t for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
        if not running:
            return []
        optuna.storages.fail_stale_trials(self.study)
        return [running[t.number].user_attrs["mlflow_run_id"]
                for t in self.study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
                if t.number in running and running[t.number].user_attrs.get("mlflow_run_id")]

    def fail_running(self, trial, e: BaseException) -> None:
        """Never leave an Optuna trial RUNNING after a planner fault or Ctrl-C."""
        from optuna.trial import TrialState

        if self.frozen(trial.number).state == TrialState.RUNNING:
            trial.set_user_attr("fail_reason", "interrupted" if isinstance(e, KeyboardInterrupt) else "planner_error")
            trial.set_user_attr("fail_message", f"{type(e).__name__}: {e}"[:2000])
            self.study.tell(trial, state=TrialState.FAIL)

    def seen(self) -> dict[str, Any]:
        """config key -> the completed trial that measured it (duplicates left out)."""
        from optuna.trial import TrialState

        return {t.user_attrs["config_key"]: t
                for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if "config_key" in t.user_attrs and t.user_attrs.get("duplicate_of") is None}

    def tuning_spent(self) -> float:
        """Auto-tuning seconds already spent by this study's trials (all workers, resumed runs included)."""
        return sum(float((t.user_attrs.get("metrics") or {}).get("build.tuning_seconds", 0.0))
                   for t in self.study.get_trials(deepcopy=False) if t.user_attrs.get("duplicate_of") is None)


def open_study(opt, storage):
    """Create (or resume) the study of Optimizer ``opt``: checked against what an existing one was made with, its
    inputs recorded on a new one and the space's seeds queued; trials of dead processes failed."""
    import optuna

    from planner.errors import ConfigError
    from planner.search.samplers import make_sampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(
            study_name=opt.study_name, storage=storage, load_if_exists=True,
            directions=[o.direction for o in opt.objectives],
            sampler=make_sampler(opt.opts.sampler, opt.opts.seed, len(opt.objectives)),
        )
    except ConfigError:
        raise
    except ValueError as e:  # e.g. directions differ from the stored study
        raise ConfigError(f"--study {opt.study_name}: {e}") from None
    attrs = study.user_attrs
    mine = {"model": opt.model.ref, "model_hash": opt.model_info["model_hash"], "target": opt.target.name,
            "space": opt.space.name, "objectives": [o.name for o in opt.objectives],
            "workload": opt.kind.workload.name if opt.kind.workload is not None else None,
            # served and single-request latencies are different objectives: one study holds one kind
            "traffic": opt.target.traffic.describe() if opt.target.traffic is not None else None}
    if attrs.get("model_hash"):
        for k in ("model_hash", "target", "space", "objectives", "workload", "traffic"):
            if attrs.get(k) != mine[k]:
                raise ConfigError(
                    f"--study {opt.study_name}: exists with {k}={attrs.get(k)!r}, but this run has {mine[k]!r}; "
                    "choose another --study name to start a new study"
                )
        keep_prune_methods(opt, attrs)
        keep_backends(opt, study)
    else:
        for k, v in mine.items():
            study.set_user_attr(k, v)
        study.set_user_attr("sampler", opt.opts.sampler)  # what joining workers use
        study.set_user_attr("model_spec", opt.model.to_dict())
        study.set_user_attr("target_spec", opt.target.model_dump(mode="json"))
        study.set_user_attr("space_spec", opt.space.model_dump(mode="json"))
        if opt.backends is not None:
            study.set_user_attr("backends", list(opt.backends))  # the sampled choices (`keep_backends`)
        if opt.space_notes:
            study.set_user_attr("space_notes", opt.space_notes)
        for k, v in opt.kind.study_attrs().items():
            study.set_user_attr(k, v)
        study.set_user_attr("model_info", {k: v for k, v in opt.model_info.items() if k != "status"})
        from planner.select.pareto import noise_floor_for  # quality losses below it are ties (issue 19)

        study.set_user_attr("quality_noise_floor", noise_floor_for(opt.model_info.get("output_kind")))
        study.set_metric_names([o.metric for o in opt.objectives])
        enqueue_seeds(opt, study)
    StudyStore(study, storage).fail_orphans()
    optuna.storages.fail_stale_trials(study)
    return study


def keep_prune_methods(opt, attrs: dict) -> None:
    """A resumed study samples the pruning methods it was created with (its stored ``space_spec``, after that
    run's drop): Optuna refuses a categorical whose choices change within a study, and this run's prepare may drop
    a different set (or its space list others).  A stored method this run cannot use is kept among the choices
    but skipped when proposed (`Optimizer.prune_skipped`, a known-unsupported proposal: no worker); a method
    this run could use that the study was created without is not searched.  Each difference is a note."""
    stored = ((attrs.get("space_spec") or {}).get("prune") or {}).get("methods")
    now = list(opt.space.prune.methods)
    if not stored or list(stored) == now:
        return
    opt.space = opt.space.model_copy(update={"prune": opt.space.prune.model_copy(update={"methods": list(stored)})})
    _keep_stored(opt, "prune.method", stored, now, lambda m: opt.prune_unusable.get(m, "not in this run's search space"),
                 opt.prune_skipped)


def _keep_stored(opt, what: str, stored: list, now: list, why_unusable, skipped: dict) -> None:
    """What keeping a resumed study's stored choices (``stored``, not this run's ``now``) means: each stored one this
    run cannot use goes into ``skipped`` with ``why_unusable(choice)`` (its proposals are skipped, no worker); each
    difference is a note, printed and kept in the study's space notes."""
    import sys

    notes = []
    for c in stored:
        if c not in now:
            skipped[c] = why = why_unusable(c)
            notes.append(f"{what} {c} is searched by study {opt.study_name} (created with it) but not usable in this "
                         f"run ({why}); its proposals are skipped")
    for c in now:
        if c not in stored:
            notes.append(f"{what} {c} not searched: study {opt.study_name} was created without it "
                         "(a study's choices cannot change; use another --study name to search it)")
    opt.space_notes = opt.space_notes + notes
    for note in notes:
        print(f"note: {note}", file=sys.stderr)


def keep_backends(opt, study) -> None:
    """A resumed study samples the backends it was created with (its ``backends`` attribute; for a study made
    before planner stored it, the choices of its trials' ``backend`` parameter): Optuna refuses a categorical whose
    choices change, and the backends usable here change as packages are installed or removed, or as the target
    lists others.  A stored backend this run cannot use stays among the choices and its proposals are skipped as
    unsupported (no worker); one usable now that the study was created without is not searched.  Each difference is
    a note; a stored backend the space no longer lists, or none usable at all, is a one-line error."""
    if opt.backends is None:
        return
    stored = study.user_attrs.get("backends")
    if stored is None:
        dists = (t.distributions.get("backend") for t in study.get_trials(deepcopy=False))
        d = next((d for d in dists if d is not None), None)
        stored = list(d.choices) if d is not None else None
    now = list(opt.backends)
    if not stored or list(stored) == now:
        return
    from planner.errors import ConfigError

    gone = [b for b in stored if b not in opt.space.backends]
    if gone:
        raise ConfigError(f"--study {opt.study_name}: created with backends {stored}, but space '{opt.space.name}' no "
                          f"longer lists {gone}; choose another --study name to search this space")
    if not any(b in now for b in stored):
        why = "; ".join(f"{b}: {opt.skipped.get(b, 'not usable here')}" for b in stored)
        raise ConfigError(f"--study {opt.study_name}: none of the backends it was created with is usable here ({why})")
    _keep_stored(opt, "backend", stored, now, lambda b: opt.skipped.get(b, "not usable in this run"), opt.backend_skipped)
    opt.backends = list(stored)


def enqueue_seeds(opt, study) -> None:
    """The space's seeds become the new study's first trials (Optuna's enqueue_trial), in order; those this
    target or model cannot run are left out and listed as the study attr ``seeds_skipped``."""
    if not opt.space.seeds or opt.opts.sampler == "grid":  # grid measures every point anyway
        return
    from planner.space import ordered_seeds, seed_params, usable_backends

    fmt = opt.model_info.get("format", "torch")
    backends = [b for b in usable_backends(opt.space, opt.target, fmt)[0] if not opt.kind.check_backend(b)]
    skipped = []
    for i, seed in ordered_seeds(opt.space):
        params, why = seed_params(seed, opt.space, opt.target, fmt, backends)
        if params is None:
            skipped.append(f"seeds[{i}]: {why}")
            continue
        study.enqueue_trial(params, user_attrs={"seed": i}, skip_if_exists=True)
        opt.seeds_queued += 1
    if skipped:
        study.set_user_attr("seeds_skipped", skipped)
