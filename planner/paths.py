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
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

from planner.errors import PlannerError


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
        """The study's work folder; the name is made safe for a path (idempotent)."""
        return self.root / "studies" / safe_name(study)

    def ensure(self) -> "Home":
        for p in (self.root, self.artifacts, self.cache):
            p.mkdir(parents=True, exist_ok=True)
        return self


def safe_name(name: str) -> str:
    """``name`` with every run of characters outside ``[A-Za-z0-9_.-]`` replaced by ``_`` (at most 120)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:120]


class UnsafePath(PlannerError, ValueError):
    """A file name that would land outside the export folder."""


def safe_relpath(name: str) -> str:
    """``name`` as a normalised relative POSIX path that stays inside its folder; raises `UnsafePath` otherwise.

    Rejected: empty names, absolute paths (``/x``, ``C:\\x``, ``\\\\server``), any ``..`` component,
    backslashes and NUL bytes.
    """
    if not isinstance(name, str) or not name or name.strip() != name:
        raise UnsafePath(f"refusing file name {name!r}: empty or padded with spaces")
    if "\x00" in name or "\\" in name:
        raise UnsafePath(f"refusing file name {name!r}: contains a backslash or NUL byte")
    if name.startswith("/") or PureWindowsPath(name).is_absolute() or PureWindowsPath(name).drive:
        raise UnsafePath(f"refusing file name {name!r}: absolute path")
    parts = PurePosixPath(name).parts
    if any(p == ".." for p in parts):
        raise UnsafePath(f"refusing file name {name!r}: '..' would escape the export folder")
    clean = [p for p in parts if p not in ("", ".")]
    if not clean:
        return "."
    return "/".join(clean)


def safe_join(root: Path, name: str) -> Path:
    """``root / name`` after `safe_relpath`, also refusing a result that resolves (through links) outside ``root``."""
    rel = safe_relpath(name)
    root = Path(root)
    path = root if rel == "." else root / rel
    real_root = root.resolve()
    real = path.resolve()
    if real != real_root and not real.is_relative_to(real_root):
        raise UnsafePath(f"refusing file name {name!r}: resolves outside {root}")
    return path
