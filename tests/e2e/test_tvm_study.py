"""TVM inside a real study: tuning time is recorded apart from latency and bounded by the study budget."""

import pytest
from support import DATA, run_cli

from planner.paths import Home

pytest.importorskip("tvm")


def test_tvm_trials_and_study_tuning_budget(tmp_path):
    import optuna
    from optuna.trial import TrialState

    home = Home(tmp_path / "home")
    space = tmp_path / "space.yaml"
    space.write_text("name: tvm-small\nbatch_size: [2]\nbackends:\n  tvm:\n    tuning_trials: [0, 4]\n")
    r = run_cli("optimize", "--model", "tiny-mlp", "--target", DATA / "fast-cpu.yaml", "--space", space, "--trials", "2",
                "--sampler", "grid", "--eval-samples", "6", "--study", "t", "--tvm-tuning-budget", "0", "--home", home.root)
    assert r.returncode == 0, r.stderr
    study = optuna.load_study(study_name="t", storage=home.optuna_url)
    done = {t.user_attrs["config"]["backend_options"]["tuning_trials"]: t for t in study.trials if t.state == TrialState.COMPLETE}
    assert set(done) == {0, 4}, [(t.state, t.user_attrs.get("fail_message")) for t in study.trials]
    for t in done.values():
        m = t.user_attrs["metrics"]
        assert m["quality_loss"] < 1e-6  # fp32 TVM matches the eager reference
        assert m["latency_ms"] > 0 and "build.tuning_seconds" in m
    assert done[4].user_attrs["metrics"]["build.tuning_trials_done"] == 0  # the study budget (0 s) allowed no tuning
