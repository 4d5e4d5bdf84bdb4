"""Teacher-forced quality: exact runtimes score 0, a constant-logits decoder scores ~1."""

from __future__ import annotations

import numpy as np
import pytest

from planner.llm.quality import eval_tokens, llm_quality, reference_logits, teacher_forced_logits
from planner.llm.runtimes import DecoderRuntime, EagerDecoder


class ConstantDecoder(DecoderRuntime):
    """Ignores its input: the same logits at every position."""

    def __init__(self, vocab: int, seed: int = 0):
        self.logits = np.random.default_rng(seed).standard_normal(vocab).astype(np.float32)

    def prefill(self, ids):
        return np.tile(self.logits, (len(ids), 1)), None

    def decode(self, tokens, state):
        return np.tile(self.logits, (len(np.asarray(tokens).reshape(-1)), 1)), None


@pytest.fixture(scope="module")
def evalset(tiny):
    toks = eval_tokens(512, 8, 24, 16, seed=0)
    return toks, reference_logits(tiny, toks, 24)


def test_eager_candidate_is_perfect(tiny, evalset):
    toks, ref = evalset
    assert ref.shape == (8, 17, 512)
    q = llm_quality(ref, teacher_forced_logits(EagerDecoder(tiny), toks, 24, batch=3), toks, 24)  # 3 does not divide 8
    assert q["quality_loss"] == 0.0 and q["agreement"] == 1.0 and q["kl_mean"] < 1e-8
    assert q["ppl"] == pytest.approx(q["ppl_reference"], rel=1e-5) and q["positions"] == 8 * 17


@pytest.mark.parametrize("seed", [0, 1])
def test_constant_logits_decoder_has_quality_loss_near_one(tiny, evalset, seed):
    toks, ref = evalset
    q = llm_quality(ref, teacher_forced_logits(ConstantDecoder(512, seed), toks, 24, 4), toks, 24)
    assert q["quality_loss"] > 0.9, q
    # the best constant (the reference's most frequent greedy token) fails too
    best = np.bincount(ref.argmax(-1).ravel()).argmax()
    const = np.zeros_like(ref)
    const[..., best] = 1.0
    assert llm_quality(ref, const)["quality_loss"] > 0.8


def test_nonfinite_and_shape_mismatch(evalset):
    toks, ref = evalset
    bad = ref.copy()
    bad[0, 0, 0] = np.nan
    assert llm_quality(ref, bad)["quality_loss"] == 1.0
    with pytest.raises(ValueError, match="differ in shape"):
        llm_quality(ref, ref[:, :3])
