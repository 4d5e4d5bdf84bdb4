"""Models that abort their process, or hang, above some batch: the fp32 reference falls back to the largest batch
that returns, each larger candidate is a failed trial (`crash`, `timeout`), and the study ends with its other
trials, front and registry."""

import optuna
from support import DATA, run_cli

from planner.paths import Home
from planner.select.pareto import pareto_front


def test_batch1_only_model_studies_its_batch1_deployments(tmp_path):
    home = Home(tmp_path / "home")
    space = tmp_path / "space.yaml"
    space.write_text("name: b1\nbatch_size: [1, 4]\nbackends:\n  torch: {}\n"
                     "seeds:\n  - {backend: torch, batch_size: 4}\n  - {backend: torch, batch_size: 1}\n")
    r = run_cli("optimize", "--model", f"{DATA / 'models.py'}:abort_above_batch1", "--target", DATA / "fast-cpu.yaml",
                "--space", space, "--trials", "2", "--eval-samples", "6", "--study", "b1", "--home", home.root)
    assert r.returncode == 0, r.stderr + r.stdout
    assert "its fp32 reference was computed at batch 1" in r.stderr
    study = optuna.load_study(study_name="b1", storage=home.optuna_url)
    assert study.user_attrs["model_info"]["reference_batch"] == 1
    assert "SIGABRT" in study.user_attrs["model_info"]["reference_fallback"]
    b4, b1 = study.trials
    assert b4.user_attrs["config"]["batch_size"] == 4 and b4.state.name == "FAIL"
    assert b4.user_attrs["fail_reason"] == "crash" and "SIGABRT" in b4.user_attrs["fail_message"]
    assert b1.user_attrs["config"]["batch_size"] == 1 and b1.state.name == "COMPLETE", b1.user_attrs.get("fail_message")
    assert b1.user_attrs["metrics"]["quality_loss"] < 1e-4  # measured against the batch-1 reference
    assert [p.number for p in pareto_front(study)] == [1]

    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking_uri=home.tracking_uri)
    versions = [v for m in c.search_registered_models() for v in c.search_model_versions(f"name = '{m.name}'")]
    assert [v.run_id for v in versions] == [b1.user_attrs["mlflow_run_id"]]


def test_model_that_hangs_above_a_batch_gets_its_reference_at_the_largest_batch_that_returns(tmp_path):
    """A forward that never returns at b > 2 (issue 29): the reference times out at its batch (6: the evaluation
    set) and is computed again at the largest power-of-two batch that returns (2; batch 4 hangs too); the b = 4
    candidate fails as a trial (`timeout`), the b = 2 and b = 1 ones are measured, the study ends with its front."""
    home = Home(tmp_path / "home")
    space = tmp_path / "space.yaml"
    space.write_text("name: b2\nbatch_size: [1, 2, 4]\nbackends:\n  torch: {}\n"
                     "seeds:\n  - {backend: torch, batch_size: 4}\n  - {backend: torch, batch_size: 2}\n"
                     "  - {backend: torch, batch_size: 1}\n")
    r = run_cli("optimize", "--model", f"{DATA / 'models.py'}:hang_above_batch2", "--target", DATA / "fast-cpu.yaml",
                "--space", space, "--trials", "3", "--eval-samples", "6", "--study", "hang", "--trial-timeout", "8",
                "--confirm", "0", "--home", home.root)
    assert r.returncode == 0, r.stderr + r.stdout
    assert "its fp32 reference was computed at batch 2, the largest that returned" in r.stderr
    study = optuna.load_study(study_name="hang", storage=home.optuna_url)
    assert study.user_attrs["model_info"]["reference_batch"] == 2
    assert study.user_attrs["model_info"]["reference_fallback"].startswith("timeout")
    b4, b2, b1 = study.trials
    assert b4.user_attrs["config"]["batch_size"] == 4 and b4.state.name == "FAIL"
    assert b4.user_attrs["fail_reason"] == "timeout"
    for t, b in ((b2, 2), (b1, 1)):
        assert t.user_attrs["config"]["batch_size"] == b and t.state.name == "COMPLETE", t.user_attrs.get("fail_message")
        assert t.user_attrs["metrics"]["quality_loss"] < 1e-4
    assert {p.number for p in pareto_front(study)} <= {1, 2} and pareto_front(study)


def test_fallback_batches_are_the_powers_of_two_below_the_failed_one():
    from planner.search.prepare import fallback_batches

    assert fallback_batches(8) == [1, 2, 4]
    assert fallback_batches(6) == [1, 2, 4]
    assert fallback_batches(2) == [1]
    assert fallback_batches(1) == []
