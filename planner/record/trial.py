"""A measured trial as every reader after the worker sees it: typed, written once from the stored Optuna trial.

`select/` (the front, policies, confirmation, registry, plots), the console and export read `TrialRecord`s; no
one else reads a config field by its string key.  Derived figures (per-sample latency, throughput) come from
`planner.record.metrics.per_sample`, the one place that computes them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

from planner.config import TrialConfig


@dataclass(frozen=True)
class TrialRecord:
    number: int
    config: dict[str, Any]  # the stored form (`TrialConfig.to_dict`); read through `cfg` and the properties
    label: str
    metrics: dict[str, float]
    run_id: str | None
    noise_floor: float = 0.0  # quality losses below it are ties (planner.select.pareto.NOISE_FLOORS)
    feasible: bool = True
    on_front: bool = False
    violated: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def from_trial(cls, t, noise_floor: float = 0.0, on_front: bool = False) -> "TrialRecord":
        """The record of a stored Optuna trial (a FrozenTrial): the one place its user attributes are read."""
        violated = tuple(k for k, v in (t.constraints or {}).items() if v > 0)
        return cls(t.number, dict(t.user_attrs.get("config") or {}), t.user_attrs.get("label", ""),
                   dict(t.user_attrs.get("metrics") or {}), t.user_attrs.get("mlflow_run_id"), noise_floor,
                   not violated, on_front, violated)

    @cached_property
    def cfg(self) -> TrialConfig | None:
        """The typed config (None for a record stored without one)."""
        return TrialConfig.from_dict(self.config) if self.config.get("backend") else None

    @property
    def batch_size(self) -> int:
        return self.cfg.batch_size if self.cfg else int(self.config.get("batch_size") or 0)

    @property
    def backend(self) -> str:
        return self.cfg.backend if self.cfg else "?"

    @property
    def latency_ms(self) -> float:
        return float(self.metrics.get("latency_ms", math.nan))

    @property
    def quality_loss(self) -> float:
        return float(self.metrics.get("quality_loss", math.nan))

    @property
    def tied_loss(self) -> float:
        """The quality loss as the front, the policies and the hypervolume compare it: 0 below the noise floor."""
        return 0.0 if self.quality_loss < self.noise_floor else self.quality_loss

    @property
    def throughput(self) -> float:
        return self.metrics.get("throughput", 0.0)

    def with_metrics(self, metrics: dict[str, float]) -> "TrialRecord":
        return replace(self, metrics=metrics)
