"""Composites (issue 28): the fastest engine configuration measured on the unpruned model, run on the best pruned
student, queued as the study's next trial (real Optuna storage; a real study on tiny-mlp)."""

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial
from support import bound_files, run_cli

from planner.paths import Home
from planner.search.compose import composites


def _trial(number, params, ms, batch=1, loss=0.0, violated=False, duplicate=False):
    dists = {k: CategoricalDistribution([v]) for k, v in params.items()}
    method = params.get("prune.method", "none")
    attrs = {"config": {"batch_size": batch, "prune": {"method": method}}, "metrics": {"latency_ms": ms, "quality_loss": loss}}
    if duplicate:
        attrs["duplicate_of"] = 0
    t = create_trial(params=params, distributions=dists, values=[ms, loss], user_attrs=attrs,
                     system_attrs={"constraints": [1.0 if violated else -1.0]})
    t.number = number
    return t


OV_INT8 = {"backend": "openvino", "openvino.performance_hint": "LATENCY", "openvino.quant": "int8_static",
           "quant.int8_static.fallback_layers": 0, "prune.method": "none"}
ORT = {"backend": "onnxruntime", "onnxruntime.quant": "none", "prune.method": "none"}
STUDENT = {"prune.method": "l1", "prune.ratio": 0.5, "prune.round_to": 8, "distill.steps": 3000, "distill.lr": 0.003}
ORT_STUDENT = {"backend": "onnxruntime", "onnxruntime.quant": "none", **STUDENT}


def test_the_fastest_engine_is_paired_with_the_fastest_student_at_each_batch_size():
    trials = [_trial(0, ORT, 0.9, batch=64), _trial(1, OV_INT8, 0.54, batch=64), _trial(2, ORT_STUDENT, 0.57, batch=64),
              _trial(3, OV_INT8, 0.06, batch=1), _trial(4, {**ORT, "prune.method": "none"}, 0.05, batch=1),
              _trial(5, {"backend": "torch", **STUDENT}, 0.7, batch=64)]
    (params, pair), = composites(trials, "latency_ms", False, set())
    assert pair == {"engine": 1, "student": 2}
    assert params == {**{k: v for k, v in OV_INT8.items() if k != "prune.method"}, **STUDENT}
    assert composites(trials, "latency_ms", False, {(1, 2)}) == []  # composed once
    # the objective's direction (say, a throughput): maximizing, the largest value is the best
    (_, pair), = composites(trials, "latency_ms", True, set())
    assert pair == {"engine": 0, "student": 5}


def test_no_composite_from_infeasible_or_duplicate_trials_or_a_student_already_on_the_engine():
    infeasible = [_trial(1, OV_INT8, 0.5), _trial(2, ORT_STUDENT, 0.4, violated=True)]
    assert composites(infeasible, "latency_ms", False, set()) == []
    duplicate = [_trial(1, OV_INT8, 0.5, duplicate=True), _trial(2, ORT_STUDENT, 0.4)]
    assert composites(duplicate, "latency_ms", False, set()) == []
    on_it = [_trial(1, ORT, 0.5), _trial(2, ORT_STUDENT, 0.4), _trial(3, OV_INT8, 0.6)]
    assert composites(on_it, "latency_ms", False, set()) == []  # ONNX Runtime is the fastest engine and has it
    other_batch = [_trial(1, OV_INT8, 0.5, batch=8), _trial(2, ORT_STUDENT, 0.4, batch=1)]
    assert composites(other_batch, "latency_ms", False, set()) == []


def test_no_composite_whose_two_losses_add_up_past_the_bound():
    """A student at 0.0037 on an engine whose int8 lost 0.0019: together over a 0.005 bound, not composed."""
    edge = [_trial(1, OV_INT8, 0.5, loss=0.0019), _trial(2, ORT_STUDENT, 0.4, loss=0.0037)]
    assert composites(edge, "latency_ms", False, set(), bound=0.005) == []
    assert len(composites(edge, "latency_ms", False, set(), bound=0.006)) == 1
    assert len(composites(edge, "latency_ms", False, set())) == 1  # no bound given: composed


SPACE = """\
name: compose
batch_size: [1]
backends:
  torch: {}
  onnxruntime: {}
prune:
  methods: [none, l1]
  ratio: [0.3]
  round_to: [1]
distill:
  steps: [0, 30]
seeds:
  - {backend: onnxruntime, prune: {method: none}}
  - {backend: torch, prune: {method: l1, ratio: 0.3, round_to: 1}, distill: {steps: 30}}
"""


def test_a_study_measures_the_composite_after_its_seeds(tmp_path):
    """The seeds measure ONNX Runtime unpruned and a torch student; the study's third trial is the student on
    ONNX Runtime (the only unpruned engine it has, hence the fastest), marked as a composite on the console."""
    space, target = bound_files(tmp_path, SPACE, 1.0)
    home = Home(tmp_path / "home")
    r = run_cli("optimize", "--model", "tiny-mlp", "--target", target, "--space", space, "--trials", "3",
                "--sampler", "random", "--eval-samples", "8", "--study", "c", "--confirm", "0", "--home", home.root)
    assert r.returncode == 0, r.stderr + r.stdout
    study = optuna.load_study(study_name="c", storage=home.optuna_url)
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 3 and all(t.state == TrialState.COMPLETE for t in trials), [t.state for t in trials]
    third = trials[2]
    assert third.user_attrs["composed_of"] == {"engine": 0, "student": 1}
    cfg = third.user_attrs["config"]
    assert cfg["backend"] == "onnxruntime" and cfg["prune"]["method"] == "l1" and cfg["prune"]["ratio"] == 0.3
    assert cfg["distill"]["steps"] == 30
    assert study.user_attrs["composed"] == [[0, 1]]
    assert "composed: the engine of #0, the student of #1" in " ".join(r.stdout.split()), r.stdout
    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking_uri=home.tracking_uri)
    runs = c.search_runs([e.experiment_id for e in c.search_experiments()], "tags.`planner.origin` != ''")
    origins = {int(run.data.tags["planner.trial"]): run.data.tags["planner.origin"] for run in runs}
    assert origins == {0: "seed 0", 1: "seed 1", 2: "composite of #0 (engine) and #1 (student)"}, origins
