"""Output quality of a candidate against the fp32 eager reference.

On random-weight networks raw measures are degenerate: a random resnet18 puts
the same class first for most inputs, so a constant output "agrees" ~94 % and
has raw cosine ~0.999.  We therefore also measure the input-dependent part of
the outputs: cosine and top-1 after subtracting the reference's mean output
("centered").  A constant output scores ~0 there.  The default quality loss is
``1 - centered_cosine``; with labels it is the accuracy drop.
"""

from __future__ import annotations

from typing import Any

import numpy as np

EPS = 1e-12


def _rows(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return a.reshape(a.shape[0], -1)


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    num = (a * b).sum(1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.where(den > EPS, num / np.maximum(den, EPS), np.where(np.linalg.norm(a - b, axis=1) < EPS, 1.0, 0.0))


def quality_metrics(ref: np.ndarray, out: np.ndarray, output_kind: str = "logits", labels: np.ndarray | None = None) -> dict[str, Any]:
    """Compare candidate outputs ``out`` with reference ``ref`` (first axis = samples)."""
    r, o = _rows(ref), _rows(out)
    if r.shape != o.shape:
        raise ValueError(f"output shape {out.shape} differs from reference {ref.shape}")
    if not np.isfinite(o).all():
        return {"quality_loss": 1.0, "nonfinite_outputs": 1.0, "cosine": 0.0, "centered_cosine": 0.0, "max_abs_error": float("inf")}
    mean = r.mean(0, keepdims=True)
    m: dict[str, Any] = {
        "cosine": float(_cos(r, o).mean()),
        "centered_cosine": float(_cos(r - mean, o - mean).mean()) if len(r) > 1 else float(_cos(r, o).mean()),
        "max_abs_error": float(np.abs(r - o).max()),
        "mean_abs_error": float(np.abs(r - o).mean()),
        "relative_error": float(np.linalg.norm(r - o) / max(np.linalg.norm(r), EPS)),
    }
    if output_kind == "logits" and r.shape[1] > 1:
        m["top1_agreement"] = float((r.argmax(1) == o.argmax(1)).mean())
        m["centered_top1_agreement"] = float(((r - mean).argmax(1) == (o - mean).argmax(1)).mean())
    m["quality_loss"] = max(0.0, 1.0 - m["centered_cosine"])
    if labels is not None and output_kind == "logits":
        lab = np.asarray(labels).reshape(-1)[: len(r)]
        m["accuracy_reference"] = float((r.argmax(1) == lab).mean())
        m["accuracy"] = float((o.argmax(1) == lab).mean())
        m["accuracy_drop"] = m["accuracy_reference"] - m["accuracy"]
        m["quality_loss"] = max(0.0, m["accuracy_drop"])
    return m
