"""gpt-mini: zoo contract, KV-cache consistency (dynamic and static), head/FFN pruning."""

from __future__ import annotations

import numpy as np
import torch

from llm_helpers import eager_greedy
from planner.zoo import gpt


def _ids(b, t, vocab=512, seed=0):
    return torch.randint(0, vocab, (b, t), generator=torch.Generator().manual_seed(seed))


def test_full_size_contract_and_determinism():
    state = torch.random.get_rng_state()
    m = gpt.build(0)
    assert torch.equal(state, torch.random.get_rng_state()), "build() must not consume the global RNG"
    c = m.config
    assert (c.vocab, c.hidden, c.layers, c.heads, c.max_positions) == (32000, 512, 6, 8, 1024)
    assert gpt.OUTPUT_KIND == "logits"
    (inp,) = gpt.INPUTS
    assert (inp.name, inp.dtype, inp.low, inp.high) == ("input_ids", "int64", 0, 32000)
    assert not any(x.training for x in m.modules())
    assert m.lm_head.weight is m.wte.weight  # tied
    n = sum(p.numel() for p in m.parameters())
    assert 35_000_000 < n < 37_000_000
    for blk in m.layers:
        assert (blk.attn.num_heads, blk.attn.head_dim) == (8, 64)
        assert isinstance(blk.attn.q, torch.nn.Linear) and blk.ffn.fc1.out_features == 2048
    again = gpt.build(0)
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), again.state_dict().values()))
    with torch.no_grad():
        y = m(_ids(2, 16, 32000))
    assert y.shape == (2, 32000) and torch.isfinite(y).all()


def test_prefill_decode_and_static_cache_match_full_forward(tiny):
    ids = _ids(3, 24)
    with torch.no_grad():
        full, k, v = tiny.prefill(ids)
        assert full.shape == (3, 24, 512) and k.shape == (2, 3, 4, 24, 16) and v.shape == k.shape
        _, k1, v1 = tiny.prefill(ids[:, :16])
        lg, k2, _ = tiny.decode(ids[:, 16:17], k1, v1)
        assert lg.shape == (3, 1, 512) and k2.shape[3] == 17
        torch.testing.assert_close(lg[:, 0], full[:, 16], atol=1e-5, rtol=0)
        multi, _, _ = tiny.decode(ids[:, 16:], k1, v1)  # several new tokens at once
        torch.testing.assert_close(multi, full[:, 16:], atol=1e-5, rtol=0)
        kc, vc = tiny.empty_cache(3, 64)
        first = tiny.prefill_into(ids[:, :16], kc, vc)
        torch.testing.assert_close(first[:, 0], full[:, 15], atol=1e-5, rtol=0)
        for j in range(16, 24):
            lj = tiny.decode_static(ids[:, j:j + 1], kc, vc, torch.tensor([j]))
            torch.testing.assert_close(lj[:, 0], full[:, j], atol=1e-5, rtol=0)
        torch.testing.assert_close(tiny(ids), full[:, -1])


def test_tiny_is_input_sensitive(tiny):
    """Greedy tokens depend on the context (a constant output cannot score well)."""
    with torch.no_grad():
        top = tiny.prefill(_ids(8, 32, seed=3))[0].argmax(-1).flatten()
    assert torch.bincount(top).max().item() / top.numel() < 0.2


def test_head_pruning_25_percent_then_generation_runs(tiny):
    import copy

    from planner.config import PruneConfig
    from planner.llm.runtimes import EagerDecoder
    from planner.transforms.prune import prune, prune_info

    m = prune(copy.deepcopy(tiny), PruneConfig("heads", 0.25), (_ids(2, 16),))
    info = prune_info(m)
    assert info["heads_before"] == 8 and info["heads_after"] == 6  # 4 -> 3 heads in each of 2 layers
    assert info["ffn_neurons_after"] == 2 * 192
    assert m.cache_heads() == (3, 16)
    assert all(b.attn.q.out_features == 48 for b in m.layers)
    ids = _ids(2, 12, seed=4).numpy()
    toks = EagerDecoder(m).generate(ids, 6)
    assert toks.shape == (2, 6)
    np.testing.assert_array_equal(toks, eager_greedy(m, ids, 6))  # the pruned model's own cache path is exact
    kc, vc = m.empty_cache(2, 32)
    assert kc.shape == (2, 2, 3, 32, 16)


def test_pruning_through_model_source(tiny_spec, llm_cache):
    from llm_helpers import cfg, make_source

    src = make_source(tiny_spec, llm_cache)
    m = src.torch_module(cfg("torch", prune=0.25))
    assert m.cache_heads() == (3, 16)
    assert src.base_module().cache_heads() == (4, 16)
