"""Hugging Face transformers causal LMs as decoders: every backend generates exactly like
``transformers``' own greedy ``generate`` (the reference is independent of planner's adapter)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

pytest.importorskip("transformers")

from llm_helpers import HERE, cfg, make_source  # noqa: E402
from planner.model import ModelSpec  # noqa: E402

N_NEW = 6
PROMPT = 12
LLAMA = ModelSpec(f"{HERE / 'tiny_llama.py'}:build", "file", "tiny_llama")
GPT2 = ModelSpec(f"{HERE / 'tiny_llama.py'}:build_gpt2", "file", "tiny_gpt2")


@pytest.fixture(scope="module")
def prompt():
    return np.random.default_rng(3).integers(0, 512, size=(2, PROMPT)).astype(np.int64)


def _hf_greedy(spec, cache, prompt):
    """transformers' own greedy generation on the model straight from the factory (not wrapped)."""
    import tiny_llama
    import torch

    hf = getattr(tiny_llama, spec.ref.rpartition(":")[2])()
    with torch.inference_mode():
        out = hf.generate(torch.from_numpy(prompt), attention_mask=torch.ones(prompt.shape, dtype=torch.long),
                          max_new_tokens=N_NEW, min_new_tokens=N_NEW, do_sample=False, pad_token_id=0)
    return out[:, PROMPT:].numpy()


def _build(spec, cache, target, tmp_path, c):
    from planner.llm.runtimes import build_decoder, cache_length

    return build_decoder(make_source(spec, cache), c, target, tmp_path, cache_length(PROMPT + N_NEW, 256))


def test_a_transformers_model_is_wrapped_as_a_decoder(llm_cache):
    from planner.llm.hf import HFDecoder

    src = make_source(LLAMA, llm_cache)
    m = src.base_module()
    assert isinstance(m, HFDecoder) and m.model_class == "LlamaForCausalLM"
    assert (m.config.vocab, m.config.max_positions) == (512, 256)
    assert m.cache_heads() == (2, 16) and m.num_layers == 2  # grouped-query attention: 2 key/value heads of 16
    assert [(i.name, i.shape, i.high) for i in src.inputs] == [("input_ids", (128,), 512)]
    assert any("LlamaForCausalLM wrapped" in line for line in src.log)


@pytest.mark.parametrize("spec", [LLAMA, GPT2], ids=["llama", "gpt2"])
@pytest.mark.parametrize("backend", ["torch", "torch_compile", "onnxruntime", pytest.param(
    "openvino", marks=pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="no openvino"))])
def test_every_backend_generates_like_transformers(spec, backend, llm_cache, cpu_target, tmp_path, prompt):
    expected = _hf_greedy(spec, llm_cache, prompt)
    b = _build(spec, llm_cache, cpu_target, tmp_path, cfg(backend))
    np.testing.assert_array_equal(b.runtime.generate(prompt, N_NEW), expected)
    np.testing.assert_array_equal(b.runtime.generate(prompt, N_NEW), expected)  # state reset between generations


@pytest.mark.parametrize("spec", [LLAMA, GPT2], ids=["llama", "gpt2"])
def test_int8_dynamic_quantizes_every_projection(spec, llm_cache, cpu_target, tmp_path, prompt):
    import torch

    wrapped = make_source(spec, llm_cache).base_module()
    projections = sum(isinstance(m, torch.nn.Linear) for m in wrapped.modules())
    assert projections == 2 * (7 if spec is LLAMA else 4) + 1  # per layer q,k,v,o(+gate,up,down) or c_attn,c_proj,c_fc,c_proj; + LM head
    assert wrapped.converted_conv1d == (0 if spec is LLAMA else 8)
    b = _build(spec, llm_cache, cpu_target, tmp_path, cfg("torch", "int8_dynamic"))
    mods = list(b.runtime.module.modules())
    assert not [m for m in mods if type(m) is torch.nn.Linear]  # every float Linear was replaced...
    assert sum(type(m).__module__.startswith("torch.ao.nn.quantized.dynamic") for m in mods) == projections  # ...by int8
    got = b.runtime.generate(prompt, N_NEW)
    assert (got[:, 0] == _hf_greedy(spec, llm_cache, prompt)[:, 0]).all()


@pytest.mark.parametrize("spec", [LLAMA, GPT2], ids=["llama", "gpt2"])
def test_structured_pruning_removes_ffn_neurons_and_keeps_attention(spec, llm_cache, cpu_target, tmp_path, prompt):
    import torch

    from planner.config import TrialConfig
    from planner.transforms.prune import prune_info

    pruned = TrialConfig.from_dict({"backend": "torch", "batch_size": 2,
                                    "prune": {"method": "heads", "ratio": 0.5, "round_to": 16}})
    src = make_source(spec, llm_cache)
    base = sum(p.numel() for p in src.base_module().parameters())
    m = src.torch_module(pruned)
    info = prune_info(m)
    assert info["kind"] == "ffn" and info["ffn_modules"] == 2 and info["attention_modules"] == 0
    width = 128 if spec is LLAMA else 256  # intermediate_size / 4 * n_embd
    assert (info["ffn_neurons_before"], info["ffn_neurons_after"]) == (2 * width, width)  # 2 layers, half kept
    assert info["params_after"] < info["params_before"] == base
    assert m.cache_heads() == src.base_module().cache_heads()  # attention (and the KV cache) untouched
    mlp = next(x for x in m.modules() if type(x).__name__.endswith("MLP"))
    outs = [c.out_features for c in mlp.children() if isinstance(c, torch.nn.Linear)]
    assert width // 2 in outs
    b = _build(spec, llm_cache, cpu_target, tmp_path, pruned)
    assert b.runtime.generate(prompt, N_NEW).shape == (2, N_NEW)


def test_sliding_window_models_are_refused_when_wrapped():
    import torch
    from transformers import MistralConfig, MistralForCausalLM

    from planner.errors import ConfigError
    from planner.llm.hf import HFDecoder

    torch.manual_seed(0)
    m = MistralForCausalLM(MistralConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1, sliding_window=16))
    with pytest.raises(ConfigError, match="model x.py:build: MistralForCausalLM has .*sliding_attention.* full-attention"):
        HFDecoder(m, where="model x.py:build")
