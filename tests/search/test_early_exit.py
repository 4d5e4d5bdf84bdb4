"""Early exit across batch sizes: a candidate is judged against the best feasible deployment at its own batch
size, never against another batch size's time per sample (real Optuna/MLflow, the fake plugin backend)."""

import optuna
import pytest
from support import fake_backend_files, run_cli

from planner.paths import Home
from planner.search.study import early_exit_bound
from planner.select.pareto import Point, pareto_front


def _point(n, batch, p50):
    return Point(n, {"batch_size": batch}, "x", {"latency_p50_ms": p50, "latency_ms": p50, "quality_loss": 0.0}, None)


def test_bound_is_the_best_at_the_candidates_own_batch_size():
    pts = [_point(0, 32, 1.107), _point(1, 1, 0.30), _point(2, 1, 0.50)]
    assert early_exit_bound(pts, 1, 20.0) == pytest.approx(6.0)  # 20 x 0.30, not 20 x 1.107 / 32 = 0.692
    assert early_exit_bound(pts, 32, 20.0) == pytest.approx(22.14)
    assert early_exit_bound(pts, 8, 20.0) is None  # nothing measured at b=8 yet: measured in full
    assert early_exit_bound(pts, 1, None) is None and early_exit_bound([], 1, 20.0) is None


SPACE = """\
name: early-exit
batch_size: [1, 32]
backends:
  fake:
    behaviour: [steady, lucky, slow]
seeds:
  - {backend: fake, options: {behaviour: steady}, batch_size: 32}
  - {backend: fake, options: {behaviour: lucky}, batch_size: 1}
  - {backend: fake, options: {behaviour: slow}, batch_size: 1}
"""


def test_fast_batch1_candidate_is_not_cut_by_a_batch32_per_sample_time(tmp_path):
    """Seeds in order: b=32 at ~2 ms a batch (~0.06 ms a sample), then b=1 at ~0.4 ms a batch, then b=1 at ~25 ms.
    With --early-exit-factor 5 the old rule (best per-sample x batch x factor, ~0.32 ms) cut the b=1 candidate
    that has the lowest latency of the study; now it is measured and on the front, and the 25 ms b=1 one is
    cut against it."""
    space, target, env = fake_backend_files(tmp_path, SPACE)
    target.write_text(target.read_text().replace("max_batch_size: 16", "max_batch_size: 32"))
    home = Home(tmp_path / "home")
    r = run_cli("optimize", "--model", "tiny-mlp", "--target", target, "--space", space, "--trials", "3",
                "--sampler", "random", "--eval-samples", "8", "--early-exit-factor", "5", "--study", "ee",
                "--home", home.root, env=env)
    assert r.returncode == 0, r.stderr + r.stdout
    assert "queued 3 seed configs" in r.stdout and "resuming" not in r.stdout  # a new study resumes nothing
    study = optuna.load_study(study_name="ee", storage=home.optuna_url)
    b32, b1, slow = study.trials
    assert [t.user_attrs["config"]["batch_size"] for t in study.trials] == [32, 1, 1]
    assert b32.state.name == "COMPLETE" and b1.state.name == "COMPLETE", b1.user_attrs.get("fail_message")
    m32, m1 = b32.user_attrs["metrics"], b1.user_attrs["metrics"]
    assert m32["latency_per_sample_ms"] < m1["latency_per_sample_ms"]  # the b=32 trial is better per sample ...
    assert m1["latency_ms"] < m32["latency_ms"]  # ... and the b=1 one has the lowest latency
    assert {1} <= {p.number for p in pareto_front(study)}
    assert slow.state.name == "FAIL" and slow.user_attrs["fail_reason"] == "early_exit"
    assert "hopeless" in slow.user_attrs["fail_message"]

    # proposed again (here: enqueued by hand), the very config that was cut is not built again
    study.enqueue_trial(slow.params)
    r = run_cli("optimize", "--model", "tiny-mlp", "--target", target, "--space", space, "--trials", "1",
                "--sampler", "random", "--eval-samples", "8", "--early-exit-factor", "5", "--study", "ee",
                "--confirm", "0", "--home", home.root, env=env)
    assert r.returncode == 0, r.stderr + r.stdout
    again = optuna.load_study(study_name="ee", storage=home.optuna_url).trials[3]
    assert again.params == slow.params and again.state.name == "PRUNED"
    assert again.user_attrs["skip_reason"] == "hopeless" and again.user_attrs["hopeless_like"] == slow.number
    assert "this very config" in again.user_attrs["skip_message"]
