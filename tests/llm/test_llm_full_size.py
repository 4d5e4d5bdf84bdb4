"""Full-size gpt-mini through the decoder runtimes (slow: ONNX export and compilation of a 36 M model)."""

from __future__ import annotations

import numpy as np
import pytest

from llm_helpers import cfg, eager_greedy, make_source

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def full():
    from planner.model import ModelSpec

    return ModelSpec("planner.zoo.gpt:build", "module", "gpt-mini")


@pytest.mark.parametrize("backend", ["onnxruntime", "torch_compile"])
def test_full_size_backend_matches_eager(full, backend, llm_cache, cpu_target, tmp_path):
    from planner.llm.runtimes import build_decoder, cache_length

    src = make_source(full, llm_cache)
    ids = np.random.default_rng(0).integers(0, 32000, size=(1, 64)).astype(np.int64)
    b = build_decoder(src, cfg(backend, batch=1), cpu_target, tmp_path, cache_length(64 + 8, 1024))
    np.testing.assert_array_equal(b.runtime.generate(ids, 8), eager_greedy(src.base_module(), ids, 8))


def test_full_size_pruned_generates(full, llm_cache, cpu_target, tmp_path):
    from planner.llm.runtimes import build_decoder

    src = make_source(full, llm_cache)
    b = build_decoder(src, cfg("torch", "int8_dynamic", batch=2, prune=0.25), cpu_target, tmp_path, 128)
    ids = np.random.default_rng(1).integers(0, 32000, size=(2, 32)).astype(np.int64)
    assert b.runtime.generate(ids, 4).shape == (2, 4)
    assert src.torch_module(cfg("torch", prune=0.25)).cache_heads() == (6, 64)
