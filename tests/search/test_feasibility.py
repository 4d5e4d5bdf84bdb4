"""Feasibility the search uses (issue 28): the samplers learn the constraints the study records, and a region a
measured trial already showed hopeless is not measured again (real Optuna storage; the fake plugin backend)."""

import optuna
import pytest
from optuna.trial import TrialState
from support import bound_files, fake_backend_files, run_cli

from planner.config import DistillConfig, PruneConfig, QuantConfig, TrialConfig
from planner.paths import Home
from planner.search.feasibility import (Evidence, covers, evidence, feasible_students, hopeless,
                                        sampler_reads_constraints)
from planner.search.samplers import make_sampler


def _proposals(tmp_path, sampler: str, constrained: bool, n: int) -> list[int]:
    """A 2-objective study over x in 0..9 where larger x is better on both objectives; with ``constrained``,
    x >= 5 violates a constraint set as the study sets its own (``Trial.set_constraint`` before ``tell``)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / f'{sampler}-{constrained}.db'}",
                                directions=["minimize", "minimize"], sampler=make_sampler(sampler, 0, 2))
    xs = []
    for _ in range(n):
        t = study.ask()
        x = t.suggest_int("x", 0, 9)
        y = t.suggest_categorical("y", ["a", "b"])
        xs.append(x)
        if constrained:
            t.set_constraint("quality", 1.0 if x >= 5 else -1.0)
        study.tell(t, [-x + (0.1 if y == "a" else 0.0), -x])
    return xs


@pytest.mark.parametrize("sampler,n,start", [("tpe", 40, 8), ("nsga2", 50, 20)])
def test_the_sampler_receives_the_constraints(tmp_path, sampler, n, start):
    """The same seed and objective values: with the constraint set, the sampler's later proposals leave the
    infeasible region (x >= 5) it otherwise prefers."""
    assert sampler_reads_constraints()
    free = _proposals(tmp_path, sampler, False, n)[start:]
    bound = _proposals(tmp_path, sampler, True, n)[start:]
    share_free = sum(x < 5 for x in free) / len(free)
    share_bound = sum(x < 5 for x in bound) / len(bound)
    assert share_bound > share_free + 0.25, (share_free, share_bound)
    assert share_bound > 0.6


def _cfg(ratio=0.3, steps=0, method="l1", scheme="none", round_to=8):
    return TrialConfig(backend="onnxruntime", batch_size=1, prune=PruneConfig(method, ratio, round_to),
                       quant=QuantConfig(scheme), distill=DistillConfig(steps=steps))


def test_what_a_hopeless_trial_covers():
    e = Evidence(3, _cfg(ratio=0.3, steps=100), loss=0.5)
    assert covers(e, _cfg(ratio=0.3, steps=100)) and covers(e, _cfg(ratio=0.5, steps=0))
    assert covers(e, _cfg(ratio=0.4, steps=30, scheme="int8_dynamic"))  # a lossier precision cannot win it back
    assert not covers(e, _cfg(ratio=0.2, steps=100))  # less pruning
    assert not covers(e, _cfg(ratio=0.3, steps=300))  # more distillation
    assert covers(e, _cfg(ratio=0.3, steps=100, method="l2"))  # another norm: the same widths (PRUNE_NORMS)
    assert not covers(e, _cfg(ratio=0.3, steps=100, method="magnitude"))  # another kind of pruning
    assert not covers(e, _cfg(ratio=0.3, steps=100, round_to=16))  # keeps more units
    assert not covers(e, _cfg(ratio=0.0, method="none"))
    q = Evidence(4, _cfg(ratio=0.3, steps=100, scheme="int8_dynamic"), loss=0.5)
    assert not covers(q, _cfg(ratio=0.3, steps=100))  # fp32 loses less than the int8 trial did
    assert hopeless(_cfg(ratio=0.6), [q, e]) == e


def _q(backend, scheme, ratio=0.0, method="none", **opts):
    return TrialConfig(backend=backend, batch_size=1, prune=PruneConfig(method, ratio, 8 if ratio else 1),
                       quant=QuantConfig(scheme, tuple(sorted(opts.items()))))


def test_a_quantization_that_lost_far_too_much_covers_the_same_quantization():
    """An unpruned int4 trial far above the bound covers int4 through the same quantizer (torch and torch.compile
    share planner's torch transforms) with a group no smaller, pruned or not; not another quantizer (ONNX Runtime's
    MatMulNBits, NNCF), a smaller group, another scheme or fp32.  Per-tensor int8 is lossier than per-channel."""
    e = Evidence(5, _q("torch", "int4_weight_only", group_size=32), loss=0.03)
    assert covers(e, _q("torch", "int4_weight_only", group_size=32))
    assert covers(e, _q("torch_compile", "int4_weight_only", group_size=128))  # same quantizer, coarser groups
    assert covers(e, _q("torch_compile", "int4_weight_only", 0.3, "l1", group_size=32))  # pruned on top
    assert not covers(e, _q("onnxruntime", "int4_weight_only", group_size=32))  # another quantizer (bound unknown)
    assert not covers(e, _q("openvino", "int4_weight_only", group_size=128))
    assert not covers(e, _q("torch", "int8_dynamic"))  # another scheme
    finer = Evidence(6, _q("torch", "int4_weight_only", group_size=128), loss=0.06)
    assert not covers(finer, _q("torch_compile", "int4_weight_only", group_size=32))  # finer groups may make it
    assert not covers(e, _q("torch", "none"))
    per_tensor = Evidence(7, _q("torch_compile", "int8_dynamic", per_channel=False), loss=0.06)
    assert covers(per_tensor, _q("torch", "int8_dynamic", per_channel=False))
    assert not covers(per_tensor, _q("torch", "int8_dynamic", per_channel=True))
    compiled = Evidence(11, TrialConfig(backend="torch_compile", batch_size=1, backend_options=(("mode", "default"),),
                                        quant=QuantConfig("int8_dynamic", (("per_channel", True),))), loss=0.06)
    assert covers(compiled, TrialConfig(backend="torch_compile", batch_size=1,  # a shared quantizer: modes do not quantize
                                        backend_options=(("mode", "max-autotune-no-cudagraphs"),),
                                        quant=QuantConfig("int8_dynamic", (("per_channel", True),))))
    per_channel = Evidence(8, _q("torch", "int8_dynamic", per_channel=True), loss=0.06)
    assert covers(per_channel, _q("torch_compile", "int8_dynamic", per_channel=False))
    # u8 or s8 activations: the same grid (Scheme.same_grid), so a miss with one covers the other; the calibration
    # method is not ordered (percentile may win back what minmax loses to outliers)
    static = Evidence(12, _q("onnxruntime", "int8_static", activation_type="u8", calibrate_method="percentile",
                             per_channel=False), loss=0.2)
    assert covers(static, _q("onnxruntime", "int8_static", activation_type="s8", calibrate_method="percentile",
                             per_channel=False))
    assert not covers(static, _q("onnxruntime", "int8_static", activation_type="s8", calibrate_method="minmax",
                                 per_channel=False))
    assert not covers(static, _q("onnxruntime", "int8_static", activation_type="u8", calibrate_method="percentile",
                                 per_channel=True))
    # NNCF's options the torch quantizer does not act on play no part; OpenVINO's own do
    nncf = Evidence(9, _q("openvino", "int8_static", preset="mixed"), loss=0.5)
    assert covers(nncf, _q("openvino", "int8_static", preset="mixed", fallback_layers=0))
    assert not covers(nncf, _q("openvino", "int8_static", preset="performance"))
    assert not covers(nncf, _q("openvino", "int8_static", preset="mixed", fallback_layers=2))  # fewer layers int8
    # on one backend, a decisive option that quantizes (llama.cpp's int4 type) must match
    q4_0 = Evidence(10, TrialConfig(backend="llamacpp", batch_size=1, backend_options=(("int4_type", "Q4_0"),),
                                    quant=QuantConfig("int4_weight_only")), loss=0.5)
    assert covers(q4_0, TrialConfig(backend="llamacpp", batch_size=1, backend_options=(("int4_type", "Q4_0"),),
                                    quant=QuantConfig("int4_weight_only")))
    assert not covers(q4_0, TrialConfig(backend="llamacpp", batch_size=1, backend_options=(("int4_type", "Q4_K_M"),),
                                        quant=QuantConfig("int4_weight_only")))


def test_a_weight_grid_far_off_covers_the_other_quantizers():
    """A data-free weight-only scheme (int4/int8 weights rounded to a grid) that lost at least
    CROSS_QUANTIZER_FACTOR x the bound through one quantizer covers it through the others at a grid no finer;
    2x is not enough (quantizers differ ~2x), a calibrated scheme never crosses, nor does llama.cpp's own GGUF types."""
    from planner.search.feasibility import CROSS_QUANTIZER_FACTOR

    bound = 0.01
    far = Evidence(1, _q("openvino", "int4_weight_only", group_size=32, symmetric=True), loss=0.033, over=3.3)
    assert CROSS_QUANTIZER_FACTOR <= 3.3
    assert covers(far, _q("onnxruntime", "int4_weight_only", group_size=32))
    assert covers(far, _q("torch", "int4_weight_only", group_size=128))  # a coarser grid
    assert covers(far, _q("torch_compile", "int4_weight_only", 0.3, "l1", group_size=32))  # pruned on top
    coarse = Evidence(6, _q("openvino", "int4_weight_only", group_size=128), loss=0.05, over=5.0)
    assert covers(coarse, _q("onnxruntime", "int4_weight_only", group_size=128))
    assert not covers(coarse, _q("onnxruntime", "int4_weight_only", group_size=32))  # finer groups may make it
    assert not covers(far, _q("torch", "int8_weight_only"))  # another scheme
    near = Evidence(2, _q("onnxruntime", "int4_weight_only", group_size=32), loss=0.025, over=2.5)
    assert covers(near, _q("onnxruntime", "int4_weight_only", group_size=32))  # its own quantizer: 2x suffices
    assert not covers(near, _q("torch", "int4_weight_only", group_size=32))
    static = Evidence(3, _q("onnxruntime", "int8_static", per_channel=False), loss=0.07, over=7.0)
    assert not covers(static, _q("openvino", "int8_static"))  # calibrated: ORT's per-tensor is not NNCF's
    wo = Evidence(4, _q("torch", "int8_weight_only"), loss=0.05, over=5.0)
    assert covers(wo, _q("openvino", "int8_weight_only"))
    gguf = TrialConfig(backend="llamacpp", batch_size=1, backend_options=(("int4_type", "Q4_K_M"),),
                       quant=QuantConfig("int4_weight_only"))
    assert not covers(far, gguf)
    assert not covers(Evidence(5, gguf, loss=0.5, over=50.0), _q("openvino", "int4_weight_only", group_size=128))
    # the multiple of the bound comes from the study's bound
    study = optuna.create_study(directions=["minimize", "minimize"])
    t = study.ask()
    t.set_user_attr("config", far.config.to_dict())
    t.set_user_attr("metrics", {"quality_loss": 0.033})
    study.tell(t, [1.0, 0.033])
    (got,) = evidence(study.get_trials(deepcopy=False), bound)
    assert got.over == pytest.approx(3.3)
    assert hopeless(_q("onnxruntime", "int4_weight_only", group_size=32), [got]) == got
    (lax,) = evidence(study.get_trials(deepcopy=False), 0.015)  # 2.2x a looser bound: not carried across
    assert hopeless(_q("onnxruntime", "int4_weight_only", group_size=32), [lax]) is None


def test_a_judged_stage_far_above_the_bound_covers_shorter_students():
    """A measured 3000-step student whose distillation was judged after 100 and 300 steps (0.4 and 0.02, in fp32)
    and ended within the bound is evidence at the stages that were far off: a request for the same pruning (or more)
    with no more steps than such a stage is hopeless, whatever its precision; longer requests are not."""
    bound = 0.005
    study = optuna.create_study(directions=["minimize", "minimize"])
    t = study.ask()
    t.set_user_attr("config", _cfg(ratio=0.6, steps=3000, scheme="int8_dynamic").to_dict())
    t.set_user_attr("metrics", {"quality_loss": 0.0})
    t.set_user_attr("distill_curve", [[100, 0.4], [300, 0.02], [1000, 0.004]])
    study.tell(t, [1.0, 0.0])
    got = evidence(study.get_trials(deepcopy=False), bound)
    assert [(e.stage, e.config.distill.steps, e.config.quant.scheme) for e in got] == [(100, 100, "none"), (300, 300, "none")]
    assert hopeless(_cfg(ratio=0.6, steps=300), got).stage == 300
    assert hopeless(_cfg(ratio=0.7, steps=100, scheme="int8_dynamic"), got).stage == 300  # smallest loss that covers
    assert hopeless(_cfg(ratio=0.6, steps=1000), got) is None  # that stage was within 2x the bound
    assert hopeless(_cfg(ratio=0.5, steps=100), got) is None  # less pruning
    assert hopeless(_cfg(ratio=0.6, steps=300, method="l2"), got).stage == 300  # the same widths, another norm
    assert hopeless(_cfg(ratio=0.6, steps=300, method="magnitude"), got) is None
    fast = _cfg(ratio=0.6, steps=300)
    fast = TrialConfig(backend=fast.backend, batch_size=1, prune=fast.prune, distill=DistillConfig(steps=300, lr=1e-3))
    assert hopeless(fast, got) is None  # a higher learning rate than the student's may recover sooner
    from planner.search.feasibility import explain

    assert "trial 0's student lost 0.02" in explain(got[1], bound) and "after 300 distillation steps" in explain(got[1], bound)


def test_evidence_is_measured_pruned_trials_far_above_the_bound(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'o.db'}", directions=["minimize", "minimize"])

    def add(cfg, loss, state=TrialState.COMPLETE, **attrs):
        t = study.ask()
        t.set_user_attr("config", cfg.to_dict())
        t.set_user_attr("metrics", {"quality_loss": loss})
        for k, v in attrs.items():
            t.set_user_attr(k, v)
        study.tell(t, [1.0, loss]) if state == TrialState.COMPLETE else study.tell(t, state=state)

    add(_cfg(ratio=0.3), 0.5)                       # 0 far above 0.05: evidence
    add(_cfg(ratio=0.2), 0.08)                      # 1 a student above, not far above: evidence (a near miss)
    add(_cfg(ratio=0.0, method="none"), 0.5)        # 2 neither pruned nor quantized: the engine's numbers
    add(_cfg(ratio=0.4), 0.5, duplicate_of=0)       # 3 a duplicate shows nothing new
    add(_cfg(ratio=0.3, steps=1000), None, TrialState.PRUNED,
        distill_stopped={"steps": 300, "quality_loss": 0.4})  # 4 a staged distillation stopped at 300 steps
    add(_cfg(ratio=0.0, method="none", scheme="int8_dynamic"), 0.2)  # 5 a quantization far above
    add(_cfg(ratio=0.0, method="none", scheme="int8_dynamic"), 0.06)  # 6 a quantization above, not far above
    add(_cfg(ratio=0.1), 0.04)                      # 7 a student within the bound
    got = evidence(study.get_trials(deepcopy=False), 0.05)
    assert [e.number for e in got] == [0, 1, 4, 5]
    assert got[2].config.distill.steps == 300
    assert got[1].over == pytest.approx(1.6)
    assert feasible_students(study.get_trials(deepcopy=False), 0.05) == [_cfg(ratio=0.1)]


def test_a_near_miss_covers_harder_students_unless_a_harder_one_met_the_bound():
    """A student 1.6x over the bound (a near miss: 540 test images give a noisy loss) covers students pruned more
    and trained no longer; a measured student at least as hard as the candidate that met the bound overrules it
    (the miss was noise), but not a loss far above the bound."""
    near = Evidence(1, _cfg(ratio=0.3, steps=1000), loss=0.008, over=1.6)
    far = Evidence(2, _cfg(ratio=0.3, steps=1000), loss=0.05, over=10.0)
    assert hopeless(_cfg(ratio=0.4, steps=300), [near]) == near
    met = _cfg(ratio=0.5, steps=300)  # pruned more, trained no longer, and within the bound
    assert hopeless(_cfg(ratio=0.4, steps=300), [near], [met]) is None
    assert hopeless(_cfg(ratio=0.4, steps=300), [near, far], [met]) == far
    assert hopeless(_cfg(ratio=0.6, steps=300), [near], [met]) == near  # harder than what met the bound
    assert hopeless(_cfg(ratio=0.4, steps=300), [near], [_cfg(ratio=0.5, steps=300, method="l2")]) is None  # same widths
    assert hopeless(_cfg(ratio=0.4, steps=300), [near], [_cfg(ratio=0.5, steps=300, method="magnitude")]) == near
    assert hopeless(_cfg(ratio=0.4, steps=300), [near], [_cfg(ratio=0.5, steps=1000)]) == near  # trained longer


SPACE = """\
name: hopeless
batch_size: [1]
backends:
  fake:
    behaviour: [steady]
prune:
  methods: [none, l1]
  ratio: [0.5, 0.7, 0.9]
  round_to: [1]
seeds:
  - {backend: fake, prune: {method: l1, ratio: 0.5, round_to: 1}}
"""


def test_a_hopeless_region_is_not_measured_again(tmp_path):
    """The seed prunes tiny-mlp by half with no recovery: its loss is far above the 0.05 bound.  The sampler's
    later proposals at ratios >= 0.5 are told PRUNED as hopeless (no worker, no trial of --trials); the
    unpruned model is still measured, and the study ends when only known configs are proposed."""
    space, target, env = fake_backend_files(tmp_path, SPACE)
    home = Home(tmp_path / "home")
    r = run_cli("optimize", "--model", "tiny-mlp", "--target", target, "--space", space, "--trials", "4",
                "--sampler", "random", "--eval-samples", "8", "--study", "hl", "--confirm", "0",
                "--home", home.root, env=env)
    assert r.returncode == 0, r.stderr + r.stdout
    study = optuna.load_study(study_name="hl", storage=home.optuna_url)
    trials = study.get_trials(deepcopy=False)
    seed = trials[0]
    assert seed.state == TrialState.COMPLETE and seed.user_attrs["metrics"]["quality_loss"] > 0.1, seed.user_attrs
    measured = [t for t in trials if t.state == TrialState.COMPLETE and t.user_attrs.get("duplicate_of") is None]
    assert [t.user_attrs["config"]["prune"]["ratio"] for t in measured] == [0.5, 0.0]  # the seed, the unpruned
    skipped = [t for t in trials if t.user_attrs.get("hopeless_like") is not None]
    assert skipped and all(t.state == TrialState.PRUNED and t.user_attrs["hopeless_like"] == 0 for t in skipped)
    assert {t.user_attrs["config"]["prune"]["ratio"] for t in skipped} == {0.7, 0.9}
    assert all(t.constraints["quality"] > 0 for t in skipped)  # the sampler sees the region as infeasible
    from planner.select.pareto import study_summary

    m = study_summary(study)["metrics"]
    assert m["trials_skipped"] == len(skipped) and m["trials_measured"] == 2 and m["trials_stopped"] == 0
    assert "skipped" in r.stdout and "hopeless" in r.stdout


BUDGET = """\
name: budget
batch_size: [1]
backends:
  fake:
    behaviour: [steady]
    build_delay: [2.0, 2.1, 2.2, 2.3, 2.4, 2.5, 2.6, 2.7, 2.8, 2.9, 3.0]
seeds:
  - {backend: fake, options: {behaviour: steady, build_delay: 2.0}}
"""


def test_a_timed_study_keeps_the_time_to_confirm_its_winner(tmp_path):
    """A demo-like study on the fake backend (each trial ~2-3 s, more candidates than --timeout 14 can measure):
    it stops starting trials while there is time to re-measure the winner, and re-measures it in full (before,
    the search used all of --timeout and the re-measurement was skipped)."""
    space, target, env = fake_backend_files(tmp_path, BUDGET)
    home = Home(tmp_path / "home")
    r = run_cli("optimize", "--model", "tiny-mlp", "--target", target, "--space", space, "--trials", "20",
                "--sampler", "random", "--eval-samples", "8", "--study", "b", "--confirm", "1", "--timeout", "14",
                "--home", home.root, env=env)
    assert r.returncode == 0, r.stderr + r.stdout
    study = optuna.load_study(study_name="b", storage=home.optuna_url)
    measured = [t for t in study.trials if t.state == TrialState.COMPLETE and t.user_attrs.get("duplicate_of") is None]
    assert len(measured) >= 2  # the search ran, and was not cut before it started
    conf = study.user_attrs["confirmation"]
    assert not conf["skipped"] and not conf["failed"], conf
    (winner,) = conf["trials"].values()
    assert "rounds_cut" not in winner, winner
    assert "kept to re-measure the winner" in r.stdout


def test_a_candidate_that_would_run_into_the_time_kept_to_confirm_is_not_started():
    """The demo's miss (issue 28): trials without distillation took ~5 s, students of 3000 steps ~60 s; with 57 s
    of --timeout left a 3000-step student was started (a typical trial fits) and ate the time kept to re-measure
    the winner.  The candidate itself is judged once sampled: by the longest trial built like it."""
    import datetime as dt
    import types

    from planner.search.remeasure import confirm_reserve, would_overrun

    study = optuna.create_study(directions=["minimize", "minimize"])
    t0 = dt.datetime(2026, 12, 6, 12, 0, 0)

    def measured(n, cfg, seconds, latency, **metrics):
        t = optuna.trial.create_trial(values=[latency, 0.0], constraints={"quality": -1.0}, user_attrs={
            "config": cfg.to_dict(), "label": cfg.describe(), "mlflow_run_id": f"run{n}",
            "metrics": {"latency_ms": latency, "latency_mean_ms": latency, "latency_samples": 100, "quality_loss": 0.0,
                        **metrics}})
        t.datetime_start, t.datetime_complete = t0, t0 + dt.timedelta(seconds=seconds)
        study.add_trial(t)

    for n, secs in enumerate((5.0, 4.0, 6.0, 5.5)):
        measured(n, _cfg(ratio=0.0, method="none"), secs, latency=1.0 + n)
    measured(4, _cfg(ratio=0.5, steps=3000), 62.0, latency=0.5, **{"time.transforms_s": 58.0})  # the winner
    opts = types.SimpleNamespace(timeout=240.0, confirm_top_k=1, confirm_rounds=3)
    opt = types.SimpleNamespace(opts=opts, kind=types.SimpleNamespace(remeasure_refusal=None), model_info={},
                                target=types.SimpleNamespace(measurement=types.SimpleNamespace(warmup_seconds=0.0),
                                                             traffic=None))
    student, plain = _cfg(ratio=0.4, steps=3000), _cfg(ratio=0.0, method="none")
    elapsed = 240.0 - 57.0
    assert confirm_reserve(opt, study) < 57.0  # judged by a typical trial, there was time to start one
    why = would_overrun(opt, study, student, elapsed)
    assert why and "3000 distillation steps" in why and "took up to 62 s" in why, why
    assert would_overrun(opt, study, plain, elapsed) is None  # a 6 s trial still fits
    # the winner's student on another engine (or asked for fewer steps) loads from the cache: a trial like the
    # ones without distillation, started (a demo left OpenVINO on its seeded student unmeasured, taken for 90 s)
    from dataclasses import replace

    again = replace(_cfg(ratio=0.5, steps=3000), backend="openvino")
    assert would_overrun(opt, study, again, elapsed) is None
    assert would_overrun(opt, study, _cfg(ratio=0.5, steps=1000), elapsed) is None
    assert would_overrun(opt, study, replace(_cfg(ratio=0.5, steps=3000), batch_size=64), elapsed) is None  # cnn.yaml's seeds
    assert would_overrun(opt, study, _cfg(ratio=0.6, steps=3000), elapsed)  # another network, as far as widths tell
    opt.model_info = {"prune_widths": {"channels": [32]}}  # l1 0.5 and 0.6 keep 16 of 32 at round_to 8: the same student
    assert would_overrun(opt, study, _cfg(ratio=0.6, steps=3000), elapsed) is None
    opt.model_info = {}
    why = would_overrun(opt, study, again, 240.0 - 8.0)  # with 8 s left even a 6 s trial runs into the reserve
    assert why and "its student trained by #4" in why and "took up to 6 s" in why, why
    assert would_overrun(opt, study, replace(again, distill=DistillConfig(steps=3000, lr=0.003)), elapsed)  # another lr
    # the demo's second run: students had taken up to 54.5 s, 71 s were left, and the next one took 64 s
    assert would_overrun(opt, study, student, 240.0 - (62.0 * 1.25 + 5.0)) and \
        would_overrun(opt, study, student, 240.0 - (62.0 * 1.25 + 12.0)) is None
    assert would_overrun(opt, study, _cfg(ratio=0.4, steps=300), elapsed) is None  # none like it measured yet
    assert would_overrun(opt, study, student, 240.0 - 200.0) is None  # early in the study it fits
    opts.timeout = None
    assert would_overrun(opt, study, student, elapsed) is None  # no --timeout, no deadline


def test_a_region_cut_twice_by_the_early_exit_is_known_slow(tmp_path):
    """Two trials of one (backend, scheme, batch) region with other options cut by the early exit: a third
    proposal there, pruned no more than they were, is known slow; one cut is not enough (an option may be what
    made it slow), and another batch size, scheme or more pruning is not covered."""
    from dataclasses import replace

    from planner.search.feasibility import region as region_of
    from planner.search.feasibility import slow, slow_cuts

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'o.db'}", directions=["minimize", "minimize"])

    def cut(cfg, reason="early_exit", **attrs):
        t = study.ask()
        t.set_user_attr("config", cfg.to_dict())
        t.set_user_attr("fail_reason", reason)
        for k, v in attrs.items():
            t.set_user_attr(k, v)
        study.tell(t, state=TrialState.FAIL)

    region = dict(ratio=0.0, method="none", scheme="int8_dynamic")
    cut(_cfg(**region))                                  # 0
    cut(_cfg(**region), reason="timeout")                # 1 not an early exit
    trials = study.get_trials(deepcopy=False)
    sibling = replace(_cfg(**region), backend_options=(("graph_optimization_level", "basic"),))
    assert region_of(sibling) == region_of(_cfg(**region))
    assert slow(sibling, slow_cuts(trials)) == []  # one cut: an option may be the cause
    assert slow(_cfg(**region), slow_cuts(trials)) == [0]  # but the very config cut is not built again
    cut(_cfg(ratio=0.3, method="l1", scheme="int8_dynamic", round_to=8))  # 2 pruned, cut anyway
    cuts = slow_cuts(study.get_trials(deepcopy=False))
    assert [n for n, _ in cuts] == [0, 2]
    assert slow(sibling, cuts) == [0, 2]                    # unpruned: no faster than either
    assert slow(_cfg(ratio=0.2, steps=100, scheme="int8_dynamic"), cuts) == []  # pruned: only #2 covers it
    assert slow(_cfg(ratio=0.5, scheme="int8_dynamic"), cuts) == []  # more pruning than #2 may be faster
    assert slow(_cfg(**{**region, "scheme": "none"}), cuts) == []  # another precision
    other_batch = TrialConfig(backend="onnxruntime", batch_size=8, quant=QuantConfig("int8_dynamic"))
    assert slow(other_batch, cuts) == []


def test_a_decisive_option_starts_another_slow_region(tmp_path):
    """Untuned TVM cut twice says nothing about tuned TVM: `tuning_trials` is declared decisive, `threads` is not."""
    from planner.backends.tvm import TVM
    from planner.search.feasibility import region, slow

    assert {"tuning_trials", "max_tuning_seconds", "opt_level"} <= set(TVM.decisive_options())
    assert "threads" not in TVM.decisive_options()

    def tvm(**opts):
        return TrialConfig(backend="tvm", batch_size=1, backend_options=tuple(sorted(opts.items())))

    cuts = [(0, tvm(threads=1)), (1, tvm(threads=2))]
    assert region(tvm()) == region(tvm(threads=2)) == region(tvm(tuning_trials=0))  # defaults resolved
    assert slow(tvm(), cuts) == [0, 1]
    assert slow(tvm(tuning_trials=64), cuts) == []


QUANT_SPACE = """\
name: quant-hopeless
batch_size: [1]
backends:
  torch: {}
  torch_compile: {mode: [default], freezing: [false]}
  onnxruntime: {}
quantize:
  schemes: [int8_dynamic]
  options:
    int8_dynamic: {per_channel: [true, false], op_types: [matmul]}
seeds:
  - {backend: torch, quant: int8_dynamic, quant_options: {per_channel: true}}
"""


def test_a_quantization_far_above_the_bound_is_not_tried_on_the_engines_that_share_it(tmp_path):
    """A bound no int8 can meet: the seed (torch, per-channel int8) misses it far; torch.compile's int8 (the same
    torch quantizer) and per-tensor int8 are skipped as hopeless naming the seed, without a worker; ONNX Runtime's
    int8 (its own quantizer) is still measured."""
    space, target = bound_files(tmp_path, QUANT_SPACE, 1.0e-9)
    home = Home(tmp_path / "home")
    r = run_cli("optimize", "--model", "tiny-mlp", "--target", target, "--space", space, "--trials", "3",
                "--sampler", "random", "--seed", "1", "--eval-samples", "8", "--study", "qh", "--confirm", "0",
                "--home", home.root)
    assert r.returncode == 0, r.stderr + r.stdout
    trials = optuna.load_study(study_name="qh", storage=home.optuna_url).get_trials(deepcopy=False)
    seed = trials[0]
    assert seed.user_attrs["metrics"]["quality_loss"] > 2e-9 and seed.constraints["quality"] > 0
    measured = {t.user_attrs["config"]["backend"] for t in trials
                if t.state == TrialState.COMPLETE and t.user_attrs.get("duplicate_of") is None}
    assert measured == {"torch", "onnxruntime"}, measured
    skipped = [t for t in trials if t.user_attrs.get("hopeless_like") is not None]
    assert skipped and all(t.user_attrs["hopeless_like"] == 0 and t.state == TrialState.PRUNED for t in skipped)
    assert {t.user_attrs["config"]["backend"] for t in skipped} <= {"torch", "torch_compile"}
    assert any(t.user_attrs["config"]["backend"] == "torch_compile" for t in skipped)
    assert "same quantization" in skipped[0].user_attrs["skip_message"]


def test_a_candidate_without_time_is_passed_over_before_the_search_stops():
    """A candidate that would run into the time kept to re-measure the winner is not started, but the sampler is
    asked again (a demo stopped with 119 s left at a 3000-step student, where trials without distillation took
    5-10 s); the search stops after `TIME_SKIPS` such candidates in a row.  A measured trial between them starts the
    count again; a known-hopeless skip neither counts nor resets it."""
    import types

    from planner.search.outcome import TrialOutcome
    from planner.search.study import TIME_SKIPS, _Loop

    study = optuna.create_study(directions=["minimize", "minimize"])
    opt = types.SimpleNamespace(opts=types.SimpleNamespace(timeout=240.0, max_duplicates=25),
                                reporter=types.SimpleNamespace(trial_done=lambda out: None))
    loop = _Loop.__new__(_Loop)
    loop.opt, loop.trials = opt, types.SimpleNamespace(store=types.SimpleNamespace(study=study))
    loop.outcomes, loop.asked, loop.dup_run, loop.time_run, loop.stop_asking = [], 0, 0, 0, False
    loop.stopped = "trial budget reached"

    def no_time(n):
        return TrialOutcome(n, None, "skipped", reason="time", message="not started: trials like it took up to 86 s")

    assert TIME_SKIPS > 1
    for n in range(TIME_SKIPS - 1):
        loop.done(no_time(n))
    assert not loop.stop_asking  # asked again
    loop.done(TrialOutcome(10, None, "ok"))  # a cheaper candidate fitted and ran
    loop.done(TrialOutcome(11, None, "skipped", reason="unsupported", message="prunes nothing"))
    for n in range(TIME_SKIPS - 1):
        loop.done(no_time(20 + n))
        loop.done(TrialOutcome(30 + n, None, "skipped", reason="unsupported", message="prunes nothing"))
    assert not loop.stop_asking
    loop.done(no_time(40))
    assert loop.stop_asking and loop.stopped.startswith("study timeout (240 s): not started"), loop.stopped
