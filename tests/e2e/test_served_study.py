"""A study with traffic, end to end from the CLI: real Optuna and MLflow (sqlite), real worker processes, ONNX
Runtime and OpenVINO engines of a tiny model served under open-loop Poisson arrivals; then the Triton export of
trials that did and did not batch."""

import json
import re

import pytest
from support import DATA, run_cli

from planner.paths import Home

pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def served_study(tmp_path_factory):
    home = Home(tmp_path_factory.mktemp("served") / "home")
    r = run_cli("optimize", "--model", "tiny-mlp", "--target", DATA / "traffic-cpu.yaml", "--space",
                DATA / "serving-space.yaml", "--trials", "6", "--sampler", "random", "--seed", "2",
                "--eval-samples", "8", "--study", "served", "--confirm", "2", "--confirm-rounds", "3", "--home", home.root)
    assert r.returncode == 0, r.stderr + r.stdout
    import optuna

    return home, r, optuna.load_study(study_name="served", storage=home.optuna_url)


def _complete(study):
    from optuna.trial import TrialState

    return [t for t in study.trials if t.state == TrialState.COMPLETE and "duplicate_of" not in t.user_attrs]


def test_every_trial_is_measured_under_the_traffic(served_study):
    home, r, study = served_study
    done = _complete(study)
    assert len(done) >= 4
    for t in done:
        m, sv = t.user_attrs["metrics"], t.user_attrs["config"]["serving"]
        assert t.values[0] == m["latency_ms"] == m["served_p99_ms"]  # the objective is the served p99
        assert m["served_rate"] == 200 and m["served_requests"] >= 150  # 1 s at 200 req/s after the warm-up
        assert m["served_achieved_rate"] > 150 and m["served_p50_ms"] <= m["served_p99_ms"]
        assert m["single_latency_ms"] == m["latency_p50_ms"]  # the single-request figure stays recorded
        assert m["sustained_rate"] in (0.0, 100.0, 200.0, 400.0)  # measured points of the rate search (200, then 400 or 100)
        assert {"served_slo", "served_rate", "quality"} <= set(t.constraints)
        assert m["serving_instances"] == sv["instances"] and m["serving_max_batch"] == sv["max_batch"]
        if sv["max_batch"] > 1:
            assert m["served_mean_batch"] >= 1.0
    assert "served p50 " in r.stdout and "sustained " in r.stdout  # the trial lines (the table wraps at 80 columns)


def test_mlflow_runs_carry_the_served_figures_and_the_traffic(served_study):
    from mlflow.tracking import MlflowClient

    home, _, study = served_study
    c = MlflowClient(tracking_uri=home.tracking_uri)
    t = _complete(study)[0]
    run = c.get_run(t.user_attrs["mlflow_run_id"])
    assert run.data.metrics["served_p99_ms"] == t.user_attrs["metrics"]["served_p99_ms"]
    assert "sustained_rate" in run.data.metrics and "serving.instances" in run.data.params
    parent = c.get_run(run.data.tags["mlflow.parentRunId"])
    assert parent.data.params["traffic"] == "poisson 200 req/s, 1 sample(s)/request"
    assert parent.data.tags["planner.traffic"] == parent.data.params["traffic"]
    html = open(c.download_artifacts(parent.info.run_id, "plots/pareto.html")).read()
    assert "served latency (ms)" in html and "served_p99_ms" in html and "poisson 200 req/s" in html
    manifest = json.loads(open(c.download_artifacts(run.info.run_id, "manifest.json")).read())
    assert manifest["target"]["traffic"]["rate"] == 200
    assert manifest["trial"]["config"]["serving"] == t.user_attrs["config"]["serving"]


def test_triton_export_has_dynamic_batching_exactly_when_the_trial_batched(served_study, tmp_path):
    from planner.select.export import export

    home, _, study = served_study
    by_batching = {}
    for t in _complete(study):
        by_batching.setdefault(t.user_attrs["config"]["serving"]["max_batch"] > 1, t)
    assert set(by_batching) == {True, False}, "the study should have measured trials with and without batching"
    for batched, t in by_batching.items():
        sv = t.user_attrs["config"]["serving"]
        out = tmp_path / f"repo-{batched}"
        export(t.user_attrs["mlflow_run_id"], out, fmt="triton", home=home.root, name="m")
        text = (out / "m" / "config.pbtxt").read_text()
        assert f"instance_group [ {{ count: {sv['instances']}, kind: KIND_CPU }} ]" in text
        assert ("dynamic_batching" in text) == batched
        if batched:
            assert f"max_queue_delay_microseconds: {sv['max_queue_delay_us']}" in text
            assert re.search(rf"preferred_batch_size: \[ {sv['max_batch']} \]", text)
            assert f"max_batch_size: {sv['max_batch']}" in text
        readme = (out / "m" / "README.md").read_text()
        assert "## Served latency" in readme and "poisson arrivals at 200" in readme
        assert f"{t.user_attrs['metrics']['served_p99_ms']:.4g}" in readme


def test_the_fastest_served_trials_are_re_measured_under_the_traffic(served_study):
    """The winner's curse holds for served latency too: the study's fastest feasible trials are re-measured in
    interleaved rounds, each round a load point at the traffic's rate; the front uses the confirmed figures."""
    from planner.select.pareto import confirmed_points

    home, r, study = served_study
    conf = study.user_attrs["confirmation"]
    assert conf["served"] == "poisson 200 req/s, 1 sample(s)/request" and conf["percentile"] == "p99"
    assert conf["trials"], conf
    by_n = {t.number: t for t in study.trials}
    for n, c in conf["trials"].items():
        assert c["rounds"] == conf["rounds"] and len(c["round_served_ms"]) == conf["rounds"]
        assert c["latency_ms"] == c["served_p99_ms"] == c["served_latency_ms"]
        assert sorted(c["round_served_ms"])[len(c["round_served_ms"]) // 2] == pytest.approx(c["served_p99_ms"])
        assert c["study_latency_ms"] == by_n[int(n)].user_attrs["metrics"]["served_p99_ms"]
        assert c["served_achieved_rate"] > 150
    pts = {p.number: p for p in confirmed_points(study)}
    for n, c in conf["trials"].items():
        if not c["slo_violated"]:
            assert pts[int(n)].latency_ms == c["latency_ms"] and pts[int(n)].metrics["served_p99_ms"] == c["served_p99_ms"]


def test_sustained_rate_as_an_objective(tmp_path):
    """`--objectives sustained,quality`: the study maximizes the highest rate served within the SLO."""
    import optuna

    home = Home(tmp_path / "home")
    r = run_cli("optimize", "--model", "tiny-mlp", "--target", DATA / "traffic-cpu.yaml", "--space",
                DATA / "serving-space.yaml", "--trials", "2", "--sampler", "random", "--eval-samples", "8",
                "--objectives", "sustained,quality", "--study", "sus", "--confirm", "0", "--home", home.root)
    assert r.returncode == 0, r.stderr + r.stdout
    study = optuna.load_study(study_name="sus", storage=home.optuna_url)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    done = _complete(study)
    assert done and all(t.values[0] == t.user_attrs["metrics"]["sustained_rate"] for t in done)


def test_sustained_objective_needs_open_loop_traffic(tmp_path):
    r = run_cli("optimize", "--model", "tiny-mlp", "--target", DATA / "fast-cpu.yaml", "--trials", "1",
                "--objectives", "sustained,quality", "--home", tmp_path / "home")
    assert r.returncode == 2
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and "--objectives sustained" in err[0] and "traffic" in err[0], r.stderr
    assert not (tmp_path / "home" / "optuna.db").exists()


def _short_study(tmp_path, target_text: str, name: str):
    """Two random trials of tiny-mlp on a target written from ``target_text``, re-measuring 1 in 2 rounds."""
    import optuna

    home = Home(tmp_path / "home")
    target = tmp_path / f"{name}.yaml"
    target.write_text(target_text)
    r = run_cli("optimize", "--model", "tiny-mlp", "--target", target, "--space", DATA / "serving-space.yaml",
                "--trials", "2", "--sampler", "random", "--eval-samples", "8", "--study", name, "--confirm", "1",
                "--confirm-rounds", "2", "--home", home.root)
    assert r.returncode == 0, r.stderr + r.stdout
    return home, r, optuna.load_study(study_name=name, storage=home.optuna_url)


def test_closed_loop_traffic_end_to_end(tmp_path):
    """`traffic: {arrival: closed, concurrency: C}`: C clients each wait for their answer; the study measures, re-measures
    and records the served figures at that concurrency (no rate search: a closed loop has no arrival rate)."""
    text = (DATA / "traffic-cpu.yaml").read_text()
    text = text[:text.index("traffic:")] + ("traffic:\n  arrival: closed\n  concurrency: 4\n  duration_s: 1.0\n  warmup_s: 0.2\n"
                                           "  percentile: p99\n  slo_ms: 200\n")
    home, r, study = _short_study(tmp_path, text, "closed")
    done = _complete(study)
    assert done
    for t in done:
        m = t.user_attrs["metrics"]
        assert t.values[0] == m["served_p99_ms"] and m["served_requests"] > 4 and "sustained_rate" not in m
        assert "served_rate" not in m and m["served_achieved_rate"] > 0
    conf = study.user_attrs["confirmation"]
    assert conf["served"] == "closed 4 clients, 1 sample(s)/request" and len(conf["trials"]) == 1


def test_no_trial_within_the_slo_re_measures_the_closest_and_says_so(tmp_path):
    """An SLO nothing can meet: the study has no feasible deployment, yet its closest trials (the quality bound met,
    the lowest served p99) are re-measured under the traffic, flagged as breaking the SLO, and named in the note."""
    from mlflow.tracking import MlflowClient

    home, r, study = _short_study(tmp_path, (DATA / "traffic-cpu.yaml").read_text().replace("slo_ms: 200", "slo_ms: 0.0001"),
                                  "strict")
    done = _complete(study)
    assert done and all(t.constraints["served_slo"] > 0 for t in done)
    conf = study.user_attrs["confirmation"]
    assert conf["closest"] and conf["slo_ms"] == 0.0001 and len(conf["trials"]) == 1
    (n, c), = conf["trials"].items()
    quality_ok = [t for t in done if t.constraints["quality"] <= 0]
    assert int(n) == min(quality_ok, key=lambda t: (t.constraints["served_rate"] > 0, t.values[0])).number
    assert c["slo_violated"] and c["rounds"] == 2
    assert "closest" in r.stdout
    note = MlflowClient(tracking_uri=home.tracking_uri).get_run(
        study.user_attrs["mlflow_parent_run_id"]).data.tags["mlflow.note.content"]
    assert "**No feasible deployment**" in note and f"- #{n} " in note and "Lower the traffic's rate" in note
