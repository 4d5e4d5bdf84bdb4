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


def _study_front(study) -> list[Point]:
    """Non-dominated feasible trials by the study's own measurements (Optuna's `best_trials`), one per config."""
    seen, out = set(), []
    for t in study.best_trials:
        if t.user_attrs.get("duplicate_of") is not None:
            continue
        key = t.user_attrs.get("config_key")
        if key in seen:
            continue
        seen.add(key)
        out.append(_point(t))
    return out


# metrics a confirmation (planner.select.confirm) replaces; the study's own figure stays as study_latency_ms
CONFIRMED_METRICS = ("latency_ms", "latency_p50_ms", "latency_p90_ms", "latency_p99_ms", "latency_per_sample_ms", "throughput")


def confirmed(study) -> dict[int, dict[str, Any]]:
    """``{trial number: confirmed metrics}`` from the study's confirmation, {} when it has none."""
    c = study.user_attrs.get("confirmation") or {}
    return {int(n): v for n, v in (c.get("trials") or {}).items()}


def with_confirmation(p: Point, c: dict[str, Any]) -> Point:
    m = {**p.metrics, **{k: float(c[k]) for k in CONFIRMED_METRICS if k in c},
         "study_latency_ms": p.metrics["latency_ms"], "study_latency_p50_ms": p.metrics.get("latency_p50_ms", p.metrics["latency_ms"]),
         "confirmed_rounds": float(c.get("rounds", 0))}
    return Point(p.number, p.config, p.label, m, p.run_id)


def confirmed_points(study) -> list[Point]:
    """`feasible_points` with the confirmed figures of re-measured trials; a confirmed latency over the
    target's latency SLO makes a trial infeasible."""
    conf = confirmed(study)
    return [with_confirmation(p, conf[p.number]) if p.number in conf else p for p in feasible_points(study)
            if not conf.get(p.number, {}).get("slo_violated")]


def _objectives(study):
    from planner.record.objectives import DEFAULT_OBJECTIVES, parse_objectives

    return parse_objectives(tuple(study.user_attrs.get("objectives") or DEFAULT_OBJECTIVES))


def non_dominated(points: list[Point], objectives) -> list[Point]:
    """The points no other point beats on every objective (metric, direction) and strictly on one."""
    def key(p: Point) -> tuple[float, ...]:
        return tuple(p.metrics[o.metric] if o.direction == "minimize" else -p.metrics[o.metric] for o in objectives)

    ks = [key(p) for p in points]
    return [p for p, a in zip(points, ks)
            if not any(all(x <= y for x, y in zip(b, a)) and b != a for b in ks)]


def pareto_front(study) -> list[Point]:
    """Non-dominated feasible deployments, one per distinct config, sorted by latency.

    Trials re-measured by a confirmation count with their confirmed figures (a confirmed latency that
    breaks the latency SLO makes the trial infeasible); the rest with the study's own."""
    if not confirmed(study):
        return sorted(_study_front(study), key=lambda p: (p.latency_ms, p.quality_loss))
    pts = confirmed_points(study)  # all of them: a trial dominated only by one re-measured slower is back in
    objectives = [o for o in _objectives(study) if all(o.metric in p.metrics for p in pts)]
    return sorted(non_dominated(pts, objectives), key=lambda p: (p.latency_ms, p.quality_loss))


def response_ms(p: Point) -> float:
    """How long a deployment takes to answer: for a decoder (a workload's TTFT/TPOT at its percentile), the
    whole response of the workload's length, TTFT + (generation_length - 1) x TPOT, so per-token latency counts
    as much as the users waiting for the tokens feel it; for other models, the latency."""
    m = p.metrics
    if "ttft_ms" in m and "tpot_ms" in m:
        return m["ttft_ms"] + max(0.0, m.get("generation_length", 1) - 1) * m["tpot_ms"]
    return p.latency_ms


class Policy(Protocol):
    name: str

    def select(self, front: list[Point]) -> Point | None: ...


@dataclass(frozen=True)
class Fastest:
    name: str = "fastest"

    def select(self, front):
        return min(front, key=lambda p: (response_ms(p), p.quality_loss), default=None)


@dataclass(frozen=True)
class MostAccurate:
    name: str = "most-accurate"

    def select(self, front):
        return min(front, key=lambda p: (p.quality_loss, response_ms(p)), default=None)


@dataclass(frozen=True)
class Knee:
    """The point closest to the utopia point after normalising both objectives to [0, 1]."""

    name: str = "knee"

    def select(self, front):
        if not front:
            return None
        lat = [response_ms(p) for p in front]
        q = [p.quality_loss for p in front]

        def norm(v, vs):
            lo, hi = min(vs), max(vs)
            return 0.0 if hi == lo else (v - lo) / (hi - lo)

        return min(front, key=lambda p: (norm(response_ms(p), lat) ** 2 + norm(p.quality_loss, q) ** 2, response_ms(p)))


@dataclass(frozen=True)
class FastestWithin:
    max_quality_loss: float
    name: str = "fastest-within"

    def select(self, front):
        ok = [p for p in front if p.quality_loss <= self.max_quality_loss]
        return min(ok, key=response_ms, default=None)


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
