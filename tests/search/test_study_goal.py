"""--study-trials: which trials count toward a shared study's goal (real Optuna storage)."""

import subprocess
import sys

import optuna
import pytest
from optuna.trial import TrialState

from planner.search.storage import study_progress


@pytest.fixture()
def study(tmp_path):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    s = optuna.create_study(storage=f"sqlite:///{tmp_path / 'o.db'}", directions=["minimize", "minimize"])

    def add(state, **attrs):
        t = s.ask()
        for k, v in attrs.items():
            t.set_user_attr(k, v)
        if state == TrialState.COMPLETE:
            s.tell(t, [1.0, 0.0])
        elif state != TrialState.RUNNING:
            s.tell(t, state=state)
        return t

    add(TrialState.COMPLETE)                                  # 0 measured
    add(TrialState.COMPLETE, duplicate_of=0)                  # 1 a duplicate is still a finished trial
    add(TrialState.FAIL, fail_reason="compile")               # 2 the candidate failed: judged, counts
    add(TrialState.FAIL, fail_reason="interrupted")           # 3 the worker was stopped: re-run, does not count
    add(TrialState.FAIL)                                      # 4 stale heartbeat (worker died): does not count
    add(TrialState.PRUNED, surplus=True)                      # 5 surplus ask: does not count
    add(TrialState.RUNNING)                                   # 6 in flight somewhere
    add(TrialState.PRUNED, distill_stopped={"steps": 100})    # 7 a stopped student: its worker ran, counts
    add(TrialState.PRUNED, skip_reason="hopeless")            # 8 skipped before any worker: free, does not count
    return s


def test_finished_counts_judged_candidates_only(study):
    assert study_progress(study) == (4, 1)


def test_before_counts_only_earlier_trials(study):
    assert study_progress(study, before=2) == (2, 0)
    assert study_progress(study, before=7) == (3, 1)
    assert study_progress(study, before=9) == (4, 1)


def test_dangling_runs_are_closed_as_lost_or_interrupted_and_live_ones_kept(tmp_path):
    """Real MLflow and Optuna (sqlite): a run is closed by what its trial is when it is asked, not by a list read
    earlier: RUNNING trials keep their runs; a COMPLETE trial whose owner lives keeps its run (its worker is
    uploading the artifacts: closing it lost a finished trial's run in the 3-worker test), one whose owner on this
    host is dead is interrupted; a failed trial's run is worker_lost; a run of no trial is interrupted."""
    import os
    import socket

    from planner.record.mlflow import MlflowRecorder
    from planner.search.storage import make_storage
    from planner.search.store import StudyStore

    storage = make_storage(f"sqlite:///{tmp_path / 'o.db'}")
    study = optuna.create_study(storage=storage, study_name="s", directions=["minimize"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    for state, pid in ((TrialState.RUNNING, os.getpid()), (TrialState.FAIL, dead.pid),
                       (TrialState.COMPLETE, os.getpid()), (TrialState.COMPLETE, dead.pid)):
        t = study.ask()
        t.set_user_attr("host", socket.gethostname())
        t.set_user_attr("pid", pid)
        if state == TrialState.COMPLETE:
            study.tell(t, 1.0)
        elif state == TrialState.FAIL:
            study.tell(t, state=TrialState.FAIL)
    rec = MlflowRecorder(f"sqlite:///{tmp_path / 'mlflow.db'}", "planner/t", tmp_path / "artifacts")
    rec.start_study("s", None, {}, {})
    running, lost, uploading, orphaned, stray = (rec.start_trial(i, {}, {}) for i in range(5))  # 4: no such trial
    assert rec.close_dangling(StudyStore(study, storage).left_open) == 3
    runs = {r.info.run_id: r for r in rec.child_runs()}
    assert runs[running].info.status == runs[uploading].info.status == "RUNNING"
    assert (runs[lost].info.status, runs[lost].data.tags["planner.status"]) == ("FAILED", "worker_lost")
    for r in (orphaned, stray):
        assert (runs[r].info.status, runs[r].data.tags["planner.status"]) == ("FAILED", "interrupted")


def test_grid_sampling_survives_a_surplus_trial_without_params():
    """A shared study's surplus trial is told PRUNED before it samples anything; Optuna's brute force then saw a
    parameter mismatch at the root of its tree, and the next worker to ask crashed."""
    import optuna
    from optuna.trial import TrialState

    from planner.search.samplers import make_sampler

    study = optuna.create_study(sampler=make_sampler("grid", 0, 1))
    t = study.ask()
    t.suggest_categorical("b", [1, 2, 3])
    study.tell(t, 1.0)
    study.tell(study.ask(), state=TrialState.PRUNED)  # the surplus trial
    seen = {study.trials[0].params["b"]}
    for _ in range(2):
        t = study.ask()
        seen.add(t.suggest_categorical("b", [1, 2, 3]))
        study.tell(t, 1.0)
    assert seen == {1, 2, 3}  # and the grid is still walked without repeats
