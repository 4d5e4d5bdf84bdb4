"""The OpenVINO decoder runtime on the tiny decoder: one stateful step graph (the KV cache is OpenVINO state) for
prefill and decode, against eager greedy generation of the fp32 model; NNCF int8/int4 weight compression."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("openvino")

from llm_helpers import cfg, eager_greedy, make_source  # noqa: E402
from planner.errors import CandidateFailed  # noqa: E402

N_NEW = 8
PROMPT = 20


@pytest.fixture(scope="module")
def prompt():
    return np.random.default_rng(1).integers(0, 512, size=(2, PROMPT)).astype(np.int64)


@pytest.fixture(scope="module")
def expected(tiny, prompt):
    return eager_greedy(tiny, prompt, N_NEW)


def _build(tiny_spec, llm_cache, cpu_target, tmp_path, c):
    from planner.llm.runtimes import build_decoder, cache_length

    return build_decoder(make_source(tiny_spec, llm_cache), c, cpu_target, tmp_path, cache_length(PROMPT + N_NEW, 256))


def _quality(tiny, rt):
    from planner.llm.quality import eval_tokens, llm_quality, reference_logits, teacher_forced_logits

    toks = eval_tokens(512, 4, 16, 8, seed=2)
    return llm_quality(reference_logits(tiny, toks, 16), teacher_forced_logits(rt, toks, 16, 2), toks, 16)


def test_declared_as_a_decoder_backend():
    import planner.backends.registry as registry
    from planner.llm.runtimes import check_decoder_config, decoder_backends

    ov = registry.get("openvino")
    assert "openvino" in decoder_backends() and not ov.decoder_note
    assert check_decoder_config("openvino", "none") is None
    assert "int8_static" in check_decoder_config("openvino", "int8_static")  # calibrated int8: not for decoders
    assert set(ov.decoder_schemes) <= set(ov.quant_schemes)


def test_fp32_generates_exactly_like_eager_with_the_cache_in_the_engine(tiny, tiny_spec, llm_cache, cpu_target,
                                                                        tmp_path, prompt, expected):
    import openvino as ov

    b = _build(tiny_spec, llm_cache, cpu_target, tmp_path, cfg("openvino"))
    rt = b.runtime
    assert b.info["inference_precision"] == "f32" and b.info["cache"].startswith("openvino state")
    np.testing.assert_array_equal(rt.generate(prompt, N_NEW), expected)
    np.testing.assert_array_equal(rt.generate(prompt, N_NEW), expected)  # the state is reset by the next prefill
    np.testing.assert_array_equal(rt.generate(prompt[:1], N_NEW), expected[:1])  # another batch size, same engine
    q = _quality(tiny, rt)
    assert q["agreement"] == 1.0 and q["kl_mean"] < 1e-6, q
    # one model takes the token ids alone, for the prompt and for each step: the past keys/values are its state
    dec = ov.Core().read_model(str(tmp_path / "decoder.xml"))
    assert [i.get_any_name() for i in dec.inputs] == ["input_ids"]
    assert sorted(op.get_type_name() for op in dec.get_ordered_ops()
                  if op.get_type_name() in ("ReadValue", "Assign")) == ["Assign", "Assign", "ReadValue", "ReadValue"]
    assert {p.name for p in b.artifacts} >= {"decoder.xml", "decoder.bin", "openvino.json", "decoder.json"}
    # a one-token prompt (one new token on an empty past): still exact
    np.testing.assert_array_equal(rt.generate(prompt[:, :1], 3), eager_greedy(tiny, prompt[:, :1], 3))


def test_decode_from_an_earlier_state_restarts_there(tiny_spec, llm_cache, cpu_target, tmp_path, prompt):
    """TPOT's restart: decoding again from the post-prefill state cuts the engine's cache back to it."""
    rt = _build(tiny_spec, llm_cache, cpu_target, tmp_path, cfg("openvino")).runtime
    logits, s0 = rt.prefill(prompt)
    first, s1 = rt.decode(logits.argmax(-1), s0)
    second, _ = rt.decode(first.argmax(-1), s1)
    again, _ = rt.decode(logits.argmax(-1), s0)
    np.testing.assert_array_equal(again, first)
    assert not np.array_equal(second, first)
    rt.prefill(prompt[:1])  # a new generation: the earlier one's state is gone
    with pytest.raises(ValueError, match="earlier prefill"):
        rt.decode(logits.argmax(-1), s1)


def test_int8_weight_compression_stays_close(tiny, tiny_spec, llm_cache, cpu_target, tmp_path, prompt, expected):
    b = _build(tiny_spec, llm_cache, cpu_target, tmp_path, cfg("openvino", "int8_weight_only"))
    # q, k, v, o, fc1, fc2 per layer + two embedding / LM-head weights
    assert b.info["layers_int8"] == b.info["layers_quantized"] == 2 * 6 + 2, b.info
    got = b.runtime.generate(prompt, N_NEW)
    assert (got[:, 0] == expected[:, 0]).all()  # the first token, before greedy paths may diverge
    q = _quality(tiny, b.runtime)
    assert q["agreement"] >= 0.85 and q["kl_mean"] < 1e-3 and q["max_abs_logit_error"] < 0.2, q


@pytest.mark.parametrize("symmetric", [True, False])
def test_int4_weight_compression_stays_close(symmetric, tiny, tiny_spec, llm_cache, cpu_target, tmp_path, prompt,
                                             expected):
    import openvino as ov

    c = cfg("openvino", "int4_weight_only", qopts={"group_size": 32, "symmetric": symmetric})
    b = _build(tiny_spec, llm_cache, cpu_target, tmp_path, c)
    assert b.info["group_size"] == 32 and b.info["layers_quantized"] == 2 * 6, b.info  # NNCF: embedding/head int8
    assert b.info["int4_mode"] == ("INT4_SYM" if symmetric else "INT4_ASYM")
    types = {op.get_element_type().get_type_name() for op in ov.Core().read_model(str(tmp_path / "decoder.xml")).get_ordered_ops()
             if op.get_type_name() == "Constant"}
    assert ("i4" in types) == symmetric and ("u4" in types) == (not symmetric), types
    got = b.runtime.generate(prompt, N_NEW)
    assert (got[:, 0] == expected[:, 0]).all()
    q = _quality(tiny, b.runtime)
    # as the other int4 decoders: random weights flip greedy tokens easily, the KL and logit error stay small
    assert q["agreement"] >= 0.6 and q["kl_mean"] < 1e-3 and q["max_abs_logit_error"] < 0.2, q


def test_bf16_only_where_the_cpu_has_it(tiny_spec, llm_cache, cpu_target, tmp_path, prompt, expected):
    from planner.backends.openvino import cpu_capabilities

    c = cfg("openvino", "bf16")
    if "BF16" not in cpu_capabilities():
        with pytest.raises(CandidateFailed, match="cannot run bf16") as e:
            _build(tiny_spec, llm_cache, cpu_target, tmp_path, c)
        assert e.value.reason.value == "unsupported"
    else:
        b = _build(tiny_spec, llm_cache, cpu_target, tmp_path, c)
        assert b.info["inference_precision"] == "bf16"
        assert (b.runtime.generate(prompt, N_NEW)[:, 0] == expected[:, 0]).all()


def test_nncf_and_openvino_failures_are_candidate_failures(tiny_spec, llm_cache, cpu_target, tmp_path):
    """int4 groups wider than the tiny model's rows: NNCF keeps every layer at int8 -> a failed trial with its reason."""
    with pytest.raises(CandidateFailed, match="int4") as e:
        _build(tiny_spec, llm_cache, cpu_target, tmp_path, cfg("openvino", "int4_weight_only", qopts={"group_size": 128}))
    assert e.value.reason.value in ("unsupported", "compile")
    with pytest.raises(CandidateFailed) as e:
        _build(tiny_spec, llm_cache, cpu_target, tmp_path, cfg("openvino", "int8_static"))
    assert e.value.reason.value == "unsupported"
