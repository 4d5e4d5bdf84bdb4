"""User evaluators for tests: fn(predict, batch_size) -> {metric: value}."""

import numpy as np

X = np.random.default_rng(0).standard_normal((37, 16)).astype(np.float32)  # not a multiple of any batch size
LABELS = np.arange(37) % 4


def score(predict, batch_size):
    out = predict({"x": X})[0]
    assert out.shape == (37, 4), out.shape
    return {"accuracy": float((out.argmax(1) == LABELS).mean()), "mean_abs": float(np.abs(out).mean())}


def not_a_dict(predict, batch_size):
    return 0.9


def fails_on_batch4(predict, batch_size):
    if batch_size == 4:
        raise RuntimeError("no metric for batch 4")
    return score(predict, batch_size)
