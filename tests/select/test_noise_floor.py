"""The quality-loss noise floor (issue 19 item 5) and the study summary the MLflow UI shows (issue 20).

Real in-memory Optuna studies with the planner's trial attributes; real MLflow (sqlite in tmp_path) for the
registry."""

import optuna
import pytest

from planner.select.pareto import (Fastest, Knee, MostAccurate, hypervolume, noise_floor_for, pareto_front,
                                   study_summary)

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


def _study(points, floor=None, slo=None, max_loss=0.05, run_ids=()):
    """points: (backend, quant scheme, latency ms, quality loss, feasible); ``floor`` recorded as the study's."""
    s = optuna.create_study(directions=["minimize", "minimize"])
    s.set_user_attr("objectives", ["latency", "quality"])
    s.set_user_attr("model_info", {"output_kind": "logits"})
    s.set_user_attr("target_spec", {"constraints": {"max_quality_loss": max_loss, "latency_slo_ms": slo}})
    if floor is not None:
        s.set_user_attr("quality_noise_floor", floor)
    for backend, scheme, lat, loss, feasible in points:
        t = s.ask()
        metrics = {"latency_ms": lat, "latency_p50_ms": lat, "latency_p99_ms": lat * 1.2, "quality_loss": loss,
                   "throughput": 1e3 / lat}
        t.set_user_attr("metrics", metrics)
        t.set_user_attr("config", {"backend": backend, "batch_size": 1, "quant": {"scheme": scheme}})
        t.set_user_attr("config_key", f"{backend}-{scheme}")
        t.set_user_attr("label", backend + ("" if scheme == "none" else f" {scheme}"))
        t.set_constraint("quality", loss - max_loss if feasible else 1.0)
        if run_ids:
            t.set_user_attr("mlflow_run_id", run_ids[t.number])
        s.tell(t, [lat, loss])
    return s


# the resnet18 study of the issue: eager torch 26.7 ms at 1e-13, ORT fp32 11.2 ms at 2e-11, ORT int8 at 3e-3
RESNET = [("torch", "none", 26.7, 1e-13, True), ("onnxruntime", "none", 11.2, 2e-11, True),
          ("onnxruntime", "int8_static", 6.1, 3e-3, True)]


def test_two_deployments_below_the_floor_only_the_faster_is_on_the_front():
    s = _study(RESNET)
    front = pareto_front(s)
    assert [p.label for p in front] == ["onnxruntime int8_static", "onnxruntime"]
    assert MostAccurate().select(front).label == "onnxruntime"  # not eager torch, 2.4x slower for 1e-11
    assert Fastest().select(front).label == "onnxruntime int8_static"


def test_without_a_floor_numerical_noise_would_split_the_front():
    """The same study with the floor recorded as 0: eager torch is back on the front, and most-accurate."""
    front = pareto_front(_study(RESNET, floor=0.0))
    assert [p.label for p in front] == ["onnxruntime int8_static", "onnxruntime", "torch"]
    assert MostAccurate().select(front).label == "torch"


def test_losses_above_the_floor_are_not_ties():
    s = _study([("a", "none", 2.0, 2e-6, True), ("b", "none", 1.0, 5e-6, True)])
    assert [p.label for p in pareto_front(s)] == ["b", "a"]


def test_the_floor_is_recorded_per_output_kind_and_read_from_the_study():
    assert noise_floor_for("logits") == noise_floor_for("embedding") == 1e-6
    s = _study(RESNET, floor=1e-2)  # a study that recorded a coarse floor: int8's 3e-3 is a tie too
    assert [p.label for p in pareto_front(s)] == ["onnxruntime int8_static"]
    assert Knee().select(pareto_front(s)).label == "onnxruntime int8_static"


def test_hypervolume_of_a_staircase():
    s = _study([("a", "none", 1.0, 0.5, True), ("b", "none", 2.0, 1e-9, True), ("c", "none", 3.0, 0.7, True)], max_loss=1.0)
    front = pareto_front(s)
    assert [p.label for p in front] == ["a", "b"]
    # strips: (4 - 1) x (1 - 0.5) + (4 - 2) x (0.5 - 0): b's 1e-9 is below the floor, so 0
    assert hypervolume(front, 4.0, 1.0) == pytest.approx(2.5 / 4.0)
    assert hypervolume([], 4.0, 1.0) == 0.0
    # points beyond the reference point add nothing
    assert hypervolume(front, 0.5, 1.0) == 0.0


def test_study_summary_counts_and_compares_with_eager_fp32():
    s = _study(RESNET + [("tvm", "none", 9.0, 0.2, False)], slo=30.0)
    t = s.ask()
    t.set_user_attr("fail_reason", "compile")
    s.tell(t, state=optuna.trial.TrialState.FAIL)
    out = study_summary(s)
    m = out["metrics"]
    assert (m["trials_measured"], m["trials_infeasible"], m["trials_failed"], m["pareto_front_size"]) == (4, 1, 1, 2)
    assert m["best_latency_ms"] == 6.1 and out["fp32"].label == "torch"
    assert m["best_latency_vs_fp32"] == pytest.approx(6.1 / 26.7)
    assert m["best_throughput"] == pytest.approx(1e3 / 6.1)
    assert m["hypervolume_ref_latency_ms"] == 30.0 and m["hypervolume_ref_quality_loss"] == 0.05
    assert m["hypervolume"] == pytest.approx(((30 - 6.1) * (0.05 - 3e-3) + (30 - 11.2) * 3e-3) / (30 * 0.05))
    assert m["quality_noise_floor"] == 1e-6


def test_registry_aliases_and_descriptions(tmp_path):
    """Real MLflow: the registered versions of the front, described for a person, and aliases that do not
    separate deployments by noise (most-accurate is ORT fp32, not eager torch)."""
    from planner.record.mlflow import MlflowRecorder, run_name
    from planner.select.registry import register_front

    rec = MlflowRecorder(f"sqlite:///{tmp_path / 'mlflow.db'}", "planner/resnet18/cpu", tmp_path / "art")
    assert rec.client.get_experiment(rec.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    rec.start_study("resnet", None, {"planner.study": "resnet"}, {})
    labels = [b + ("" if q == "none" else f" {q}") for b, q, *_ in RESNET]
    rids = [rec.start_trial(i, {}, {"planner.label": label, "batch_size": "1"}) for i, label in enumerate(labels)]
    for i, rid in enumerate(rids):
        run = rec.client.get_run(rid)
        assert run.info.run_name == run_name(i, labels[i], 1) and run.data.tags["planner.study"] == "resnet"
    s = _study(RESNET, run_ids=rids)
    reg = register_front(rec.client, pareto_front(s), model_name="resnet18", target_name="cpu", study_name=s.study_name)
    by_alias = {a: rec.client.get_model_version(reg["name"], v) for a, v in reg["aliases"].items()}
    assert by_alias["most-accurate"].tags["backend"] == "onnxruntime" and by_alias["most-accurate"].tags["precision"] == "fp32"
    assert by_alias["fastest"].tags["quant_scheme"] == "int8_static"
    d = by_alias["most-accurate"].description
    assert d.startswith("onnxruntime, batch 1") and "latency 11.2 ms" in d and "quality loss 2e-11" in d
    assert "noise floor" in d and "target cpu" in d
    desc = rec.client.get_registered_model(reg["name"]).description
    assert f"`@most-accurate` → version {reg['aliases']['most-accurate']}: onnxruntime, batch 1" in desc


def test_run_names_say_what_the_trial_is():
    from planner.record.mlflow import run_name

    assert run_name(7, "onnxruntime[graph_optimization_level=all] int8_dynamic[op_types=matmul]", 1) == \
        "#7 onnxruntime int8_dynamic b=1"
    assert run_name(3, "torch prune:l1=0.3", 8) == "#3 torch prune:l1=0.3 b=8"
