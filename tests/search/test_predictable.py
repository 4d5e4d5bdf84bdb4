"""Predictable failures never become trials (issue 28): a pruning method that cannot apply to the model is tried
once when the study prepares and left out of its space; an int4 group size follows the pruned layer widths."""

import copy

import optuna
import pytest
import torch
from support import DATA, fake_backend_files, run_cli

from planner.config import PruneConfig
from planner.paths import Home
from planner.space import load_space, pruned_widths, rebuild, sample, shape_misfit
from planner.transforms.prune import prune, prune_info, transformer_widths, unusable_methods


def _models():
    import sys

    sys.path.insert(0, str(DATA))
    import models

    return models


def test_a_transformers_default_space_prunes_no_channels():
    """The default space's l1: on a transformer planner recognises (bert-mini) it removes heads and FFN neurons,
    never channels; on one it does not (Hugging Face naming, as a ViT) it is left out, as `heads` is on a CNN."""
    from planner.zoo import bert

    methods = load_space("default").prune.methods
    assert "l1" in methods
    enc = bert.build()
    ids = (torch.randint(0, 100, (2, 8)), torch.ones(2, 8, dtype=torch.long))
    assert unusable_methods(enc, methods, ids) == {}
    assert prune_info(prune(copy.deepcopy(enc), PruneConfig("l1", 0.5, 8), ids))["kind"] == "heads+ffn"

    m = _models()
    vit = unusable_methods(m.hf_style_vit(), ["none", "l1", "l2", "heads", "magnitude"], (torch.randn(2, 3, 8, 8),))
    assert set(vit) == {"l1", "l2", "heads"} and "attention" in vit["l1"]
    cnn = unusable_methods(m.tiny_conv(), ["none", "l1", "heads"], (torch.randn(2, 3, 8, 8),))
    assert set(cnn) == {"heads"}


SPACE = """\
name: predictable
batch_size: [1]
backends:
  fake:
    behaviour: [steady]
prune:
  methods: [none, l1, heads]
  ratio: [0.5]
seeds:
  - {backend: fake, prune: {method: l1, ratio: 0.5}}
"""


def _two_trials(tmp_path, space_yaml: str, model: str, study: str):
    """(home, the CLI's result) of a two-trial study of ``space_yaml`` on the fake backend, model ``model`` of
    tests/data/models.py on 3x8x8 inputs."""
    space, target, env = fake_backend_files(tmp_path, space_yaml)
    home = Home(tmp_path / "home")
    r = run_cli("optimize", "--model", f"{DATA / 'models.py'}:{model}", "--inputs", "x:3x8x8", "--target", target,
                "--space", space, "--trials", "2", "--sampler", "random", "--eval-samples", "8", "--study", study,
                "--confirm", "0", "--home", home.root, env=env)
    assert r.returncode == 0, r.stderr + r.stdout
    return home, r


def test_a_method_that_cannot_apply_is_left_out_when_the_study_prepares(tmp_path):
    """An HF-style ViT in a space with l1 and heads: both are tried once in the prepare worker, left out of the
    stored space with a note, the seed that names l1 is skipped, and no trial is pruned (none fails)."""
    home, r = _two_trials(tmp_path, SPACE, "hf_style_vit", "p")
    assert "l1 left out" in r.stderr and "heads left out" in r.stderr
    study = optuna.load_study(study_name="p", storage=home.optuna_url)
    assert study.user_attrs["space_spec"]["prune"]["methods"] == ["none"]
    assert len(study.user_attrs["space_notes"]) == 2
    assert any("does not apply" in s for s in study.user_attrs["seeds_skipped"])
    trials = study.get_trials(deepcopy=False)
    assert trials and all(t.state.name == "COMPLETE" for t in trials)
    assert all(t.user_attrs["config"]["prune"]["method"] == "none" for t in trials)


def test_predicted_widths_are_the_pruned_models():
    """`pruned_widths` predicts what head/FFN pruning leaves (the same keep rule, `planner.config.round_keep`)."""
    from planner.zoo import bert

    enc = bert.build()
    widths = transformer_widths(enc)
    assert widths["heads"] and widths["ffn"]
    for cfg in (PruneConfig("l2", 0.3, 16), PruneConfig("heads", 0.5, 64), PruneConfig("l1", 0.1, 1)):
        pruned = prune(copy.deepcopy(enc), cfg, (torch.randint(0, 100, (2, 8)), torch.ones(2, 8, dtype=torch.long)))
        actual = [m.o.in_features for m in pruned.modules() if hasattr(m, "num_heads")]
        actual += [m.fc2.in_features for m in pruned.modules() if hasattr(m, "fc2")]
        assert pruned_widths(widths, cfg) == actual
    assert pruned_widths(None, PruneConfig("l2", 0.3, 16)) == [] and pruned_widths(widths, PruneConfig()) == []


def test_a_ratio_that_keeps_every_channel_is_known_to_prune_nothing():
    """A CNN's prunable widths come from the prepare probe (`channel_widths`: not the output layer); a ratio and
    round_to that keep every channel (l1 0.1 rounded up to 8 keeps 32 of 32 and 64 of 64) prune nothing, as the
    pruned model shows, and `prunes_nothing` says so before any worker; 0.2 at 8 narrows the 64-wide layers."""
    from planner.config import TrialConfig
    from planner.space import prunes_nothing
    from planner.transforms.prune import channel_widths
    from planner.zoo.digits import DigitsCNN

    torch.manual_seed(0)
    model, ex = DigitsCNN().eval(), (torch.randn(2, 1, 16, 16),)
    widths = channel_widths(model, ex)
    assert widths == {"channels": [32, 64, 64]}  # conv1, conv2, conv3; fc gives the logits
    for ratio, round_to, nothing in ((0.1, 8, True), (0.1, 16, True), (0.2, 16, True), (0.2, 8, False), (0.5, 16, False)):
        cfg = TrialConfig(backend="onnxruntime", batch_size=1, prune=PruneConfig("l1", ratio, round_to))
        pruned = prune(copy.deepcopy(model), cfg.prune, ex)
        assert (sum(p.numel() for p in pruned.parameters()) == sum(p.numel() for p in model.parameters())) == nothing
        why = prunes_nothing(cfg, widths)
        assert (why is not None) == nothing, (ratio, round_to, why)
    assert "keeps every unit" in prunes_nothing(TrialConfig(backend="onnxruntime", batch_size=1, prune=PruneConfig("l1", 0.1, 8)), widths)
    assert prunes_nothing(TrialConfig(backend="onnxruntime", batch_size=1), widths) is None
    assert prunes_nothing(TrialConfig(backend="onnxruntime", batch_size=1, prune=PruneConfig("l1", 0.1, 8)), None) is None
    assert channel_widths(copy.deepcopy(DigitsCNN()), ex) is not None and transformer_widths(model) is None


def test_prunings_that_build_the_same_network_are_one_deployment():
    """l1 at 0.5 and at 0.6, rounded up to 8, keep the same channels of digits-cnn (16/32/32 of 32/64/64): the
    same pruned weights, so one network (`pruned_network`) and one config key; l2 keeps as many but ranks by
    another norm (another network, the same widths).  On a transformer, ``heads`` builds what ``l1`` builds."""
    from planner.config import TrialConfig
    from planner.space import kept_units, pruned_network
    from planner.transforms.pipeline import network_digest
    from planner.transforms.prune import channel_widths
    from planner.zoo import bert
    from planner.zoo.digits import DigitsCNN

    torch.manual_seed(0)
    model, ex = DigitsCNN().eval(), (torch.randn(2, 1, 16, 16),)
    widths = channel_widths(model, ex)

    def cfg(method, ratio, round_to=8):
        return TrialConfig(backend="onnxruntime", batch_size=1, prune=PruneConfig(method, ratio, round_to))

    def digest(c):
        return network_digest(prune(copy.deepcopy(model), c.prune, ex))

    a, b, c = cfg("l1", 0.5), cfg("l1", 0.6), cfg("l2", 0.5)
    assert [k for _, k in kept_units(a.prune, widths)] == [16, 32, 32]
    assert pruned_network(a.prune, widths) == pruned_network(b.prune, widths) != pruned_network(c.prune, widths)
    assert digest(a) == digest(b) != digest(c)  # what the key predicts is what pruning builds
    assert a.key() != b.key() and a.key(pruned_network(a.prune, widths)) == b.key(pruned_network(b.prune, widths))
    assert a.key(pruned_network(a.prune, widths)) != cfg("l1", 0.4).key(pruned_network(cfg("l1", 0.4).prune, widths))
    assert pruned_network(a.prune, None) is None and pruned_network(cfg("magnitude", 0.5).prune, widths) is None

    enc = bert.build().eval()
    ids = (torch.randint(0, 100, (2, 8)), torch.ones(2, 8, dtype=torch.long))
    tw = transformer_widths(enc)
    heads, l1 = cfg("heads", 0.5), cfg("l1", 0.5)
    assert pruned_network(heads.prune, tw) == pruned_network(l1.prune, tw)
    assert network_digest(prune(copy.deepcopy(enc), heads.prune, ids)) == \
        network_digest(prune(copy.deepcopy(enc), l1.prune, ids))


SAME_NETWORK = """\
name: same-network
batch_size: [1]
backends:
  fake:
    behaviour: [steady]
prune:
  methods: [l1]
  ratio: [0.5, 0.6]
  round_to: [1]
seeds:
  - {backend: fake, prune: {method: l1, ratio: 0.5, round_to: 1}}
  - {backend: fake, prune: {method: l1, ratio: 0.6, round_to: 1}}
"""


def test_a_pruning_that_builds_a_measured_network_is_a_duplicate(tmp_path):
    """TinyConv's 4 channels: l1 at 0.5 and at 0.6 both keep 2 (rounded up), the same network; the second seed
    is answered from the first trial's measurement, not measured again."""
    home, r = _two_trials(tmp_path, SAME_NETWORK, "tiny_conv", "n")
    assert "prunes to the same network (otherwise the same config) as trial 0" in " ".join(r.stdout.split())
    study = optuna.load_study(study_name="n", storage=home.optuna_url)
    first, second = study.trials[:2]
    assert [t.user_attrs["config"]["prune"]["ratio"] for t in (first, second)] == [0.5, 0.6]
    assert first.state.name == "COMPLETE" and first.user_attrs.get("duplicate_of") is None
    assert second.user_attrs["duplicate_of"] == first.number and second.values == first.values
    assert study.user_attrs["model_info"]["prune_widths"] == {"channels": [4]}  # from the prepare probe


@pytest.fixture()
def int4_target(tmp_path):
    from planner.target import load_target

    p = tmp_path / "t.yaml"
    p.write_text((DATA / "fast-cpu.yaml").read_text().replace("precisions: [fp32, int8]", "precisions: [fp32, int8, int4]")
                 .replace("backends: [", "backends: [openvino, "))
    return load_target(p)


def test_int4_group_size_follows_the_pruned_widths(tmp_path, int4_target):
    """MiniLM's widths (12 heads of 32, FFN 1536): l2 at 0.3 rounded to 16 keeps 8 heads (256) and 1088 FFN
    neurons; 128 does not divide 1088, so a sampled 128 becomes 32 (the space's largest below that divides);
    unpruned, 128 stays.  Rebuilt from the same params and widths, the config is the same (export)."""
    space = load_space("transformer")
    widths = {"heads": [[12, 32]] * 6, "ffn": [1536] * 6}
    base = {"backend": "openvino", "openvino.performance_hint": "LATENCY", "batch_size": 1,
            "openvino.quant": "int4_weight_only", "quant.int4_weight_only.group_size": 128}
    pruned = {**base, "prune.method": "l2", "prune.ratio": 0.3, "prune.round_to": 16, "distill.steps": 0}
    cfg = sample(optuna.trial.FixedTrial(pruned), space, int4_target, "torch", ["openvino"], widths=widths)
    assert cfg.quant.opts()["group_size"] == 32
    assert all(w % 32 == 0 for w in pruned_widths(widths, cfg.prune))
    assert rebuild(pruned, space, int4_target, "torch", widths=widths) == cfg
    unpruned = {**base, "prune.method": "none"}
    assert rebuild(unpruned, space, int4_target, "torch", widths=widths).quant.opts()["group_size"] == 128

    assert shape_misfit(cfg, widths) is None
    # l2 at 0.1 rounded to 16 keeps 1392 FFN neurons: neither 32 nor 128 divides it, so the study skips the
    # candidate before any worker starts (`Optimizer._start`), with the reason
    misfit = rebuild({**pruned, "prune.ratio": 0.1}, space, int4_target, "torch", widths=widths)
    assert "1392" in shape_misfit(misfit, widths)

    # in a real study: every sampled int4 config's group size divides its pruned widths, or it is known not to fit
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'o.db'}", directions=["minimize", "minimize"],
                                sampler=optuna.samplers.RandomSampler(seed=0))
    fit = misfits = 0
    for _ in range(120):
        t = study.ask()
        c = sample(t, space, int4_target, "torch", ["openvino"], widths=widths)
        study.tell(t, [1.0, 0.0])
        if c.quant.scheme == "int4_weight_only" and c.prune.active:
            ok = all(w % c.quant.opts()["group_size"] == 0 for w in pruned_widths(widths, c.prune))
            assert ok == (shape_misfit(c, widths) is None), c
            fit, misfits = fit + ok, misfits + (not ok)
    assert fit and misfits


def test_expensive_seeds_run_last_and_default_spaces_seed_batch_1():
    """Seeds that distill are measured after the cheap ones unless the space says `seed_order: as_written`; the
    default spaces seed OpenVINO (the host's best CPU engine) at batch 1."""
    from planner.space import ordered_seeds, seed_cost

    cnn = load_space("cnn")
    costs = [seed_cost(s, cnn) for _, s in ordered_seeds(cnn)]
    assert costs == sorted(costs) and costs[-1] == 3000 and costs[0] == 0
    shuffled = cnn.model_copy(update={"seeds": [cnn.seeds[-1], *cnn.seeds[:-1]]})
    order = [i for i, _ in ordered_seeds(shuffled)]
    # written first, measured after every cheap seed
    assert order.index(0) > 0 and all(seed_cost(s, shuffled) for _, s in ordered_seeds(shuffled)[order.index(0):])
    assert ordered_seeds(shuffled.model_copy(update={"seed_order": "as_written"}))[0][0] == 0
    for name in ("default", "cnn", "transformer"):
        assert any(s.backend == "best" and s.batch_size == 1 and s.quant == "none" for s in load_space(name).seeds), name
    # cnn.yaml: one student (trained once, then loaded from the student cache) at every batch size of the space, so a
    # short study's front has both ends of latency/throughput (a 240 s demo ended with 2 deployments without)
    students = [s for _, s in ordered_seeds(cnn) if seed_cost(s, cnn)]
    assert len({(tuple(sorted(s.prune.items())), tuple(sorted(s.distill.items()))) for s in students}) == 1, students
    assert sorted(s.batch_size for s in students) == sorted(cnn.batch_size.values())


def test_the_batch_1_seed_resolves_to_the_best_engine_the_target_allows():
    """`backend: best` is the first of BEST_ENGINES the study can use, at its own defaults: OpenVINO (LATENCY, its
    CPU default) where the target allows it, ONNX Runtime (graph level all, sequential) where its `backends:` list
    leaves OpenVINO out, instead of a seed skipped as unusable."""
    from planner.space import seed_params, usable_backends
    from planner.target import load_target

    cpu = load_target(DATA.parent.parent / "targets" / "cpu.yaml")
    no_ov = cpu.model_copy(update={"backends": [b for b in cpu.backends if b != "openvino"]})
    for name in ("default", "cnn", "transformer"):
        space = load_space(name)
        (best,) = [s for s in space.seeds if s.backend == "best" and s.batch_size == 1]
        backends, _ = usable_backends(space, no_ov, "torch")
        params, why = seed_params(best, space, no_ov, "torch", backends)
        assert params is not None, why
        assert params["backend"] == "onnxruntime" and params["batch_size"] == 1 and params["onnxruntime.quant"] == "none"
        assert params["onnxruntime.graph_optimization_level"] == "all", params
        assert seed_params(best, space, no_ov, "torch", ["torch"])[0]["backend"] == "torch"
        assert seed_params(best, space, no_ov, "torch", [])[0] is None
        if "openvino" in usable_backends(space, cpu, "torch")[0]:
            params, _ = seed_params(best, space, cpu, "torch", usable_backends(space, cpu, "torch")[0])
            assert params["backend"] == "openvino" and params["openvino.performance_hint"] == "LATENCY"


def test_a_best_seed_names_no_options(tmp_path):
    from planner.errors import ConfigError

    p = tmp_path / "s.yaml"
    p.write_text("name: s\nbackends: {onnxruntime: {graph_optimization_level: [all, basic]}}\n"
                 "seeds:\n  - {backend: best, options: {graph_optimization_level: basic}}\n  - {backend: bset}\n")
    with pytest.raises(ConfigError) as e:
        load_space(p)
    text = "\n".join(e.value.errors)
    assert "seeds[0].options: a 'best' seed runs the engine's own defaults" in text
    assert "seeds[1].backend: 'bset' is not one of the space's backends (onnxruntime) nor 'best'" in text


BEST_SPACE = """\
name: best-seed
batch_size: [1, 8]
backends:
  onnxruntime: {graph_optimization_level: [basic, all]}
  openvino: {performance_hint: [LATENCY, THROUGHPUT]}
seeds:
  - {backend: best, quant: none, batch_size: 1}
"""


def test_a_study_on_a_target_without_openvino_measures_the_best_seed_on_onnxruntime(tmp_path):
    """Real study (real Optuna and MLflow, ONNX Runtime on tiny-mlp): the test target's backends leave OpenVINO
    out; the study's first trial is the `best` seed on ONNX Runtime at batch 1, none skipped."""
    space = tmp_path / "space.yaml"
    space.write_text(BEST_SPACE)
    home = Home(tmp_path / "home")
    r = run_cli("optimize", "--model", "tiny-mlp", "--target", DATA / "fast-cpu.yaml", "--space", space, "--trials", "1",
                "--eval-samples", "8", "--study", "b", "--confirm", "0", "--home", home.root)
    assert r.returncode == 0, r.stderr + r.stdout
    study = optuna.load_study(study_name="b", storage=home.optuna_url)
    assert "seeds_skipped" not in study.user_attrs
    (t,) = study.trials
    assert t.state.name == "COMPLETE" and t.user_attrs["seed"] == 0
    cfg = t.user_attrs["config"]
    assert cfg["backend"] == "onnxruntime" and cfg["batch_size"] == 1, cfg
    assert t.params["onnxruntime.graph_optimization_level"] == "all"  # ONNX Runtime's default


def test_a_decoder_workload_without_a_space_searches_the_llm_space():
    """`planner optimize --workload FILE` without --space: the LLM space (llama.cpp in it, no pruning), not the
    default space's channel pruning and OpenVINO int8_static the decoder runtimes do not take."""
    from planner.cli import default_space

    assert default_space(None, "chat.yaml") == "llm" and default_space(None, None) == "default"
    assert default_space("cnn", "chat.yaml") == "cnn"
    llm = load_space(default_space(None, "chat.yaml"))
    assert "llamacpp" in llm.backends and llm.prune.methods == ["none"]


RESUME_SPACE = """\
name: resumed
batch_size: [1]
backends:
  fake:
    behaviour: [steady]
prune:
  methods: [METHODS]
  ratio: [0.2, 0.3, 0.4, 0.5]
  round_to: [1]
"""


def test_a_resume_keeps_the_pruning_methods_the_study_was_created_with(tmp_path):
    """The first run drops `heads` (a CNN has none) and searches [none, l1, magnitude]; the resumed run's space
    (same name) lists [none, l1, heads], so its own drop leaves [none, l1].  Optuna refuses a categorical whose
    choices change within a study: the resume samples the stored choices, and a proposal of a method this run
    cannot use is skipped (PRUNED, unsupported, no worker), never a crash or a failed trial."""
    space, target, env = fake_backend_files(tmp_path, RESUME_SPACE.replace("METHODS", "none, l1, heads, magnitude"))
    home = Home(tmp_path / "home")
    args = ("optimize", "--model", f"{DATA / 'models.py'}:tiny_conv", "--inputs", "x:3x8x8", "--target", target,
            "--space", space, "--sampler", "random",
            "--eval-samples", "8", "--study", "r", "--confirm", "0", "--home", home.root)
    r = run_cli(*args, "--trials", "3", env=env)
    assert r.returncode == 0, r.stderr + r.stdout
    study = optuna.load_study(study_name="r", storage=home.optuna_url)
    assert study.user_attrs["space_spec"]["prune"]["methods"] == ["none", "l1", "magnitude"]
    space.write_text(RESUME_SPACE.replace("METHODS", "none, l1, heads"))
    r = run_cli(*args, "--trials", "6", "--seed", "1", env=env)
    assert r.returncode == 0, r.stderr + r.stdout
    assert "magnitude" in r.stderr and "not in this run" in r.stderr, r.stderr
    trials = optuna.load_study(study_name="r", storage=home.optuna_url).get_trials(deepcopy=False)
    assert not [t for t in trials if t.state.name == "FAIL"], [t.user_attrs for t in trials]
    later = [t for t in trials if t.number >= 3]
    assert later
    # a magnitude config the first run measured is answered from the study; a new one is skipped
    skipped = [t for t in later if t.params.get("prune.method") == "magnitude" and t.user_attrs.get("duplicate_of") is None]
    assert skipped and all(t.state.name == "PRUNED" and t.user_attrs["skip_reason"] == "unsupported" for t in skipped)
    assert all(t.user_attrs["config"]["prune"]["method"] in ("none", "l1") for t in later if t not in skipped)


def test_a_resume_keeps_the_backends_the_study_was_created_with(tmp_path):
    """The first run searches torch and ONNX Runtime; the resumed run's target (same name) allows torch only.  The
    resume samples the stored backends, skips an ONNX Runtime proposal as unsupported (no worker, no failed
    trial) and says so; before, Optuna refused the changed choices with a traceback."""
    target = tmp_path / "t.yaml"
    target.write_text((DATA / "fast-cpu.yaml").read_text().replace("backends: [torch, torch_compile, onnxruntime, tvm]",
                                                                   "backends: [torch, onnxruntime]"))
    space = tmp_path / "s.yaml"
    space.write_text("name: two\nbatch_size: [1, 4]\nbackends:\n  torch: {}\n"
                     "  onnxruntime: {graph_optimization_level: [disable, basic, extended, all]}\n")
    home = Home(tmp_path / "home")
    args = ("optimize", "--model", "tiny-mlp", "--target", target, "--space", space, "--sampler", "random",
            "--eval-samples", "6", "--study", "b", "--confirm", "0", "--home", home.root)
    r = run_cli(*args, "--trials", "2")
    assert r.returncode == 0, r.stderr + r.stdout
    assert optuna.load_study(study_name="b", storage=home.optuna_url).user_attrs["backends"] == ["torch", "onnxruntime"]
    target.write_text(target.read_text().replace("backends: [torch, onnxruntime]", "backends: [torch]"))
    r = run_cli(*args, "--trials", "4", "--seed", "3")
    assert r.returncode == 0, r.stderr + r.stdout
    assert "backend onnxruntime is searched by study b" in r.stderr, r.stderr
    trials = optuna.load_study(study_name="b", storage=home.optuna_url).get_trials(deepcopy=False)
    assert not [t for t in trials if t.state.name == "FAIL"], [t.user_attrs for t in trials]
    later = [t for t in trials if t.number >= 2 and t.user_attrs.get("duplicate_of") is None]
    ort = [t for t in later if t.params.get("backend") == "onnxruntime"]
    assert ort, [(t.number, t.params, t.state.name) for t in trials]
    assert all(t.state.name == "PRUNED" and t.user_attrs["skip_reason"] == "unsupported" for t in ort)
    assert [t for t in later if t.state.name == "COMPLETE" and t.params.get("backend") == "torch"]


def test_a_resume_whose_space_changed_a_choice_is_one_line_exit_2(tmp_path):
    space = tmp_path / "s.yaml"
    space.write_text("name: opt\nbatch_size: [1]\nbackends:\n  onnxruntime: {graph_optimization_level: [basic, all]}\n")
    home = Home(tmp_path / "home")
    args = ("optimize", "--model", "tiny-mlp", "--target", DATA / "fast-cpu.yaml", "--space", space, "--sampler",
            "random", "--eval-samples", "6", "--study", "o", "--confirm", "0", "--home", home.root)
    r = run_cli(*args, "--trials", "1")
    assert r.returncode == 0, r.stderr + r.stdout
    space.write_text(space.read_text().replace("[basic, all]", "[basic, extended, all]"))
    r = run_cli(*args, "--trials", "2")
    assert r.returncode == 2, r.stderr + r.stdout
    err = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "--study o" in err[0] and "space 'opt' changed" in err[0] and "Traceback" not in r.stderr
