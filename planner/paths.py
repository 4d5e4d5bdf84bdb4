"""Where planner keeps its state: one local folder, ``./.planner`` unless told otherwise.

    .planner/optuna.db        Optuna storage (sqlite) - the source of truth of every study
    .planner/mlflow.db        MLflow tracking store (sqlite)
    .planner/mlartifacts/     MLflow artifacts (engines, manifests, plots)
    .planner/cache/           ONNX exports, TVM tuning databases, Inductor cache
    .planner/studies/NAME/    per-study work: reference outputs, per-trial work dirs and worker logs

Override with ``--home DIR`` or ``PLANNER_HOME``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Home:
    root: Path

    @classmethod
    def resolve(cls, home: str | Path | None = None) -> "Home":
        return cls(Path(home or os.environ.get("PLANNER_HOME") or ".planner").resolve())

    @property
    def optuna_url(self) -> str:
        return f"sqlite:///{self.root / 'optuna.db'}"

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.root / 'mlflow.db'}"

    @property
    def artifacts(self) -> Path:
        return self.root / "mlartifacts"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    def study_dir(self, study: str) -> Path:
        return self.root / "studies" / study

    def ensure(self) -> "Home":
        for p in (self.root, self.artifacts, self.cache):
            p.mkdir(parents=True, exist_ok=True)
        return self
