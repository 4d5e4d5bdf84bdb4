"""A whole compression study through the CLI: pruning x distillation x int8 quantization on the trained digits-cnn.

Real Optuna (sqlite), real MLflow (sqlite), real worker processes; quality is the accuracy drop on the
digits test split (the model's ``dataset()``).  Grid over one backend and batch size:
quant {none, int8_static} x {unpruned, l1 0.4, l1 0.4 + 300 distillation steps} = 6 trials (~1.5-2 min).
"""

from __future__ import annotations

import pytest
from support import DATA, run_cli

from planner.paths import Home

pytest.importorskip("sklearn", reason="digits-cnn needs scikit-learn")
pytest.importorskip("torch_pruning", reason="structured pruning needs torch-pruning")

SPACE = """\
name: compress-e2e
batch_size: [8]
backends:
  onnxruntime: {}
quantize:
  schemes: [none, int8_static]
  options:
    int8_static: {calibrate_method: [minmax]}
prune:
  methods: [none, l1]
  ratio: [0.4]
  round_to: [8]
distill:
  steps: [0, 300]
  lr: [0.003]
"""
STUDY = "compress"


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    import optuna

    root = tmp_path_factory.mktemp("compress")
    home = Home(root / "home")
    space = root / "space.yaml"
    space.write_text(SPACE)
    env = {"PLANNER_ZOO_CACHE": str(root / "zoo")}  # digits-cnn is trained here once (~10-15 s), then loaded
    r = run_cli("optimize", "--model", "digits-cnn", "--target", DATA / "fast-cpu.yaml", "--space", space, "--trials", "8",
                "--sampler", "grid", "--eval-samples", "64", "--study", STUDY, "--home", home.root, env=env)
    assert r.returncode == 0, r.stderr + r.stdout
    assert list((root / "zoo").glob("digits-cnn-*.pt")), "the trained weights were not cached"
    return home, r, optuna.load_study(study_name=STUDY, storage=home.optuna_url)


def _kind(t) -> str:
    c = t.user_attrs["config"]
    if c["prune"]["method"] == "none":
        return "dense"
    return "distilled" if c["distill"]["steps"] > 0 else "pruned"


def test_grid_covers_prune_distill_quant(study):
    from optuna.trial import TrialState

    _, r, s = study
    assert "search space exhausted" in r.stdout
    done = [t for t in s.trials if t.state == TrialState.COMPLETE]
    assert len(done) == len(s.trials) == 6, [(t.state, t.user_attrs.get("fail_message")) for t in s.trials]
    combos = {(_kind(t), t.user_attrs["config"]["quant"]["scheme"]) for t in done}
    assert combos == {(k, q) for k in ("dense", "pruned", "distilled") for q in ("none", "int8_static")}
    for t in done:
        c = t.user_attrs["config"]
        if c["prune"]["method"] != "none":
            assert c["prune"] == {"method": "l1", "ratio": 0.4, "round_to": 8}
            assert t.params["prune.method"] == "l1" and t.params["distill.steps"] == c["distill"]["steps"]
        if c["quant"]["scheme"] == "int8_static":
            assert c["quant"]["options"] == {"calibrate_method": "minmax"}


def test_quality_is_the_accuracy_drop_on_the_test_split(study):
    _, _, s = study
    assert s.user_attrs["model_info"]["has_labels"] and not s.user_attrs["model_info"]["synthetic_data"]
    for t in s.trials:
        m = t.user_attrs["metrics"]
        assert m["accuracy_reference"] >= 0.95  # the trained model on 64 held-out digits
        assert m["quality_loss"] == pytest.approx(max(0.0, m["accuracy_drop"]))
        assert m["accuracy_drop"] == pytest.approx(m["accuracy_reference"] - m["accuracy"])
        assert t.values[1] == m["quality_loss"]
        if _kind(t) == "dense":
            assert m["quality_loss"] <= 1 / 64 + 1e-9  # fp32 or int8: at most one digit changes


def test_pruning_shrinks_the_network_and_distillation_recovers(study):
    _, _, s = study
    by = {(_kind(t), t.user_attrs["config"]["quant"]["scheme"]): t.user_attrs["metrics"] for t in s.trials}
    recorded = [m for (k, _), m in by.items() if k != "dense" and "transform.prune_params_after" in m]
    assert recorded, "no pruned trial recorded its parameter counts"
    for m in recorded:
        assert m["transform.prune_params_before"] == 56_554
        assert m["transform.prune_params_after"] < 0.5 * m["transform.prune_params_before"]
        assert m["transform.flops_after"] < 0.5 * m["transform.flops_before"]
    distilled = [m for (k, _), m in by.items() if k == "distilled" and "transform.distill_loss_after" in m]
    assert distilled and all(m["transform.distill_loss_after"] < 0.2 * m["transform.distill_loss_before"] for m in distilled)
    for q in ("none", "int8_static"):
        assert by[("pruned", q)]["quality_loss"] > 0.2  # 40 % of the channels gone, no recovery: the accuracy collapses
        assert by[("distilled", q)]["quality_loss"] < by[("pruned", q)]["quality_loss"] - 0.15


def test_every_pruned_trial_records_its_parameter_count(study):
    _, _, s = study
    for t in s.trials:
        if _kind(t) != "dense":
            assert "transform.prune_params_after" in t.user_attrs["metrics"], t.user_attrs["label"]
        if _kind(t) == "distilled":
            assert t.user_attrs["metrics"].get("transform.distill_steps") == 300, t.user_attrs["label"]


def test_quality_constraint_rejects_the_undistilled_pruned_trials(study):
    from planner.select.pareto import pareto_front

    home, r, s = study
    bound = 0.05  # tests/data/fast-cpu.yaml max_quality_loss
    for t in s.trials:
        infeasible = t.constraints["quality"] > 0
        assert infeasible == (t.user_attrs["metrics"]["quality_loss"] > bound)
        if _kind(t) == "pruned":
            assert infeasible, t.user_attrs["label"]
    front = pareto_front(s)
    assert front and all(s.trials[p.number].constraints["quality"] <= 0 for p in front)
    assert "violates quality" in r.stdout


def test_mlflow_runs_carry_the_compression_facts(study):
    from mlflow.tracking import MlflowClient

    home, _, s = study
    c = MlflowClient(tracking_uri=home.tracking_uri)
    exp = c.get_experiment_by_name("planner/digits-cnn/fast-cpu")
    runs = [r for r in c.search_runs([exp.experiment_id], max_results=100) if r.data.tags.get("planner.kind") == "trial"]
    assert len(runs) == 6
    for run in runs:
        assert "quality_loss" in run.data.metrics and "accuracy_drop" in run.data.metrics
        assert run.data.params["prune.method"] in ("none", "l1") and run.data.params["quant.scheme"] in ("none", "int8_static")
    infeasible = [r for r in runs if r.data.tags.get("planner.status") == "infeasible"]
    assert infeasible and all(r.data.tags.get("planner.violated") == "quality" for r in infeasible)
    assert all(r.data.params["prune.method"] == "l1" for r in infeasible)
    assert any("transform.prune_params_after" in r.data.metrics for r in runs)


@pytest.mark.parametrize("name", ["cnn", "transformer"])
def test_shipped_compression_spaces_sample_every_dimension(name):
    """cnn.yaml / transformer.yaml: every backend, scheme, prune method and distill setting is reachable on
    the CPU target, int8_static only on the backends that calibrate it (ONNX Runtime's QDQ, OpenVINO's NNCF),
    distillation only for pruned models; rebuild is exact."""
    import optuna

    from planner.space import load_space, rebuild, sample
    from planner.target import load_target

    space, target = load_space(name), load_target("cpu")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen: dict[str, set] = {"backend": set(), "scheme": set(), "method": set(), "steps": set(), "batch": set()}
    for _ in range(300):
        trial = study.ask()
        cfg = sample(trial, space, target, "torch")
        assert rebuild(trial.params, space, target, "torch") == cfg
        study.tell(trial, 0.0)
        seen["backend"].add(cfg.backend)
        seen["scheme"].add(cfg.quant.scheme)
        seen["method"].add(cfg.prune.method)
        seen["steps"].add(cfg.distill.steps)
        seen["batch"].add(cfg.batch_size)
        if cfg.quant.scheme == "int8_static":
            assert cfg.backend in ("onnxruntime", "openvino")
        if cfg.distill.active:
            assert cfg.prune.active and cfg.distill.lr in space.distill.lr.values()
    assert seen["backend"] == set(space.backends)
    from planner.schemes import precision_of

    # every scheme whose precision the target lists (bf16 is in the spaces for CPUs that have it; cpu.yaml lacks it)
    assert seen["scheme"] == {s for s in space.quantize.schemes if precision_of(s) in target.precisions}
    assert seen["method"] == set(space.prune.methods)
    assert seen["steps"] == set(space.distill.steps.values()) | {0}  # 0: an unpruned config is not distilled
    assert seen["batch"] == set(space.batch_size.values())
