"""Whole studies with real Optuna (sqlite), real MLflow (sqlite), real worker processes."""

import json
from pathlib import Path

import pytest
from support import DATA, fake_backend_files, run_cli

from planner.paths import Home


def _mlflow_runs(home: Home):
    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking_uri=home.tracking_uri)
    exps = [e for e in c.search_experiments() if e.name.startswith("planner/")]
    assert len(exps) == 1
    return c, exps[0], c.search_runs([exps[0].experiment_id], max_results=1000)


def _study(home: Home, name: str):
    import optuna

    return optuna.load_study(study_name=name, storage=home.optuna_url)


def _measured_of(trials):
    """The trials that measured a candidate (not proposals answered from the study as duplicates)."""
    return [t for t in trials if "duplicate_of" not in t.user_attrs]


def _measured(study):
    return _measured_of(study.trials)


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    home = Home(tmp_path_factory.mktemp("e2e") / "home")
    r = run_cli("optimize", "--model", "tiny-mlp", "--target", DATA / "fast-cpu.yaml", "--space", DATA / "small-space.yaml",
                "--trials", "6", "--sampler", "random", "--seed", "3", "--eval-samples", "8", "--study", "s1", "--home", home.root)
    assert r.returncode == 0, r.stderr + r.stdout
    return home, r


def test_study_records_trials_in_optuna(tiny_study):
    from optuna.trial import TrialState

    home, r = tiny_study
    study = _study(home, "s1")
    assert len(_measured(study)) == 6  # --trials counts measured candidates; duplicates are answered free
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) >= 4
    backends = {t.user_attrs["config"]["backend"] for t in complete}
    assert backends == {"torch", "onnxruntime"}
    for t in complete:
        assert t.values[0] > 0 and t.values[0] == t.user_attrs["metrics"]["latency_ms"]
        assert "quality" in t.constraints and t.user_attrs["mlflow_run_id"]
    assert study.metric_names == ["latency_ms", "quality_loss"]


def test_mlflow_parent_nested_runs_params_metrics_artifacts(tiny_study):
    home, _ = tiny_study
    c, exp, runs = _mlflow_runs(home)
    parents = [r for r in runs if r.data.tags.get("planner.kind") == "study"]
    trials = [r for r in runs if r.data.tags.get("planner.kind") == "trial"]
    assert len(parents) == 1
    parent = parents[0]
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in trials)
    distinct = {t.user_attrs["config_key"] for t in _study(home, "s1").trials if "duplicate_of" not in t.user_attrs}
    assert len(trials) == len(distinct)  # duplicates are not measured again, so they get no run
    measured = 0
    for run in trials:
        assert run.data.params["backend"] in ("torch", "onnxruntime")
        assert run.data.tags["backend"] == run.data.params["backend"]
        assert run.data.tags["precision"] == "fp32"
        if run.data.tags["planner.status"] == "failed":
            # how fast this host is decides whether a candidate is cut early (20x slower than the best at its batch
            # size); such a run says so, with the median it was cut at and its quality, but has no latency figures
            assert run.data.tags["planner.fail_reason"] == "early_exit", run.data.tags
            assert "early_exit_median_ms" in run.data.metrics and "quality.quality_loss" in run.data.metrics
            continue
        measured += 1
        assert "latency_p99_ms" in run.data.metrics and "throughput" in run.data.metrics
        assert "quality_loss" in run.data.metrics and "centered_cosine" in run.data.metrics
        names = {a.path for a in c.list_artifacts(run.info.run_id)}
        assert "manifest.json" in names and "engine" in names
        engine = {a.path for a in c.list_artifacts(run.info.run_id, "engine")}
        assert engine & {"engine/model.onnx", "engine/model.pt2"}
    complete = [t for t in _study(home, "s1").trials if t.state.name == "COMPLETE" and "duplicate_of" not in t.user_attrs]
    assert measured == len(complete) >= 1
    parent_files = {a.path for a in c.list_artifacts(parent.info.run_id)}
    assert {"pareto.md", "pareto.json", "target.yaml", "search_space.yaml"} <= parent_files
    assert str(Path(exp.artifact_location.replace("file://", ""))).startswith(str(home.root))


def test_pareto_tags_match_optuna_front(tiny_study):
    home, r = tiny_study
    from planner.select.pareto import pareto_front

    front = pareto_front(_study(home, "s1"))
    assert front
    _, _, runs = _mlflow_runs(home)
    tagged = {r.info.run_id for r in runs if r.data.tags.get("planner.pareto") == "true"}
    assert tagged == {p.run_id for p in front}
    assert "Pareto front" in r.stdout


def test_manifest_describes_the_engine(tiny_study):
    home, _ = tiny_study
    study = _study(home, "s1")
    t = next(t for t in study.trials if t.user_attrs.get("metrics") and "duplicate_of" not in t.user_attrs)
    m = json.loads((home.study_dir("s1") / "trials" / f"{t.number:04d}" / "manifest.json").read_text())
    assert m["schema_version"] == 1 and m["trial"]["config"] == t.user_attrs["config"]
    assert m["model"]["hash"] == study.user_attrs["model_hash"]
    assert m["environment"]["libraries"]["torch"].startswith("2.13")
    for name, f in m["files"].items():
        assert len(f["sha256"]) == 64


def test_resume_continues_the_study(tiny_study):
    home, _ = tiny_study
    before = _study(home, "s1").trials
    r = run_cli("optimize", "--model", "tiny-mlp", "--target", DATA / "fast-cpu.yaml", "--space", DATA / "small-space.yaml",
                "--trials", "2", "--sampler", "random", "--seed", "4", "--eval-samples", "8", "--study", "s1", "--home", home.root)
    assert r.returncode == 0, r.stderr
    assert f"resuming: {len(before)} trials" in r.stdout
    # the first run measured all 6 configurations of the space: the resumed one answers its proposals from the
    # study (new trials, no new measurement) and stops when the space is exhausted
    after = _study(home, "s1").trials
    assert len(after) > len(before) and len(_measured_of(after)) == len(_measured_of(before)) == 6
    assert "exhausted" in r.stdout
    _, _, runs = _mlflow_runs(home)
    assert len([r for r in runs if r.data.tags.get("planner.kind") == "study"]) == 1


def test_study_trials_is_a_goal_for_the_whole_study(tmp_path):
    """--study-trials N stops at N finished trials, counting earlier runs: the same command again runs nothing."""
    home = Home(tmp_path / "home")
    args = ["optimize", "--model", "tiny-mlp", "--target", DATA / "fast-cpu.yaml", "--space", DATA / "small-space.yaml",
            "--sampler", "random", "--eval-samples", "6", "--study", "goal", "--study-trials", "3", "--home", home.root]
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    assert len(_study(home, "goal").trials) == 3
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    assert "holds 3 finished trials" in " ".join(again.stdout.split())  # rich wraps lines
    assert len(_study(home, "goal").trials) == 3


def test_resume_with_other_model_is_refused(tiny_study):
    home, _ = tiny_study
    r = run_cli("optimize", "--model", f"{DATA / 'models.py'}:tiny", "--target", DATA / "fast-cpu.yaml",
                "--space", DATA / "small-space.yaml", "--trials", "1", "--study", "s1", "--home", home.root)
    assert r.returncode == 2 and "choose another --study" in r.stderr


def test_failing_candidates_are_recorded_and_the_study_goes_on(tmp_path):
    """Compile raises (ONNX export of data-dependent control flow) and a worker dies (segfault at batch 4)."""
    from optuna.trial import TrialState

    home = Home(tmp_path / "home")
    space = tmp_path / "space.yaml"
    space.write_text("name: failing\nbatch_size: [1, 4]\nbackends:\n  torch: {}\n  onnxruntime: {}\n")
    for model, study_name in ((f"{DATA / 'models.py'}:data_dependent", "compile"), (f"{DATA / 'models.py'}:segfault_on_batch4", "crash")):
        r = run_cli("optimize", "--model", model, "--target", DATA / "fast-cpu.yaml", "--space", space, "--trials", "8",
                    "--sampler", "grid", "--eval-samples", "6", "--study", study_name, "--home", home.root)
        assert r.returncode == 0, r.stderr
        study = _study(home, study_name)
        failed = [t for t in study.trials if t.state == TrialState.FAIL]
        ok = [t for t in study.trials if t.state == TrialState.COMPLETE]
        assert failed and ok, [(t.state, t.user_attrs) for t in study.trials]
        reasons = {t.user_attrs["fail_reason"] for t in failed}
        if study_name == "compile":
            assert reasons == {"compile"}
            assert all(t.user_attrs["config"]["backend"] == "onnxruntime" for t in failed)
        else:
            assert reasons == {"crash"}
            assert all(t.user_attrs["config"]["batch_size"] == 4 for t in failed)
            assert "SIGSEGV" in failed[0].user_attrs["fail_message"]

    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking_uri=home.tracking_uri)
    failed_runs = c.search_runs([e.experiment_id for e in c.search_experiments()], "tags.`planner.status` = 'failed'")
    assert {r.data.tags["planner.fail_reason"] for r in failed_runs} == {"compile", "crash"}
    assert all(r.info.status == "FAILED" for r in failed_runs)


def test_plugin_backend_and_constant_output_is_infeasible(tmp_path):
    """A fake backend (plugin) returns a constant: the quality constraint must reject it; its compile error is recorded."""
    home = Home(tmp_path / "home")
    space, target, env = fake_backend_files(tmp_path, "name: fake\nbackends:\n  fake:\n    behaviour: [ok, compile_error]\n")
    r = run_cli("optimize", "--model", "tiny-mlp", "--target", target, "--space", space, "--trials", "2",
                "--sampler", "grid", "--eval-samples", "6", "--study", "fake", "--home", home.root, env=env)
    assert r.returncode == 0, r.stderr
    study = _study(home, "fake")
    by_b = {t.user_attrs["config"]["backend_options"]["behaviour"]: t for t in study.trials}
    assert by_b["compile_error"].user_attrs["fail_reason"] == "compile"
    ok = by_b["ok"]
    assert ok.user_attrs["metrics"]["quality_loss"] > 0.5 and ok.constraints["quality"] > 0
    from planner.select.pareto import pareto_front

    assert pareto_front(study) == []


def test_duplicates_do_not_spend_the_trial_budget(tmp_path):
    """--trials N means N measured candidates: on a 6-configuration space a random sampler proposes configs it has
    already measured, which are answered from the study, are not measured again and do not count."""
    home = Home(tmp_path / "home")
    space, target, env = fake_backend_files(
        tmp_path, "name: fake\nbatch_size: [1, 2, 4]\nbackends:\n  fake:\n    behaviour: [ok, slow]\n")
    r = run_cli("optimize", "--model", "tiny-mlp", "--target", target, "--space", space, "--trials", "5",
                "--sampler", "random", "--seed", "3", "--eval-samples", "4", "--study", "dups", "--confirm", "0",
                "--home", home.root, env=env)
    assert r.returncode == 0, r.stderr
    study = _study(home, "dups")
    measured = [t for t in study.trials if "duplicate_of" not in t.user_attrs]
    duplicates = [t for t in study.trials if "duplicate_of" in t.user_attrs]
    assert len(measured) == 5 and len({t.user_attrs["config_key"] for t in measured}) == 5
    assert duplicates, "seed 3 proposes at least one config twice on a 6-point space (otherwise this test proves nothing)"


def test_user_evaluator_sets_the_quality_loss(tmp_path):
    """--evaluator: task metrics per trial against the fp32 model's; an evaluator failing on one deployment
    fails that trial (reason quality) and the study goes on."""
    from optuna.trial import TrialState

    home = Home(tmp_path / "home")
    r = run_cli("optimize", "--model", f"{DATA / 'models.py'}:tiny", "--target", DATA / "fast-cpu.yaml",
                "--space", DATA / "small-space.yaml", "--sampler", "grid", "--trials", "6", "--eval-samples", "6",
                "--evaluator", f"{DATA / 'evaluators.py'}:fails_on_batch4", "--study", "ev", "--home", home.root)
    assert r.returncode == 0, r.stderr + r.stdout
    trials = _study(home, "ev").trials
    ok = [t for t in trials if t.state == TrialState.COMPLETE and t.user_attrs.get("duplicate_of") is None]
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert ok and all(t.user_attrs["config"]["batch_size"] == 1 for t in ok)
    assert failed and all(t.user_attrs["fail_reason"] == "quality" and "evaluator failed" in t.user_attrs["fail_message"]
                          for t in failed)
    for t in ok:
        m = t.user_attrs["metrics"]
        assert m["eval_reference.accuracy"] == pytest.approx(m["eval.accuracy"], abs=0.03)  # fp32 deployments
        assert m["quality_loss"] == pytest.approx(max(0.0, m["eval_drop"])) and m["quality_loss"] <= 0.03
    c, _, runs = _mlflow_runs(home)
    trial_runs = [x for x in runs if x.data.tags.get("planner.kind") == "trial" and x.info.status == "FINISHED"]
    assert trial_runs and all("eval.accuracy" in x.data.metrics for x in trial_runs)


def test_seeds_are_measured_first_and_impossible_ones_skipped(tmp_path):
    """A space's seeds are the study's first trials, in order (the rest of a seed left to the sampler); a seed the
    target cannot run (a scheme outside its precisions) is skipped and named, and the study goes on."""
    home = Home(tmp_path / "home")
    space = tmp_path / "seeded.yaml"
    space.write_text(
        "name: seeded\nbatch_size: [1, 4]\nbackends:\n  torch: {}\n  onnxruntime:\n    graph_optimization_level: [basic, all]\n"
        "quantize:\n  schemes: [none, int8_dynamic, fp16]\n  options:\n    int8_dynamic: {op_types: [matmul, all]}\n"
        "seeds:\n"
        "  - {backend: onnxruntime, options: {graph_optimization_level: basic}, quant: int8_dynamic, quant_options: {op_types: matmul}, batch_size: 4}\n"
        "  - {backend: onnxruntime, quant: fp16}\n"       # fast-cpu has no fp16: skipped
        "  - {backend: torch, batch_size: 1}\n")
    r = run_cli("optimize", "--model", "tiny-mlp", "--target", DATA / "fast-cpu.yaml", "--space", space, "--trials", "3",
                "--sampler", "tpe", "--eval-samples", "6", "--study", "seeded", "--home", home.root)
    assert r.returncode == 0, r.stderr + r.stdout
    study = _study(home, "seeded")
    first, second = (study.trials[i].user_attrs["config"] for i in (0, 1))
    assert (first["backend"], first["batch_size"], first["quant"]["scheme"]) == ("onnxruntime", 4, "int8_dynamic")
    assert first["backend_options"] == {"graph_optimization_level": "basic"} and first["quant"]["options"] == {"op_types": "matmul"}
    assert (second["backend"], second["batch_size"]) == ("torch", 1)
    assert [t.user_attrs.get("seed") for t in study.trials[:2]] == [0, 2]
    assert study.user_attrs["seeds_skipped"] == ["seeds[1]: fp16 needs precision fp16, which target 'fast-cpu' lacks "
                                                "(its precisions: fp32, int8)"]
    assert "queued 2 seed configs" in r.stdout and "resuming" not in r.stdout  # enqueued seeds are no earlier trials
