"""A decoder study end to end: TTFT/TPOT objectives and SLO constraints in Optuna and MLflow."""

import pytest
from support import ROOT, DATA, run_cli

from planner.paths import Home

TINY = f"{ROOT / 'tests' / 'llm' / 'tiny_gpt.py'}:build"


def _workload(tmp_path, ttft_ms):
    p = tmp_path / f"wl-{ttft_ms}.yaml"
    p.write_text(f"name: tiny-chat\nprompt_lengths: [16]\ngeneration_length: 6\nbatch_sizes: [1]\n"
                 f"slo: {{ttft_ms: {ttft_ms}, tpot_ms: 1000, percentile: p99}}\nquality: {{max_disagreement: 0.2}}\n"
                 "eval: {sequences: 2, forced_tokens: 4}\n")
    return p


def test_llm_study_records_ttft_tpot_and_enforces_the_slo(tmp_path):
    import optuna
    from mlflow.tracking import MlflowClient
    from optuna.trial import TrialState

    home = Home(tmp_path / "home")
    space = tmp_path / "space.yaml"
    space.write_text("name: dec\nbackends:\n  torch: {}\n  onnxruntime: {}\n  tvm: {}\n")
    for name, ttft in (("easy", 10000), ("impossible", 0.000001)):
        r = run_cli("optimize", "--model", TINY, "--target", DATA / "fast-cpu.yaml", "--space", space,
                    "--workload", _workload(tmp_path, ttft), "--trials", "3", "--sampler", "grid", "--study", name,
                    "--home", home.root)
        assert r.returncode == 0, r.stderr
        assert "skipped tvm" in r.stdout  # no decoder runtime for TVM: never sampled
        study = optuna.load_study(study_name=name, storage=home.optuna_url)
        assert study.metric_names == ["ttft_ms", "tpot_ms", "quality_loss"]
        done = [t for t in study.trials if t.state == TrialState.COMPLETE]
        assert {t.user_attrs["config"]["backend"] for t in done} == {"torch", "onnxruntime"}
        for t in done:
            m = t.user_attrs["metrics"]
            assert 0 < m["tpot_p99_ms"] and 0 < m["ttft_p99_ms"] and m["tokens_per_s"] > 0
            assert m["quality_loss"] <= 0.2  # fp32 runtimes agree with eager greedy decoding
            assert set(t.constraints) >= {"ttft_slo", "tpot_slo", "quality"}
        feasible = [t for t in done if all(v <= 0 for v in t.constraints.values())]
        assert (len(feasible) == len(done)) if name == "easy" else not feasible
    c = MlflowClient(tracking_uri=home.tracking_uri)
    runs = c.search_runs([e.experiment_id for e in c.search_experiments()], "tags.`planner.kind` = 'trial'")
    assert runs and all("ttft_p99_ms" in r.data.metrics and "tpot_p50_ms" in r.data.metrics for r in runs)


@pytest.mark.slow  # ~50 s on a busy 2-core host (NNCF compression and two worker processes)
def test_openvino_decoder_study_logs_ttft_and_tpot(tmp_path):
    """Two trials, eager fp32 and OpenVINO (one stateful step graph) with NNCF int8 weights: both measured and logged."""
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    import optuna
    from mlflow.tracking import MlflowClient
    from optuna.trial import TrialState

    home = Home(tmp_path / "home")
    space = tmp_path / "space.yaml"
    space.write_text("name: dec-ov\nbackends:\n  torch: {}\n  openvino: {}\nquantize:\n  schemes: [none, int8_weight_only]\n"
                     "seeds:\n  - {backend: torch, quant: none}\n  - {backend: openvino, quant: int8_weight_only}\n")
    target = tmp_path / "cpu.yaml"  # fast-cpu, with openvino among its backends
    target.write_text((DATA / "fast-cpu.yaml").read_text().replace("name: fast-cpu", "name: fast-cpu-ov")
                      .replace("backends: [torch,", "backends: [openvino, torch,"))
    r = run_cli("optimize", "--model", TINY, "--target", target, "--space", space,
                "--workload", _workload(tmp_path, 10000), "--trials", "2", "--study", "ov", "--home", home.root)
    assert r.returncode == 0, r.stderr
    study = optuna.load_study(study_name="ov", storage=home.optuna_url)
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(done) == 2, [(t.state, t.user_attrs.get("fail_message")) for t in study.trials]
    assert {(t.user_attrs["config"]["backend"], t.user_attrs["config"]["quant"]["scheme"]) for t in done} == \
        {("torch", "none"), ("openvino", "int8_weight_only")}
    for t in done:
        m = t.user_attrs["metrics"]
        assert 0 < m["tpot_p99_ms"] and 0 < m["ttft_p99_ms"] and m["tokens_per_s"] > 0
    c = MlflowClient(tracking_uri=home.tracking_uri)
    runs = c.search_runs([e.experiment_id for e in c.search_experiments()], "tags.`planner.kind` = 'trial'")
    ov = [r for r in runs if r.data.params["backend"] == "openvino"]
    assert len(ov) == 1 and {"ttft_p99_ms", "tpot_p99_ms", "agreement"} <= set(ov[0].data.metrics)


def test_a_transformers_causal_lm_is_a_decoder_study(tmp_path):
    """A user factory returning a transformers LlamaForCausalLM: measured like gpt-mini, with int8 and FFN pruning."""
    import pytest

    pytest.importorskip("transformers")
    import optuna
    from optuna.trial import TrialState

    home = Home(tmp_path / "home")
    space = tmp_path / "space.yaml"
    space.write_text("name: hf\nbackends:\n  torch: {}\nquantize:\n  schemes: [none, int8_dynamic]\n"
                     "prune:\n  methods: [none, heads]\n  ratio: {low: 0.5, high: 0.5, step: 0.1}\n  round_to: [16]\n")
    r = run_cli("optimize", "--model", f"{ROOT / 'tests' / 'llm' / 'tiny_llama.py'}:build", "--target",
                DATA / "fast-cpu.yaml", "--space", space, "--workload", _workload(tmp_path, 10000), "--trials", "4",
                "--sampler", "grid", "--study", "hf", "--home", home.root)
    assert r.returncode == 0, r.stderr
    trials = optuna.load_study(study_name="hf", storage=home.optuna_url).trials
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(done) == 4, [(t.state, t.user_attrs.get("fail_message")) for t in trials]
    assert {(t.user_attrs["config"]["quant"]["scheme"], t.user_attrs["config"]["prune"]["method"]) for t in done} == \
        {(q, p) for q in ("none", "int8_dynamic") for p in ("none", "heads")}
    for t in done:
        m = t.user_attrs["metrics"]
        assert m["ttft_p99_ms"] > 0 and m["tpot_p99_ms"] > 0
        if t.user_attrs["config"]["prune"]["method"] == "heads":  # FFN neurons removed: fewer parameters
            assert m["transform.prune_params_after"] < m["transform.prune_params_before"]


@pytest.mark.slow
def test_smollm2_decoder_study_logs_ttft_and_tpot(tmp_path):
    """The real model: 2 trials (torch fp32, and llama.cpp Q8_0 when built) with real prompts for quality."""
    pytest.importorskip("transformers")
    pytest.importorskip("gguf")
    pytest.importorskip("accelerate")
    import optuna
    from mlflow.tracking import MlflowClient
    from optuna.trial import TrialState

    from planner.errors import ConfigError
    from planner.zoo import smollm2

    try:
        smollm2.gguf_file()
    except ConfigError as e:
        pytest.skip(str(e))
    import planner.backends.registry as registry

    lc = registry.get("llamacpp").availability().usable
    home = Home(tmp_path / "home")
    space = tmp_path / "space.yaml"
    second = ("llamacpp", "int8_weight_only") if lc else ("torch", "int8_dynamic")
    space.write_text(f"name: smol\nbackends:\n  torch: {{}}\n  {second[0]}: {{}}\n"
                     f"quantize:\n  schemes: [none, {second[1]}]\n"
                     f"seeds:\n  - {{backend: torch, quant: none}}\n  - {{backend: {second[0]}, quant: {second[1]}}}\n")
    wl = tmp_path / "wl.yaml"
    wl.write_text("name: smol-chat\nprompt_lengths: [64]\ngeneration_length: 4\nbatch_sizes: [1]\n"
                  "slo: {ttft_ms: 100000, tpot_ms: 100000, percentile: p99}\nquality: {max_disagreement: 0.2, max_kl: 0.5}\n"
                  "eval: {sequences: 2, forced_tokens: 6}\n")
    target = tmp_path / "cpu.yaml"  # fast-cpu, with llamacpp among its backends
    target.write_text((DATA / "fast-cpu.yaml").read_text().replace("name: fast-cpu", "name: fast-cpu-llm")
                      .replace("backends: [torch,", "backends: [llamacpp, torch,"))
    r = run_cli("optimize", "--model", "smollm2-135m", "--target", target, "--space", space,
                "--workload", wl, "--trials", "2", "--study", "smol", "--home", home.root)
    assert r.returncode == 0, r.stderr
    study = optuna.load_study(study_name="smol", storage=home.optuna_url)
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(done) == 2, [(t.state, t.user_attrs.get("fail_message")) for t in study.trials]
    if lc:
        assert {t.user_attrs["config"]["backend"] for t in done} == {"torch", "llamacpp"}
    for t in done:
        m = t.user_attrs["metrics"]
        assert m["ttft_ms"] > 0 and m["tpot_ms"] > 0 and set(t.constraints) >= {"quality", "quality_kl"}
    c = MlflowClient(tracking_uri=home.tracking_uri)
    runs = c.search_runs([e.experiment_id for e in c.search_experiments()], "tags.`planner.kind` = 'trial'")
    assert len(runs) == 2 and all({"ttft_p99_ms", "tpot_p99_ms", "agreement", "kl_mean"} <= set(r.data.metrics)
                                  for r in runs)
    fp32 = next(r for r in runs if (r.data.params["backend"], r.data.params["quant.scheme"]) == ("torch", "none"))
    assert fp32.data.metrics["agreement"] == 1.0 and fp32.data.metrics["kl_mean"] < 1e-4  # eager fp32 = the reference
