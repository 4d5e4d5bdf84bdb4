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

from planner.errors import ConfigError
from planner.model import parse_evaluator, parse_metric  # noqa: F401  (the evaluator spec is parsed beside the model spec)
# the user's contract (load, predict, run) lives beside the model it evaluates: backends use it too (NNCF accuracy control)
from planner.source import load_evaluator, make_predict, run_evaluator  # noqa: F401


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
