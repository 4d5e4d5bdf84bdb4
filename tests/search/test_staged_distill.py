"""Staged distillation (issue 28): a pruned student is judged after each stage, a hopeless one is stopped, and a
longer request continues from the cached student (real torch training; the real study loop on the fake backend)."""

import copy

import optuna
import pytest
import torch
from support import fake_backend_files, run_cli

from planner.config import DistillConfig, PruneConfig
from planner.paths import Home
from planner.transforms.distill import (DistillStopped, distill_staged, hopeless_curve, predicted_loss, stage_plan)
from planner.transforms.prune import prune


def test_the_plan_and_the_stop_rule():
    assert stage_plan(3000) == [100, 300, 1000, 3000] and stage_plan(1000) == [100, 300, 1000]
    assert stage_plan(500) == [100, 300, 500] and stage_plan(50) == [50]
    # one point: at best loss ~ steps^-2 (each stage anneals from the top again).  0.3 at 100 steps can be 0.003
    # by 1000, not 0.01 by 300
    assert predicted_loss([(100, 0.3)], 1000) == pytest.approx(0.003)
    assert not hopeless_curve([(100, 0.3)], 1000, 0.01) and hopeless_curve([(100, 0.3)], 300, 0.01)
    # two points: the curve's own decay (slower than 1/steps here) decides
    curve = [(100, 0.3), (300, 0.2)]
    assert predicted_loss(curve, 3000) == pytest.approx(0.2 * 10 ** -0.369, rel=0.01)
    assert hopeless_curve(curve, 3000, 0.01)
    assert not hopeless_curve([(100, 0.3), (300, 0.005)], 3000, 0.01)  # within the bound already
    assert hopeless_curve([(100, 0.3), (300, 0.4)], 3000, 0.1)  # rising: the last loss stands


def _student():
    from planner.zoo import mlp

    teacher = mlp.build().eval()
    x = torch.randn(2, *_shape(teacher))
    return teacher, prune(copy.deepcopy(teacher), PruneConfig("l1", 0.5, 1), (x,)), x


def _shape(m):
    first = next(l for l in m.modules() if isinstance(l, torch.nn.Linear))
    return (first.in_features,)


def _calib(x_shape, n=256):
    g = torch.Generator().manual_seed(1)
    return {"x": torch.randn(n, *x_shape, generator=g).numpy()}


def test_a_hopeless_student_is_stopped_after_its_first_stage():
    teacher, student, _ = _student()
    judged = []

    def judge(s):
        judged.append(sum(p.numel() for p in s.parameters()))
        return 0.5  # far from a 0.0001 bound, whatever 100 steps did

    with pytest.raises(DistillStopped) as e:
        distill_staged(student, teacher, DistillConfig(steps=3000, lr=1e-3, batch=16), _calib(_shape(teacher)), ["x"],
                       judge=judge, bound=0.0001)
    assert len(judged) == 1 and e.value.detail["steps"] == 100 and e.value.reason.value == "distill_stopped"
    assert e.value.detail["predicted_loss"] == pytest.approx(0.5 / 30 ** 2)


def test_a_promising_student_continues_from_the_cache_as_if_trained_through():
    """300 steps cached at 100 and 300; a 1000-step request starts from the 300-step student and ends where a
    1000-step training from scratch ends (each stage: fresh Adam, batches seeded by its first step); a rebuild of
    the 1000-step student trains nothing."""
    teacher, student, _ = _student()
    calib = _calib(_shape(teacher))
    cache: dict[int, dict] = {}

    def save(steps, state):
        cache[steps] = {k: v.clone() for k, v in state.items()}

    def judge(s):
        return 0.0  # within any bound: never stopped

    short = copy.deepcopy(student)
    info = distill_staged(short, teacher, DistillConfig(steps=300, lr=1e-3, batch=16), calib, ["x"], judge=judge,
                          bound=0.01, load=cache.get, save=save)
    assert sorted(cache) == [100, 300] and info["distill_steps"] == 300

    resumed = copy.deepcopy(student)
    info = distill_staged(resumed, teacher, DistillConfig(steps=1000, lr=1e-3, batch=16), calib, ["x"], judge=judge,
                          bound=0.01, load=cache.get, save=save)
    assert info["distill_resumed_from"] == 300 and info["distill_steps"] == 1000

    again = copy.deepcopy(student)
    info = distill_staged(again, teacher, DistillConfig(steps=1000, lr=1e-3, batch=16), calib, ["x"], load=cache.get)
    assert info["distill_resumed_from"] == 1000
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), resumed.state_dict().values()))

    scratch = copy.deepcopy(student)
    distill_staged(scratch, teacher, DistillConfig(steps=1000, lr=1e-3, batch=16), calib, ["x"])
    for (k, a), b in zip(resumed.state_dict().items(), scratch.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), k


SPACE = """\
name: staged
batch_size: [1]
backends:
  fake:
    behaviour: [steady]
prune:
  methods: [l1]
  ratio: [0.5]
  round_to: [1]
distill:
  steps: [1000]
  lr: [0.001]
  batch: [16]
"""


def _one_trial(tmp_path, bound: float):
    """(home, the CLI's result, the trial) of a one-trial study of SPACE on tiny-mlp at quality bound ``bound``."""
    space, target, env = fake_backend_files(tmp_path, SPACE)
    target.write_text(target.read_text().replace("max_quality_loss: 0.05", f"max_quality_loss: {bound:.7f}"))
    home = Home(tmp_path / "home")
    r = run_cli("optimize", "--model", "tiny-mlp", "--target", target, "--space", space, "--trials", "1",
                "--sampler", "random", "--eval-samples", "8", "--study", "one", "--confirm", "0",
                "--home", home.root, env=env)
    assert r.returncode == 0, r.stderr + r.stdout
    (t,) = optuna.load_study(study_name="one", storage=home.optuna_url).trials
    return home, r, t


def test_the_study_stops_a_hopeless_student_and_says_where(tmp_path):
    """A bound no pruned student can reach: the trial's distillation stops after its first stage (100 of 1000
    steps); the trial is PRUNED with where it stopped and a positive quality constraint, and the student of that
    stage is cached for a longer request."""
    home, r, t = _one_trial(tmp_path, 0.000001)
    assert t.state.name == "PRUNED", t.user_attrs
    d = t.user_attrs["distill_stopped"]
    assert d["steps"] == 100 and d["quality_loss"] > 0.000002 and t.constraints["quality"] > 0
    out = " ".join(r.stdout.split())  # (the console wraps long lines)
    assert "stopped #0" in out and "distillation stopped at 100 of 1000 steps" in out, out
    assert list((home.cache / "students").glob("*.pt"))


def test_a_measured_trial_records_its_students_curve(tmp_path):
    """A student within the bound is measured as a trial; its quality after each judged stage (100 and 300 of 1000
    steps) is recorded on the trial (``distill_curve``): what the hopeless rule reads for shorter requests."""
    _, _, t = _one_trial(tmp_path, 0.9)
    assert t.state.name == "COMPLETE", t.user_attrs
    curve = t.user_attrs["distill_curve"]
    assert [n for n, _ in curve] == [100, 300] and all(0 <= q < 0.9 for _, q in curve), curve


def test_a_longer_request_continues_the_cached_student_through_the_model_source(tmp_path):
    """Through `ModelSource` (what a trial worker builds): a 1000-step request after a 300-step one with the same
    pruning and training settings continues from the cached 300-step student (one data pool for every step count),
    and ends with the weights a fresh cache trains through all 1000 steps."""
    from planner.config import TrialConfig
    from planner.model import parse_model
    from planner.source import ModelSource

    def cfg(steps):
        return TrialConfig(backend="torch", batch_size=1, prune=PruneConfig("l1", 0.5, 1),
                           distill=DistillConfig(steps=steps, lr=1e-3, batch=16))

    spec = parse_model("tiny-mlp")
    ModelSource(spec, tmp_path / "shared").torch_module(cfg(300))
    src = ModelSource(spec, tmp_path / "shared")
    cont = src.torch_module(cfg(1000))
    assert src.transform_info["distill_resumed_from"] == 300 and src.transform_info["distill_steps"] == 1000
    fresh = ModelSource(spec, tmp_path / "fresh")
    scratch = fresh.torch_module(cfg(1000))
    assert fresh.transform_info["distill_resumed_from"] == 0
    for (k, a), b in zip(cont.state_dict().items(), scratch.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-5), k

    # another pruning config that builds the same network (64 of 128 neurons: 0.55 rounded up to 16) is the same
    # student: the cached 1000-step one, no step trained again
    same = TrialConfig(backend="torch", batch_size=1, prune=PruneConfig("l1", 0.55, 16),
                       distill=DistillConfig(steps=1000, lr=1e-3, batch=16))
    src = ModelSource(spec, tmp_path / "shared")
    again = src.torch_module(same)
    assert src.transform_info["distill_resumed_from"] == 1000
    for (k, a), b in zip(again.state_dict().items(), cont.state_dict().values()):
        assert torch.equal(a, b), k


def test_stopped_students_count_toward_the_study_goal(tmp_path):
    """--study-trials counts every trial that ran a worker: a stopped student spent the budget as a measured one
    did.  (They were not counted: a study whose every candidate was stopped asked for more without end.)  A
    resumed run with the same goal runs nothing more."""
    space, target, env = fake_backend_files(tmp_path, SPACE)
    target.write_text(target.read_text().replace("max_quality_loss: 0.05", "max_quality_loss: 0.000001"))
    home = Home(tmp_path / "home")
    args = ("optimize", "--model", "tiny-mlp", "--target", target, "--space", space, "--study-trials", "2",
            "--timeout", "90", "--sampler", "random", "--eval-samples", "8", "--study", "goal", "--confirm", "0",
            "--home", home.root)
    r = run_cli(*args, env=env)
    assert r.returncode == 0, r.stderr + r.stdout
    trials = optuna.load_study(study_name="goal", storage=home.optuna_url).trials
    assert [t.state.name for t in trials] == ["PRUNED", "PRUNED"], [t.user_attrs for t in trials]
    assert all(t.user_attrs.get("distill_stopped") for t in trials)
    assert "finished trials (--study-trials 2)" in " ".join(r.stdout.split()), r.stdout
    r = run_cli(*args, env=env)
    assert r.returncode == 0, r.stderr + r.stdout
    assert len(optuna.load_study(study_name="goal", storage=home.optuna_url).trials) == 2


def test_an_evaluator_models_student_is_judged_by_the_evaluators_metric(tmp_path):
    """With a user evaluator, staged distillation judges a student by the evaluator's quality loss (the metric's
    drop from the fp32 model's, as a trial's), not by a comparison of raw outputs: the unchanged model loses
    nothing, a student whose outputs collapsed to zero loses all of `mean_abs`."""
    import numpy as np
    from support import DATA

    from planner.measure.worker import evaluator_judge
    from planner.model import parse_model

    spec = parse_model(f"{DATA / 'models.py'}:tiny").with_evaluator(f"{DATA / 'evaluators.py'}:score", "mean_abs:max")
    import sys

    sys.path.insert(0, str(DATA))
    import evaluators
    import models

    model = models.tiny().eval()
    with torch.no_grad():
        ref = evaluators.score(lambda feed: [model(torch.from_numpy(feed["x"])).numpy()], 8)
    reference = tmp_path / "reference.npz"
    np.savez(reference, **{f"evalref:{k}": np.float64(v) for k, v in ref.items()})
    judge = evaluator_judge(spec, str(reference), 8, "absolute")
    assert judge(model) == 0.0
    dead = copy.deepcopy(model)
    with torch.no_grad():
        for p in dead.parameters():
            p.zero_()
    assert judge(dead) == pytest.approx(ref["mean_abs"])


def test_a_study_stops_an_evaluator_models_hopeless_student(tmp_path):
    """A model with an --evaluator: its pruned student is judged after each stage by the evaluator's metric
    (`mean_abs`, higher is better; pruning lowers it) and stopped like any other (it was distilled through every
    stage unjudged, then measured)."""
    from support import DATA

    space, target, env = fake_backend_files(tmp_path, SPACE)
    target.write_text(target.read_text().replace("max_quality_loss: 0.05", "max_quality_loss: 0.000001"))
    home = Home(tmp_path / "home")
    r = run_cli("optimize", "--model", f"{DATA / 'models.py'}:tiny_hidden", "--inputs", "x:16",
                "--evaluator", f"{DATA / 'evaluators.py'}:score", "--evaluator-metric", "mean_abs:max",
                "--target", target, "--space", space, "--trials", "1", "--sampler", "random", "--eval-samples", "8",
                "--study", "ev", "--confirm", "0", "--home", home.root, env=env)
    assert r.returncode == 0, r.stderr + r.stdout
    (t,) = optuna.load_study(study_name="ev", storage=home.optuna_url).trials
    assert t.state.name == "PRUNED", t.user_attrs
    d = t.user_attrs["distill_stopped"]
    assert d["steps"] == 100 and d["quality_loss"] > 0.000002 and t.constraints["quality"] > 0
