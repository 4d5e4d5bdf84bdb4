"""llama.cpp backend: declarations and refusals (fast), and on smollm2-135m the decoder against the fp32 reference (slow)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import planner.backends.registry as registry
from planner.backends.llamacpp import INT4_TYPES, LlamaCpp, gguf_type
from planner.config import PruneConfig, QuantConfig, TrialConfig, freeze_options
from planner.errors import CandidateFailed

INSTALLED = importlib.util.find_spec("llama_cpp") is not None and importlib.util.find_spec("gguf") is not None


def test_declared_and_registered():
    assert registry.get("llamacpp") is LlamaCpp
    assert LlamaCpp.decoder_only and LlamaCpp.decoder_schemes == LlamaCpp.quant_schemes
    assert LlamaCpp.engine_files == ("model.gguf",)
    from planner.llm.runtimes import check_decoder_config, decoder_backends

    assert "llamacpp" in decoder_backends()
    assert check_decoder_config("llamacpp", "int4_weight_only") is None
    assert "int8_dynamic" in check_decoder_config("llamacpp", "int8_dynamic")


def test_unusable_without_the_build_says_how_to_install(monkeypatch):
    monkeypatch.setattr(LlamaCpp, "modules", ("llama_cpp_not_here",))
    a = LlamaCpp.availability()
    assert not a.usable and "planner[llamacpp]" in a.detail and "llama_cpp_not_here" in a.detail


def test_schemes_map_to_gguf_types():
    assert gguf_type("none", {}) == "F32"
    assert gguf_type("fp16", {}) == "F16"
    assert gguf_type("int8_weight_only", {"int4_type": "Q4_0"}) == "Q8_0"  # the int4 option is int4's only
    assert gguf_type("int4_weight_only", {}) == INT4_TYPES[0] == "Q4_K_M"
    assert gguf_type("int4_weight_only", {"int4_type": "Q4_1"}) == "Q4_1"
    assert LlamaCpp.honours("int4_weight_only", "group_size") is False  # GGUF blocks are fixed


def test_refuses_pruning_and_non_decoder_studies(fast_target, tmp_path):
    pruned = TrialConfig("llamacpp", 1, prune=PruneConfig("l1", 0.5))
    assert "pruning" in LlamaCpp.check(pruned, fast_target, "torch")
    assert "int8_dynamic" in LlamaCpp.check(TrialConfig("llamacpp", 1, quant=QuantConfig("int8_dynamic")),
                                            fast_target, "torch")
    assert LlamaCpp.check(TrialConfig("llamacpp", 1, freeze_options({"n_batch": 64})), fast_target, "torch") is None
    with pytest.raises(CandidateFailed, match="decoders only"):
        LlamaCpp().compile(None, TrialConfig("llamacpp", 1), fast_target, tmp_path)


# ------------------------------------------------------------------ on the real model (slow)


@pytest.fixture(scope="module")
def smol_source(tmp_path_factory):
    if not INSTALLED:
        pytest.skip("llama-cpp-python not installed: " + LlamaCpp.install_command())
    for m in ("transformers", "accelerate"):
        pytest.importorskip(m)
    from planner.errors import ConfigError
    from planner.model import parse_model
    from planner.source import ModelSource
    from planner.zoo import smollm2

    try:
        smollm2.gguf_file()
    except ConfigError as e:
        pytest.skip(str(e))
    return ModelSource(parse_model("smollm2-135m"), tmp_path_factory.mktemp("cache"))


def _decoder(src, cfg, target, workdir):
    from planner.llm.runtimes import build_decoder

    return build_decoder(src, cfg, target, workdir, cache_len=256)


@pytest.mark.slow
def test_llamacpp_decoder_matches_the_reference(smol_source, fast_target, tmp_path):
    """F32 (the reference itself in llama.cpp) gives the reference's greedy tokens; Q8_0 keeps its answer within the
    bound; both written from the packaged GGUF, reloaded by load_artifact."""
    import torch

    from planner.llm.quality import llm_quality, reference_continuation, reference_logits, teacher_forced_logits
    from planner.llm.runtimes import EagerDecoder
    from planner.zoo import smollm2

    module = smol_source.base_module()
    prompts = smollm2.prompts(2, 64, "eval")
    ref_tokens = EagerDecoder(module).generate(prompts, 8)
    tokens = reference_continuation(module, prompts, 16)
    ref = reference_logits(module, tokens, 64)

    f32 = _decoder(smol_source, TrialConfig("llamacpp", 2, freeze_options({"n_batch": 32})), fast_target, tmp_path / "f32")
    assert f32.info["gguf_type"] == "F32" and f32.info["n_batch"] == 32
    np.testing.assert_array_equal(f32.runtime.generate(prompts, 8), ref_tokens)
    q = llm_quality(ref, teacher_forced_logits(f32.runtime, tokens, 64, 2), tokens, 64)
    assert q["agreement"] == 1.0 and q["kl_mean"] < 1e-3
    with torch.inference_mode():
        last = module(torch.from_numpy(prompts)).numpy()
    loaded = LlamaCpp.load_artifact(tmp_path / "f32", batch=2, device="cpu")
    np.testing.assert_allclose(loaded.infer({"input_ids": prompts})[0], last, atol=0.1)
    loaded.close()
    f32.runtime.close()

    q8cfg = TrialConfig("llamacpp", 1, quant=QuantConfig("int8_weight_only"))
    q8 = _decoder(smol_source, q8cfg, fast_target, tmp_path / "q8")
    assert q8.info["gguf_type"] == "Q8_0" and (tmp_path / "q8" / "model.gguf").is_file()
    q = llm_quality(ref, teacher_forced_logits(q8.runtime, tokens, 64, 1), tokens, 64)
    assert q["agreement"] >= 0.9 and q["kl_mean"] < 0.1, q
    q8.runtime.close()
    again = _decoder(smol_source, q8cfg, fast_target, tmp_path / "q8b")  # the written GGUF comes from the cache
    assert again.info["gguf_cached"] is True
    again.runtime.close()


def test_a_study_without_a_workload_skips_it(fast_target, tmp_path):
    from planner.model import parse_model
    from planner.paths import Home
    from planner.search.study import Optimizer, StudyOptions
    from planner.space import SearchSpace

    if not LlamaCpp.availability().usable:
        pytest.skip("llama-cpp-python not installed (an unusable backend is skipped for that reason)")
    space = SearchSpace.model_validate({"name": "s", "backends": {"torch": {}, "llamacpp": {}}})
    target = fast_target.model_copy(update={"backends": [*fast_target.backends, "llamacpp"]})
    opt = Optimizer(parse_model("tiny-mlp"), target, space, Home(tmp_path), StudyOptions(trials=1))
    assert opt.validate() == ["torch"]
    assert "decoders only" in opt.skipped["llamacpp"]
