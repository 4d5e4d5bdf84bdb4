"""--study-trials: which trials count toward a shared study's goal (real Optuna storage)."""

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
    """Real MLflow (sqlite): runs of live trials stay RUNNING, matched by trial number (a live worker's new run
    is not yet linked from its trial); a run whose Optuna trial was failed because its worker died is tagged
    worker_lost; any other run left RUNNING is tagged interrupted."""
    from planner.record.mlflow import MlflowRecorder

    rec = MlflowRecorder(f"sqlite:///{tmp_path / 'mlflow.db'}", "planner/t", tmp_path / "artifacts")
    rec.start_study("s", None, {}, {})
    live, lost, other = (rec.start_trial(i, {}, {}) for i in range(3))
    assert rec.close_dangling(keep={0}, lost={1}) == 2  # trial numbers, as tagged at run creation
    runs = {r.info.run_id: r for r in rec.child_runs()}
    assert runs[live].info.status == "RUNNING"
    assert (runs[lost].info.status, runs[lost].data.tags["planner.status"]) == ("FAILED", "worker_lost")
    assert (runs[other].info.status, runs[other].data.tags["planner.status"]) == ("FAILED", "interrupted")


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
