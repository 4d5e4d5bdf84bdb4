"""Optuna storage and worker liveness: the storage a URL names (with heartbeats for RDB storages), the heartbeat
thread of a running trial, whether a worker process lives, and how far a study shared by many workers has got."""

from __future__ import annotations

import os

from planner.errors import ConfigError

WORKER_LOSSES = frozenset({"interrupted", "planner_error"})


def study_progress(study, before: int | None = None) -> tuple[int, int]:
    """(finished, running) trials of the study, all workers counted (only trials numbered below ``before``).

    Finished: every trial that ran a worker or was answered from the study: complete (duplicates included),
    failed for a reason of the candidate, or a student staged distillation stopped (PRUNED with
    ``distill_stopped``: its worker ran, so it spent the study's budget).  Trials whose worker was lost (stale
    heartbeat, interrupt), surplus and in-flight-duplicate trials, and proposals skipped as known hopeless before
    any worker do not count."""
    from optuna.trial import TrialState

    finished = running = 0
    for t in study.get_trials(deepcopy=False):
        if before is not None and t.number >= before:
            continue
        if t.state == TrialState.COMPLETE:
            finished += 1
        elif t.state == TrialState.FAIL and t.user_attrs.get("fail_reason") and t.user_attrs["fail_reason"] not in WORKER_LOSSES:
            finished += 1
        elif t.state == TrialState.PRUNED and t.user_attrs.get("distill_stopped"):
            finished += 1
        elif t.state == TrialState.RUNNING:
            running += 1
    return finished, running


def make_storage(url: str, heartbeat_seconds: int = 30, retries: int = 0):
    """Optuna storage for a URL: RDB storages get heartbeats so a dead worker's trial is failed (and retried)."""
    import optuna

    from planner.record.mlflow import redact

    import warnings

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # our own Heartbeat thread beats for ask/tell trials (Optuna's only runs inside Study.optimize)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
    if url.startswith(("sqlite:", "postgresql", "mysql")):
        try:
            callback = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=retries) if retries > 0 else None
            return optuna.storages.RDBStorage(
                url, heartbeat_interval=heartbeat_seconds, grace_period=heartbeat_seconds * 3,
                heartbeat_stale_trial_callback=callback,
                engine_kwargs={"pool_pre_ping": True} if not url.startswith("sqlite") else None,
            )
        except ImportError as e:
            raise ConfigError(f"--storage {redact(url)}: driver missing ({e}); for PostgreSQL: pip install 'planner[postgres]'") from None
        except Exception as e:
            raise ConfigError(f"--storage {redact(url)}: cannot open the Optuna storage ({type(e).__name__}: {_first_line(e)})") from None
    try:
        return optuna.storages.get_storage(url)
    except Exception as e:
        raise ConfigError(f"--storage {redact(url)}: not a usable Optuna storage URL ({_first_line(e)}); "
                          "use sqlite:///path.db or postgresql://user@host/db") from None


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


class Heartbeat:
    """Beat for one trial in a thread while its worker runs (Optuna's own thread only runs inside optimize())."""

    def __init__(self, storage, trial_id: int):
        import threading

        self.storage, self.trial_id = storage, trial_id
        self.interval = getattr(self.storage, "get_heartbeat_interval", lambda: None)()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True) if self.interval else None

    def _run(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                self.storage.record_heartbeat(self.trial_id)
            except Exception:  # a missed beat is not fatal; the next one may succeed
                pass

    def __enter__(self):
        if self.thread is not None:
            self.storage.record_heartbeat(self.trial_id)
            self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=5)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
