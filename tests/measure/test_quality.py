import numpy as np

from planner.measure.quality import quality_metrics


def _ref(n=32, k=10, seed=0):
    rng = np.random.default_rng(seed)
    fixed = rng.normal(0, 3, size=k)  # a large input-independent part, like a random-init net
    return fixed + rng.normal(0, 0.1, size=(n, k))


def test_identical_outputs_have_zero_loss():
    r = _ref()
    m = quality_metrics(r, r.copy())
    assert m["quality_loss"] < 1e-9 and m["top1_agreement"] == 1.0 and m["max_abs_error"] == 0


def test_constant_output_cannot_pass():
    r = _ref()
    const = np.tile(r.mean(0), (len(r), 1))
    m = quality_metrics(r, const)
    assert m["cosine"] > 0.99  # the degenerate raw measure would pass it...
    assert m["quality_loss"] > 0.9  # ...the default (centered) measure does not
    assert m["centered_top1_agreement"] < 0.5


def test_small_noise_small_loss():
    r = _ref()
    noisy = r + np.random.default_rng(1).normal(0, 0.005, size=r.shape)
    m = quality_metrics(r, noisy)
    assert 0 < m["quality_loss"] < 0.01


def test_labels_make_quality_the_accuracy_drop():
    r = np.eye(4)[[0, 1, 2, 3, 0, 1, 2, 3]] * 5.0
    labels = np.array([0, 1, 2, 3, 0, 1, 2, 3])
    worse = r.copy()
    worse[:2] = np.eye(4)[[3, 3]] * 5.0
    m = quality_metrics(r, worse, "logits", labels)
    assert m["accuracy_reference"] == 1.0 and m["accuracy"] == 0.75 and m["quality_loss"] == 0.25


def test_nonfinite_outputs_are_total_loss():
    r = _ref()
    bad = r.copy()
    bad[0, 0] = np.nan
    assert quality_metrics(r, bad)["quality_loss"] == 1.0
