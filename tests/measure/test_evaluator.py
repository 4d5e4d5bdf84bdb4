"""User evaluators: batching of predict, validation of results, the quality loss they imply."""

import math

import numpy as np
import pytest

from planner.errors import ConfigError
from planner.measure.evaluator import evaluator_quality, make_predict, parse_metric, run_evaluator


def test_predict_batches_exactly_and_trims_the_padding():
    seen = []

    def infer(feed):
        seen.append(len(feed["x"]))
        return [feed["x"] * 2, feed["x"][:, :1]]

    x = np.arange(10, dtype=np.float32).reshape(5, 2)
    out = make_predict(infer, 4)({"x": x})
    assert seen == [4, 4]  # the backend only ever sees its batch size
    assert np.array_equal(out[0], x * 2) and np.array_equal(out[1], x[:, :1])


def test_results_must_be_a_dict_of_numbers():
    assert run_evaluator(lambda p, batch_size: {"acc": np.float32(0.5)}, None, 1, "w") == {"acc": 0.5}
    with pytest.raises(ConfigError, match="non-empty dict"):
        run_evaluator(lambda p, batch_size: {}, None, 1, "w")
    with pytest.raises(ConfigError, match="'acc' is str"):
        run_evaluator(lambda p, batch_size: {"acc": "high"}, None, 1, "w")


def test_absolute_and_relative_drop():
    ref = {"accuracy": 0.80, "wer": 0.20}
    q = evaluator_quality(ref, {"accuracy": 0.76, "wer": 0.25}, None, "max")
    assert q["quality_loss"] == pytest.approx(0.04) and q["eval.accuracy"] == 0.76 and q["eval_reference.accuracy"] == 0.80
    assert evaluator_quality(ref, {"accuracy": 0.76, "wer": 0.25}, None, "max", "relative")["quality_loss"] == pytest.approx(0.05)
    assert evaluator_quality(ref, {"accuracy": 0.76, "wer": 0.25}, "wer", "min")["quality_loss"] == pytest.approx(0.05)
    assert evaluator_quality(ref, {"accuracy": 0.90, "wer": 0.1}, None, "max")["quality_loss"] == 0.0  # better is no loss
    assert evaluator_quality(ref, {"accuracy": math.nan, "wer": 0.1}, None, "max")["quality_loss"] > 1


def test_metric_syntax():
    assert parse_metric(None) == (None, "max") and parse_metric("wer:min") == ("wer", "min")
    with pytest.raises(ConfigError, match="NAME:max"):
        parse_metric("wer:lowest")


def test_relative_mode_scales_a_label_accuracy_drop():
    from planner.measure.worker import task_quality
    from planner.model import parse_model

    q = {"accuracy_reference": 0.8, "accuracy_drop": 0.04, "quality_loss": 0.04}
    spec = parse_model("tiny-mlp")  # no evaluator
    assert task_quality(spec, None, 1, "unused.npz", q, "relative") == {"quality_loss": pytest.approx(0.05)}
    assert task_quality(spec, None, 1, "unused.npz", q, "absolute") == {}
