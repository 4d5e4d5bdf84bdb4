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


def digits_nll(predict, batch_size):
    """Negative log-likelihood of the true digit and error rate of a digits-cnn deployment on the 540 held-out
    test digits (both lower is better): the NLL moves with every layer a quantizer touches."""
    from planner.zoo.digits import dataset

    d = dataset()
    logits = predict({"x": d["x"]})[0].astype(np.float64)
    logp = logits - logits.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    return {"nll": float(-logp[np.arange(len(logp)), d["labels"]].mean()),
            "error": float((logits.argmax(1) != d["labels"]).mean())}
