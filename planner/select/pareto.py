"""Pareto front of a finished (or running) study, and selection policies as small objects."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from planner.errors import ConfigError, did_you_mean


@dataclass(frozen=True)
class Point:
    """One measured, feasible deployment."""

    number: int
    config: dict[str, Any]
    label: str
    metrics: dict[str, float]
    run_id: str | None

    @property
    def latency_ms(self) -> float:
        return self.metrics["latency_ms"]

    @property
    def quality_loss(self) -> float:
        return self.metrics["quality_loss"]

    @property
    def throughput(self) -> float:
        return self.metrics.get("throughput", 0.0)


def _point(t) -> Point:
    return Point(t.number, t.user_attrs.get("config", {}), t.user_attrs.get("label", ""), dict(t.user_attrs.get("metrics", {})),
                 t.user_attrs.get("mlflow_run_id"))


def feasible_points(study) -> list[Point]:
    from optuna.trial import TrialState

    out = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if t.user_attrs.get("duplicate_of") is not None:
            continue
        if all(v <= 0 for v in t.constraints.values()):
            out.append(_point(t))
    return out


def pareto_front(study) -> list[Point]:
    """Non-dominated feasible trials (Optuna's `best_trials`), one per distinct config, sorted by latency."""
    seen, out = set(), []
    for t in study.best_trials:
        if t.user_attrs.get("duplicate_of") is not None:
            continue
        key = t.user_attrs.get("config_key")
        if key in seen:
            continue
        seen.add(key)
        out.append(_point(t))
    return sorted(out, key=lambda p: (p.latency_ms, p.quality_loss))


class Policy(Protocol):
    name: str

    def select(self, front: list[Point]) -> Point | None: ...


@dataclass(frozen=True)
class Fastest:
    name: str = "fastest"

    def select(self, front):
        return min(front, key=lambda p: (p.latency_ms, p.quality_loss), default=None)


@dataclass(frozen=True)
class MostAccurate:
    name: str = "most-accurate"

    def select(self, front):
        return min(front, key=lambda p: (p.quality_loss, p.latency_ms), default=None)


@dataclass(frozen=True)
class Knee:
    """The point closest to the utopia point after normalising both objectives to [0, 1]."""

    name: str = "knee"

    def select(self, front):
        if not front:
            return None
        lat = [p.latency_ms for p in front]
        q = [p.quality_loss for p in front]

        def norm(v, vs):
            lo, hi = min(vs), max(vs)
            return 0.0 if hi == lo else (v - lo) / (hi - lo)

        return min(front, key=lambda p: (norm(p.latency_ms, lat) ** 2 + norm(p.quality_loss, q) ** 2, p.latency_ms))


@dataclass(frozen=True)
class FastestWithin:
    max_quality_loss: float
    name: str = "fastest-within"

    def select(self, front):
        ok = [p for p in front if p.quality_loss <= self.max_quality_loss]
        return min(ok, key=lambda p: p.latency_ms, default=None)


@dataclass(frozen=True)
class MaxThroughputWithin:
    max_latency_ms: float
    name: str = "max-throughput-within"

    def select(self, front):
        ok = [p for p in front if p.latency_ms <= self.max_latency_ms]
        return max(ok, key=lambda p: p.throughput, default=None)


POLICIES = ("fastest", "most-accurate", "knee", "fastest-within:<quality loss>", "max-throughput-within:<latency ms>")


def parse_policy(text: str) -> Policy:
    name, _, arg = text.partition(":")
    simple = {"fastest": Fastest(), "most-accurate": MostAccurate(), "knee": Knee()}
    if name in simple and not arg:
        return simple[name]
    if name in ("fastest-within", "max-throughput-within"):
        try:
            value = float(arg)
        except ValueError:
            raise ConfigError(f"--policy {text}: needs a number after ':', e.g. {name}:{'0.01' if name == 'fastest-within' else '10'}") from None
        if value < 0:
            raise ConfigError(f"--policy {text}: the bound must be ≥ 0")
        return FastestWithin(value) if name == "fastest-within" else MaxThroughputWithin(value)
    raise ConfigError(f"--policy {text!r}: {did_you_mean(name, POLICIES)}")


def table_rows(front: list[Point]) -> list[dict[str, Any]]:
    rows = []
    for p in front:
        m = p.metrics
        rows.append({
            "trial": p.number, "deployment": p.label, "batch": p.config.get("batch_size"),
            "p50_ms": m.get("latency_p50_ms"), "p99_ms": m.get("latency_p99_ms"),
            "throughput": m.get("throughput"), "quality_loss": m.get("quality_loss"),
            "run_id": p.run_id,
        })
    return rows


def markdown_table(front: list[Point]) -> str:
    head = "| trial | deployment | batch | p50 ms | p99 ms | samples/s | quality loss |\n|---:|---|---:|---:|---:|---:|---:|\n"
    lines = [
        f"| {r['trial']} | {r['deployment']} | {r['batch']} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {r['throughput']:.1f} | {r['quality_loss']:.2e} |"
        for r in table_rows(front)
    ]
    return head + "\n".join(lines) + "\n"
