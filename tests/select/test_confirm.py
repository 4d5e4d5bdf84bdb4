"""Winner's curse: the fastest trials are re-measured in interleaved rounds and the front uses those figures."""


import optuna
import pytest
from support import DATA, fake_backend_files, run_cli

from planner.paths import Home
from planner.select import confirm as cf
from planner.select.pareto import Fastest, Knee, Point, non_dominated, pareto_front

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


def _study(points, objectives=("latency", "quality")):
    """A real in-memory Optuna study with the planner's trial attributes: points are (latency, loss, feasible)."""
    from planner.record.objectives import parse_objectives

    obj = parse_objectives(objectives)
    s = optuna.create_study(directions=[o.direction for o in obj])
    s.set_user_attr("objectives", list(objectives))
    s.set_metric_names([o.metric for o in obj])
    for i, (lat, loss, feasible) in enumerate(points):
        t = s.ask()
        metrics = {"latency_ms": lat, "latency_p50_ms": lat, "latency_p99_ms": lat * 1.2, "quality_loss": loss,
                   "throughput": 1e3 / lat, "batch_size": 1}
        t.set_user_attr("metrics", metrics)
        t.set_user_attr("config", {"backend": f"b{i}", "batch_size": 1})
        t.set_user_attr("config_key", f"k{i}")
        t.set_user_attr("label", f"b{i}")
        t.set_constraint("quality", -1.0 if feasible else 1.0)
        s.tell(t, [metrics[o.metric] for o in obj])
    return s


def _confirm(study, figures: dict[int, float], slo: float | None = None):
    """Record a confirmation whose rounds all measured ``figures[n]`` ms (p50 = p90 = p99)."""
    pts = {p.number: p for p in cf.candidates(study, 10)}
    chosen = [pts[n] for n in figures]
    rounds = {n: {"status": "ok", "rounds": [{"p50_ms": v, "p90_ms": v, "p99_ms": v, "cv": 0.01}] * 3} for n, v in figures.items()}
    return cf.record(study, chosen, rounds, "p50", 3, slo)


def test_candidates_are_the_fastest_feasible_trials():
    s = _study([(3.0, 0.0, True), (1.0, 0.0, False), (2.0, 0.01, True), (2.5, 0.02, True)])
    assert [p.number for p in cf.candidates(s, 2)] == [2, 3]  # #1 is infeasible
    assert [p.number for p in cf.candidates(s, 10)] == [2, 3, 0]


def test_a_lucky_winner_loses_its_place_once_confirmed():
    # study: #0 fastest (lucky), #1 a bit slower and more accurate, #2 slowest and exact; #3 dominated by #0
    s = _study([(1.0, 0.002, True), (1.2, 0.001, True), (2.0, 0.0, True), (1.1, 0.003, True)])
    assert [p.number for p in pareto_front(s)] == [0, 1, 2]
    assert Fastest().select(pareto_front(s)).number == 0
    summary = _confirm(s, {0: 1.5, 3: 1.05, 1: 1.25})
    assert summary["trials"]["0"]["ratio_to_study"] == pytest.approx(1.5)
    front = pareto_front(s)
    # #0 (1.5 ms, 0.002) is now dominated by #1 (1.25 ms, 0.001); #3 re-measured at 1.05 ms joins the front
    assert [p.number for p in front] == [3, 1, 2]
    assert Fastest().select(front).number == 3
    f3 = front[0]
    assert f3.latency_ms == pytest.approx(1.05) and f3.metrics["study_latency_ms"] == pytest.approx(1.1)
    assert f3.metrics["throughput"] == pytest.approx(1e3 / 1.05) and f3.metrics["confirmed_rounds"] == 3
    assert "confirmed_rounds" not in front[2].metrics  # #2 was not re-measured: the study's own figure
    assert Knee().select(front) is not None


def test_a_confirmed_latency_over_the_slo_leaves_the_front():
    s = _study([(1.0, 0.0, True), (1.5, 0.0, True)])
    _confirm(s, {0: 2.5, 1: 1.6}, slo=2.0)
    assert [p.number for p in pareto_front(s)] == [1]


def test_a_failed_rebuild_keeps_the_study_figure_and_says_why():
    s = _study([(1.0, 0.0, True), (1.5, 0.0, True)])
    pts = cf.candidates(s, 2)
    summary = cf.record(s, pts, {0: {"status": "failed", "reason": "compile", "message": "boom"},
                                 1: {"status": "ok", "rounds": [{"p50_ms": 1.4, "p90_ms": 1.4, "p99_ms": 1.4, "cv": 0.0}]}},
                        "p50", 1, None)
    assert summary["failed"] == {"0": {"reason": "compile", "message": "boom"}}
    assert [p.number for p in pareto_front(s)] == [0]  # 1.0 (study) still beats 1.4 (confirmed)
    assert "failed" in cf.markdown(summary, pts)


def test_summary_is_the_median_over_rounds():
    rounds = [{"p50_ms": v, "p90_ms": v + 1, "p99_ms": v + 2, "cv": 0.1} for v in (5.0, 1.0, 3.0)]
    c = cf.summarize(rounds, "p99", 4)
    assert c["latency_ms"] == 5.0 and c["latency_p50_ms"] == 3.0 and c["throughput"] == pytest.approx(4 / 0.003)
    assert c["round_p50_ms"] == [5.0, 1.0, 3.0]


def _served_round(p99, achieved=100.0, dropped=0):
    from planner.measure.serving import ServedStats

    return {"served": ServedStats(arrival="poisson", rate=100.0, concurrency=None, requests=400, warmup_requests=50,
                                  completed=400 - dropped, dropped=dropped, late=0, achieved_rate=achieved, p50_ms=p99 / 4,
                                  p90_ms=p99 / 2, p99_ms=p99, mean_ms=p99 / 3, max_ms=p99 * 2, mean_batch=1.0, seconds=4.0,
                                  offered_rate=100.0).to_dict()}


def test_served_rounds_give_the_median_served_figures_and_judge_the_served_slo():
    rounds = [_served_round(v) for v in (9.0, 3.0, 6.0)]
    c = cf.summarize_served(rounds, "p99", slo_ms=8.0)
    assert c["latency_ms"] == c["served_p99_ms"] == c["served_latency_ms"] == 6.0 and c["served_p50_ms"] == 1.5
    assert c["round_served_ms"] == [9.0, 3.0, 6.0] and not c["slo_violated"] and c["served_rate_kept"]
    assert cf.summarize_served(rounds, "p99", slo_ms=5.0)["slo_violated"]  # the median breaks the SLO
    # most rounds did not serve the rate (dropped requests, or the rate not achieved): infeasible whatever the p99
    short = [_served_round(2.0, dropped=3), _served_round(2.0, achieved=50.0), _served_round(2.0)]
    c = cf.summarize_served(short, "p99", slo_ms=8.0)
    assert not c["served_rate_kept"] and c["slo_violated"]


def test_served_confirmation_replaces_the_served_figures_on_the_front():
    s = _study([(1.0, 0.0, True), (1.5, 0.0, True)])
    pts = cf.candidates(s, 2)
    summary = cf.record(s, pts, {0: {"status": "ok", "rounds": [_served_round(3.0)] * 2},
                                 1: {"status": "ok", "rounds": [_served_round(1.2)] * 2}}, "p99", 2, None,
                        served="poisson 100 req/s, 1 sample(s)/request")
    assert summary["served"].startswith("poisson 100") and "served p99 latency under poisson" in cf.markdown(summary, pts)
    front = pareto_front(s)
    assert [p.number for p in front] == [1] and front[0].metrics["served_p99_ms"] == 1.2
    assert front[0].metrics["study_latency_ms"] == 1.5


def test_non_dominated_respects_maximized_objectives():
    s = _study([(1.0, 0.0, True), (2.0, 0.0, True)], objectives=("latency", "throughput"))
    pts = cf.candidates(s, 2)
    from planner.record.objectives import parse_objectives

    assert [p.number for p in non_dominated(pts, parse_objectives(("throughput",)))] == [0]


def _steady_and(tmp_path, behaviour: str, rounds: int):
    """A 2-trial study (named ``behaviour``) of the fake backend's steady deployment and ``behaviour``'s,
    both re-measured in ``rounds`` rounds: (home, env, the finished CLI run)."""
    home = Home(tmp_path / "home")
    space, target, env = fake_backend_files(
        tmp_path, f"name: {behaviour}\nbatch_size: [1]\nbackends:\n  fake:\n    behaviour: [steady, {behaviour}]\n")
    r = run_cli("optimize", "--model", "tiny-mlp", "--target", target, "--space", space, "--trials", "2",
                "--sampler", "grid", "--eval-samples", "6", "--study", behaviour, "--confirm", "2",
                "--confirm-rounds", str(rounds), "--home", home.root, env=env)
    assert r.returncode == 0, r.stderr + r.stdout
    return home, env, r


def test_study_confirms_and_registers_the_honest_winner(tmp_path):
    """A fake backend whose first build runs 5x faster than the steady one and every rebuild 5x slower: the
    study alone would name it; after the re-measurement the steady deployment is the front and the alias."""
    home, env, r = _steady_and(tmp_path, "lucky", rounds=2)
    assert "Re-measured in 2 interleaved rounds" in r.stdout
    study = optuna.load_study(study_name="lucky", storage=home.optuna_url)
    by_b = {t.user_attrs["config"]["backend_options"]["behaviour"]: t for t in study.trials}
    lucky, steady = by_b["lucky"], by_b["steady"]
    assert lucky.user_attrs["metrics"]["latency_ms"] < steady.user_attrs["metrics"]["latency_ms"]  # the study's view
    conf = study.user_attrs["confirmation"]
    assert set(conf["trials"]) == {str(lucky.number), str(steady.number)} and conf["rounds"] == 2
    assert conf["trials"][str(lucky.number)]["ratio_to_study"] > 3
    assert len(conf["trials"][str(steady.number)]["round_p50_ms"]) == 2
    front = pareto_front(study)
    assert [p.number for p in front] == [steady.number]

    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking_uri=home.tracking_uri)
    lucky_run = c.get_run(lucky.user_attrs["mlflow_run_id"])
    assert lucky_run.data.tags["planner.confirmed"] == "true" and lucky_run.data.tags["planner.pareto"] == "false"
    assert lucky_run.data.metrics["confirmed.latency_ms"] > 3 * lucky_run.data.metrics["latency_ms"]
    (model,) = c.search_registered_models()
    fastest = c.get_model_version(model.name, model.aliases["fastest"])
    assert fastest.run_id == steady.user_attrs["mlflow_run_id"]
    assert float(fastest.tags["latency_ms"]) == pytest.approx(conf["trials"][str(steady.number)]["latency_ms"], rel=1e-5)
    assert fastest.tags["confirmed_rounds"] == "2" and "study_latency_ms" in fastest.tags
    assert not (home.root / "studies" / "lucky" / "confirm" / f"{lucky.number:04d}" / "build").exists()

    # `planner confirm` again, on the study's fastest trial alone (by the study's figures: the lucky one)
    r = run_cli("confirm", "--study", "lucky", "--top-k", "1", "--rounds", "1", "--home", home.root, env=env)
    assert r.returncode == 0, r.stderr + r.stdout
    assert "Pareto front of lucky" in r.stdout
    study = optuna.load_study(study_name="lucky", storage=home.optuna_url)
    assert set(study.user_attrs["confirmation"]["trials"]) == {str(lucky.number)}
    assert [p.number for p in pareto_front(study)] == [steady.number]
    r = run_cli("confirm", "--study", "nope", "--home", home.root, env=env)
    assert r.returncode == 2 and "no such study" in r.stderr and "lucky" in r.stderr
    r = run_cli("confirm", "--study", "lucky", "--rounds", "0", "--home", home.root, env=env)
    assert r.returncode == 2 and "--rounds 0: must be ≥ 1" in r.stderr


def test_a_candidate_that_fails_to_rebuild_keeps_its_study_figure(tmp_path):
    home, env, r = _steady_and(tmp_path, "flaky", rounds=1)
    study = optuna.load_study(study_name="flaky", storage=home.optuna_url)
    flaky = next(t for t in study.trials if t.user_attrs["config"]["backend_options"]["behaviour"] == "flaky")
    conf = study.user_attrs["confirmation"]
    assert conf["failed"][str(flaky.number)]["reason"] == "compile"
    assert "fake compiler fails on a rebuild" in conf["failed"][str(flaky.number)]["message"]
    assert len(conf["trials"]) == 1
    # the flaky deployment (1 ms, study figure) still beats the steady one (2 ms, confirmed)
    front = pareto_front(study)
    assert [p.number for p in front] == [flaky.number] and "confirmed_rounds" not in front[0].metrics
    from mlflow.tracking import MlflowClient

    run = MlflowClient(tracking_uri=home.tracking_uri).get_run(flaky.user_attrs["mlflow_run_id"])
    assert run.data.tags["planner.confirmed"].startswith("failed: compile: fake compiler fails on a rebuild")


def test_confirm_flag_errors_are_one_clear_line(tmp_path):
    r = run_cli("optimize", "--model", "tiny-mlp", "--target", DATA / "fast-cpu.yaml", "--confirm", "-1",
                "--home", tmp_path / "home")
    assert r.returncode != 0 and "--confirm -1: must be ≥ 0" in r.stderr
    assert not (tmp_path / "home" / "optuna.db").exists()


def _pt(n, lat, samples=100):
    return Point(n, {"backend": "b", "batch_size": 1}, f"b{n}",
                 {"latency_ms": lat, "latency_mean_ms": lat, "latency_samples": samples, "quality_loss": 0.0}, None)


def test_estimate_and_budget_skip_what_does_not_fit():
    p = _pt(0, 10.0)  # one measurement: 100 samples x 10 ms = 1 s (+ 0.2 s warm-up)
    assert cf.estimated_seconds(p, 31.2, 3, 0.2) == pytest.approx(30.0 + 3 * 1.2)
    assert cf.estimated_seconds(p, None, 3) is None
    # a distilled trial: its 25 s of transforms come from the cache on the rebuild
    d = p.with_metrics({**p.metrics, "time.transforms_s": 25.0})
    assert cf.estimated_seconds(d, 31.2, 3, 0.2) == pytest.approx(5.0 + 3 * 1.2)
    pts = [_pt(0, 1.0), _pt(1, 2.0), _pt(2, 3.0)]
    kept, skipped = cf.fit_budget(pts, {0: 5.0, 1: 5.0, 2: 5.0}, 12.0)
    assert [p.number for p in kept] == [0, 1] and skipped == {2: "needs ~5 s to rebuild and re-measure; 2 s of --timeout left"}
    assert cf.fit_budget(pts, {0: 99.0}, None) == (pts, {})  # no --timeout: no budget
    kept, skipped = cf.fit_budget(pts, {}, -3.0)
    assert kept == [] and set(skipped) == {0, 1, 2} and "spent" in skipped[0]


def test_rebuild_not_done_by_the_deadline_is_stopped_and_skipped(tmp_path, fast_target):
    import time

    from planner.config import TrialConfig
    from planner.measure.runner import worker_env
    from planner.model import parse_model

    p = Point(0, TrialConfig("torch", 1).to_dict(), "torch", {"latency_ms": 1.0, "quality_loss": 0.0}, None)

    def make_job(p):
        return {"kind": "confirm", "spec": parse_model("tiny-mlp").to_dict(), "target": fast_target.model_dump(mode="json"),
                "config": p.config, "cache_dir": str(tmp_path / "cache"), "workdir": str(tmp_path / "c" / "build"),
                "reference": str(tmp_path / "reference.npz"), "rounds": 2}, tmp_path / "c"

    t0 = time.monotonic()
    res = cf.run_rounds([p], make_job, worker_env(fast_target, tmp_path / "cache"), 2, 600.0, deadline=t0 - 1.0)
    assert res[0]["status"] == "skipped" and "--timeout ran out" in res[0]["message"]
    assert time.monotonic() - t0 < 60  # stopped, not waited for


def test_confirmation_under_a_spent_budget_skips_and_says_so(tmp_path):
    """--timeout 1: the first trial outlasts it, so nothing is re-measured; the console, the study attribute and
    the trial's MLflow run say what was skipped and why, and the front keeps the study's own figure."""
    home = Home(tmp_path / "home")
    space, target, env = fake_backend_files(tmp_path, "name: budget\nbatch_size: [1]\nbackends:\n  fake:\n    behaviour: [steady, lucky]\n"
                                                      "    build_delay: [1.5]\n")
    r = run_cli("optimize", "--model", "tiny-mlp", "--target", target, "--space", space, "--trials", "2",
                "--sampler", "grid", "--eval-samples", "6", "--study", "budget", "--confirm", "2", "--timeout", "1",
                "--home", home.root, env=env)
    assert r.returncode == 0, r.stderr + r.stdout
    study = optuna.load_study(study_name="budget", storage=home.optuna_url)
    (t,) = study.trials  # the timeout stopped the loop after one trial
    assert "not re-measuring #0: the study's --timeout was spent by the search" in r.stdout
    conf = study.user_attrs["confirmation"]
    assert conf["trials"] == {} and conf["failed"] == {} and "spent" in conf["skipped"]["0"]
    assert [p.number for p in pareto_front(study)] == [0] and "confirmed_rounds" not in pareto_front(study)[0].metrics
    from mlflow.tracking import MlflowClient

    run = MlflowClient(tracking_uri=home.tracking_uri).get_run(t.user_attrs["mlflow_run_id"])
    assert run.data.tags["planner.confirmed"].startswith("skipped: the study's --timeout was spent")


def test_rounds_stop_at_the_deadline_and_keep_what_was_measured(tmp_path, fast_target):
    """The deadline passes once every candidate has measured its first round: no further round starts, each keeps
    its one round, and the confirmation says it was cut."""
    import numpy as np

    from planner.config import TrialConfig
    from planner.measure.runner import worker_env
    from planner.model import parse_model
    from planner.source import ModelSource

    spec = parse_model("tiny-mlp")
    feed = ModelSource(spec, tmp_path / "cache").sample_inputs(4)
    np.savez(tmp_path / "reference.npz", **{f"in:{k}": v for k, v in feed.items()})
    pts = [Point(n, TrialConfig("torch", b).to_dict(), f"torch b={b}", {"latency_ms": 1.0, "quality_loss": 0.0}, None)
           for n, b in ((0, 1), (1, 2))]

    def make_job(p):
        d = tmp_path / f"c{p.number}"
        return {"kind": "confirm", "spec": spec.to_dict(), "target": fast_target.model_dump(mode="json"), "config": p.config,
                "cache_dir": str(tmp_path / "cache"), "workdir": str(d / "build"),
                "reference": str(tmp_path / "reference.npz"), "rounds": 3}, d

    first_round_done = lambda: all((tmp_path / f"c{n}" / ".gate" / "round-0.json").exists() for n in (0, 1))  # noqa: E731
    res = cf.run_rounds(pts, make_job, worker_env(fast_target, tmp_path / "cache"), 3, 600.0, deadline=first_round_done)
    for n in (0, 1):
        assert res[n]["status"] == "ok" and len(res[n]["rounds"]) == 1 and "1 of 3 rounds" in res[n]["rounds_cut"]
    s = _study([(1.0, 0.0, True), (2.0, 0.0, True)])
    summary = cf.record(s, pts, res, "p50", 3, None)
    assert summary["trials"]["0"]["rounds"] == 1 and "--timeout ran out" in summary["trials"]["1"]["rounds_cut"]
