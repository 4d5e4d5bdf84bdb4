"""Helpers of the LLM tests (not a test module)."""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
TINY_REF = f"{HERE / 'tiny_gpt.py'}:build"
DATA = HERE.parent / "data"


def make_source(spec, cache_dir):
    from planner.source import ModelSource

    return ModelSource(spec, Path(cache_dir))


def cfg(backend: str, scheme: str = "none", batch: int = 2, prune: float = 0.0, qopts: dict | None = None, **options):
    from planner.config import TrialConfig

    d = {"backend": backend, "batch_size": batch, "backend_options": options,
         "quant": {"scheme": scheme, "options": qopts or {}}}
    if prune:
        d["prune"] = {"method": "heads", "ratio": prune}
    return TrialConfig.from_dict(d)


def eager_greedy(model, ids, n: int):
    """Reference greedy tokens [B, n]: full causal forward over the growing sequence (no KV cache)."""
    import numpy as np
    import torch

    seq = torch.from_numpy(np.asarray(ids, dtype=np.int64))
    out = []
    with torch.inference_mode():
        for _ in range(n):
            nxt = model.prefill(seq)[0][:, -1].argmax(-1)
            out.append(nxt)
            seq = torch.cat([seq, nxt[:, None]], 1)
    return torch.stack(out, 1).numpy()
