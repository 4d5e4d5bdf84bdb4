"""User evaluators: real task metrics of a deployment, and the quality loss they imply.

An evaluator is the user's function ``fn(predict, batch_size) -> {name: number}``.  ``predict``
runs the deployment under test on a dict of input arrays (any number of samples; it is batched
to the trial's batch size) and returns the model's outputs as a list of arrays.  The evaluator
brings its own data and scoring (accuracy on a validation split, F1, BLEU, ...).

It runs once on the fp32 eager model (the reference, when the study starts) and once per trial.
The quality loss is the drop of one metric (``--evaluator-metric NAME[:max|min]``; default: the
first one returned, higher is better) from the reference; with a target's
``constraints.quality_loss_mode: relative`` the drop is divided by the reference value.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from planner.errors import ConfigError
from planner.model import parse_evaluator, parse_metric  # noqa: F401  (the evaluator spec is parsed beside the model spec)

def load_evaluator(ref: str) -> Callable[..., Any]:
    from planner.source import import_callable

    norm, kind = parse_evaluator(ref)
    return import_callable(norm, kind, f"--evaluator {ref}")[1]


def make_predict(infer: Callable[[dict], list], batch_size: int) -> Callable[[dict], list]:
    """``predict(inputs)`` for any number of samples: runs ``infer`` on batches of exactly ``batch_size``
    (the last one padded by wrapping around) and concatenates each output over the samples."""

    def predict(inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        inputs = {k: np.ascontiguousarray(np.asarray(v)) for k, v in inputs.items()}
        n = len(next(iter(inputs.values())))
        parts: list[list[np.ndarray]] = []
        for start in range(0, n, batch_size):
            idx = np.arange(start, start + batch_size) % n
            valid = min(batch_size, n - start)
            outs = infer({k: np.ascontiguousarray(v[idx]) for k, v in inputs.items()})
            parts.append([np.asarray(o)[:valid] for o in outs])
        return [np.concatenate([p[i] for p in parts]) for i in range(len(parts[0]))]

    return predict


def run_evaluator(fn: Callable[..., Any], predict: Callable[[dict], list], batch_size: int, where: str) -> dict[str, float]:
    """Call the evaluator; its result must be a non-empty dict of finite numbers."""
    out = fn(predict, batch_size=batch_size)
    if not isinstance(out, dict) or not out:
        raise ConfigError(f"{where}: the evaluator must return a non-empty dict of metric name -> number, got {type(out).__name__}")
    metrics: dict[str, float] = {}
    for k, v in out.items():
        try:
            metrics[str(k)] = float(v)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: evaluator metric {k!r} is {type(v).__name__}, not a number") from None
    return metrics


def evaluator_quality(reference: dict[str, float], metrics: dict[str, float], metric: str | None, goal: str,
                      mode: str = "absolute") -> dict[str, float]:
    """Quality fields of one trial: every metric (``eval.<name>``), its reference (``eval_reference.<name>``),
    and ``quality_loss`` = the chosen metric's drop from the reference (relative: divided by |reference|)."""
    name = metric or next(iter(reference))
    if name not in metrics or name not in reference:
        raise ConfigError(f"--evaluator-metric {name!r}: the evaluator returned {sorted(metrics)}")
    out: dict[str, float] = {f"eval.{k}": v for k, v in metrics.items()}
    out.update({f"eval_reference.{k}": v for k, v in reference.items()})
    ref, val = reference[name], metrics[name]
    if not math.isfinite(val):
        drop = math.inf
    else:
        drop = ref - val if goal == "max" else val - ref
    out["eval_drop"] = drop
    loss = max(0.0, drop)
    if mode == "relative":
        loss = loss / abs(ref) if ref != 0 else (0.0 if loss == 0 else math.inf)
    out["quality_loss"] = min(loss, 1e9)
    return out
