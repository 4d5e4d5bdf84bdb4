"""Pareto front of a finished (or running) study, and selection policies as small objects."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from planner.errors import ConfigError, did_you_mean
from planner.record.trial import TrialRecord


Point = TrialRecord  # one measured deployment (the typed record every reader after the worker uses)


# Quality losses below these floors are numerical noise, not quality: ties for the front, the plots, the
# hypervolume and the registry aliases.  Per output kind of the model; a study records the floor it used
# (study attr ``quality_noise_floor``).  The loss of logits and embeddings is 1 - centered cosine to the fp32
# reference (planner.measure.quality): fp32 engines differ from eager torch by reordered sums only, measured
# here at 3.5e-14 .. 7.1e-11 (resnet18, MiniLM, digits-cnn: experiments/results/compression-*.json) while the
# smallest real loss there (int8, pruning) is 1.9e-3.  1e-6 sits four decades above the noise and three below
# the first real loss.  Accuracy drops and decoder disagreements are multiples of 1/samples, far above 1e-6,
# so the same floor never ties two of those that differ.
NOISE_FLOORS = {"logits": 1e-6, "embedding": 1e-6}
DEFAULT_NOISE_FLOOR = 1e-6


def noise_floor_for(output_kind: str | None) -> float:
    """The quality-loss noise floor of a model's output kind (`NOISE_FLOORS`; `DEFAULT_NOISE_FLOOR` otherwise)."""
    return NOISE_FLOORS.get(output_kind or "", DEFAULT_NOISE_FLOOR)


def study_noise_floor(study) -> float:
    """The floor a study recorded (``quality_noise_floor``), else the one of its model's output kind."""
    v = study.user_attrs.get("quality_noise_floor")
    if isinstance(v, (int, float)):
        return float(v)
    return noise_floor_for((study.user_attrs.get("model_info") or {}).get("output_kind"))


def tie(loss: float, floor: float) -> float:
    """A quality loss as compared: below the noise floor every loss is the same, 0."""
    return 0.0 if loss < floor else loss


def trial_point(t) -> Point:
    return TrialRecord.from_trial(t)


def feasible_trials(trials) -> list:
    """The COMPLETE trials among ``trials`` (Optuna FrozenTrials) that the study measured itself (not duplicates)
    and that meet every constraint."""
    return [t for t in trials if t.state.name == "COMPLETE" and t.user_attrs.get("duplicate_of") is None
            and all(v <= 0 for v in t.constraints.values())]


def feasible_points(study) -> list[Point]:
    from optuna.trial import TrialState

    return [trial_point(t) for t in feasible_trials(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))]


# metrics a confirmation (planner.select.confirm) replaces; the study's own figure stays as study_latency_ms
CONFIRMED_METRICS = ("latency_ms", "latency_p50_ms", "latency_p90_ms", "latency_p99_ms", "latency_per_sample_ms", "throughput",
                     # under the target's traffic (planner.select.confirm.summarize_served)
                     "served_latency_ms", "served_p50_ms", "served_p90_ms", "served_p99_ms", "served_achieved_rate")


def confirmed(study) -> dict[int, dict[str, Any]]:
    """``{trial number: confirmed metrics}`` from the study's confirmation, {} when it has none."""
    c = study.user_attrs.get("confirmation") or {}
    return {int(n): v for n, v in (c.get("trials") or {}).items()}


def with_confirmation(p: Point, c: dict[str, Any]) -> Point:
    m = {**p.metrics, **{k: float(c[k]) for k in CONFIRMED_METRICS if k in c},
         "study_latency_ms": p.metrics["latency_ms"], "study_latency_p50_ms": p.metrics.get("latency_p50_ms", p.metrics["latency_ms"]),
         "confirmed_rounds": float(c.get("rounds", 0))}
    return p.with_metrics(m)


def confirmed_points(study) -> list[Point]:
    """`feasible_points` with the confirmed figures of re-measured trials; a confirmed latency over the
    target's latency SLO makes a trial infeasible."""
    conf = confirmed(study)
    return [with_confirmation(p, conf[p.number]) if p.number in conf else p for p in feasible_points(study)
            if not conf.get(p.number, {}).get("slo_violated")]


def _objectives(study):
    from planner.record.objectives import DEFAULT_OBJECTIVES, parse_objectives

    return parse_objectives(tuple(study.user_attrs.get("objectives") or DEFAULT_OBJECTIVES))


def non_dominated(points: list[Point], objectives, noise_floor: float = 0.0) -> list[Point]:
    """The points no other point beats on every objective (metric, direction) and strictly on one; quality
    losses below ``noise_floor`` are ties (so of two deployments both below it, the faster dominates)."""
    def value(p: Point, metric: str) -> float:
        v = p.metrics[metric]
        return tie(v, noise_floor) if metric == "quality_loss" else v

    def key(p: Point) -> tuple[float, ...]:
        return tuple(value(p, o.metric) if o.direction == "minimize" else -value(p, o.metric) for o in objectives)

    ks = [key(p) for p in points]
    return [p for p, a in zip(points, ks)
            if not any(all(x <= y for x, y in zip(b, a)) and b != a for b in ks)]


def pareto_front(study) -> list[Point]:
    """Non-dominated feasible deployments, one per distinct config, sorted by latency.

    Quality losses below the study's noise floor (`study_noise_floor`) are ties: of two deployments both
    below it only the faster is on the front.  Trials re-measured by a confirmation count with their
    confirmed figures (a confirmed latency that breaks the latency SLO makes the trial infeasible); the rest
    with the study's own."""
    import dataclasses

    floor = study_noise_floor(study)
    seen, pts = set(), []
    for p in sorted(confirmed_points(study), key=lambda p: p.number):  # one per config (concurrent workers)
        key = _key(p)
        if key in seen:
            continue
        seen.add(key)
        pts.append(dataclasses.replace(p, noise_floor=floor))
    objectives = [o for o in _objectives(study) if all(o.metric in p.metrics for p in pts)]
    return sorted(non_dominated(pts, objectives, floor), key=lambda p: (p.latency_ms, p.tied_loss, p.number))


def _key(p: Point) -> str:
    import json

    return json.dumps(p.config, sort_keys=True, default=str)


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
        return min(front, key=lambda p: (response_ms(p), p.tied_loss), default=None)


@dataclass(frozen=True)
class MostAccurate:
    """The lowest quality loss; losses below the noise floor are ties, won by the faster."""

    name: str = "most-accurate"

    def select(self, front):
        return min(front, key=lambda p: (p.tied_loss, response_ms(p)), default=None)


@dataclass(frozen=True)
class Knee:
    """The point closest to the utopia point after normalising both objectives to [0, 1]."""

    name: str = "knee"

    def select(self, front):
        if not front:
            return None
        lat = [response_ms(p) for p in front]
        q = [p.tied_loss for p in front]

        def norm(v, vs):
            lo, hi = min(vs), max(vs)
            return 0.0 if hi == lo else (v - lo) / (hi - lo)

        return min(front, key=lambda p: (norm(response_ms(p), lat) ** 2 + norm(p.tied_loss, q) ** 2, response_ms(p)))


@dataclass(frozen=True)
class FastestWithin:
    max_quality_loss: float
    name: str = "fastest-within"

    def select(self, front):
        ok = [p for p in front if p.tied_loss <= self.max_quality_loss]
        return min(ok, key=lambda p: response_ms(p), default=None)


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
            "trial": p.number, "deployment": p.label, "batch": p.batch_size,
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


# --------------------------------------------------------------------------- summary


def hypervolume(front: list[Point], ref_latency_ms: float, ref_quality_loss: float) -> float:
    """Share of the box [0, ref_latency_ms] x [0, ref_quality_loss] dominated by ``front`` (latency vs quality
    loss, both minimised; losses below each point's noise floor count as 0), in [0, 1].

    With a reference point fixed beforehand (the target's latency SLO and max quality loss) values compare
    across studies and samplers; `study_summary` falls back to the slowest feasible latency without an SLO."""
    if not (ref_latency_ms > 0 and ref_quality_loss > 0):
        return 0.0
    pts = sorted((min(p.latency_ms, ref_latency_ms), min(p.tied_loss, ref_quality_loss)) for p in front)
    area, best_q = 0.0, ref_quality_loss
    for lat, q in pts:
        if q >= best_q:
            continue
        area += (ref_latency_ms - lat) * (best_q - q)  # the strip this point adds below the best loss so far
        best_q = q
    return area / (ref_latency_ms * ref_quality_loss)


def _is_fp32_eager(p: Point) -> bool:
    c = p.cfg
    return c is not None and c.backend == "torch" and not c.quant.active and not c.prune.ratio and not c.distill.active


def study_summary(study, front: list[Point] | None = None) -> dict[str, Any]:
    """What a study found, as the parent MLflow run shows it.

    ``metrics``: best_latency_ms / best_throughput (feasible trials), best_latency_vs_fp32 (the fastest front
    point's latency over the study's plain eager-torch fp32 trial at the same batch size, when it measured one),
    pareto_front_size, trials_measured / _infeasible / _failed / _duplicate / _skipped / _stopped, hypervolume (`hypervolume`, of the
    feasible front; reference point: the target's latency SLO, or without one the slowest feasible latency
    measured, and its max quality loss), quality_noise_floor.  ``fp32`` is that baseline Point (or None)."""
    from optuna.trial import TrialState

    front = pareto_front(study) if front is None else front
    feasible = confirmed_points(study)
    trials = study.get_trials(deepcopy=False)
    measured = [t for t in trials if t.state == TrialState.COMPLETE and t.user_attrs.get("duplicate_of") is None]
    infeasible = [t for t in measured if any(v > 0 for v in t.constraints.values())]
    m: dict[str, float] = {
        "pareto_front_size": len(front),
        "trials_measured": len(measured),
        "trials_infeasible": len(infeasible),
        "trials_failed": sum(t.state == TrialState.FAIL for t in trials),
        "trials_duplicate": sum(t.user_attrs.get("duplicate_of") is not None for t in trials),
        # not measured, known hopeless/unsupported before a worker ran; students whose staged distillation stopped
        "trials_skipped": sum(t.state == TrialState.PRUNED and t.user_attrs.get("skip_reason") is not None
                              and not t.user_attrs.get("distill_stopped") for t in trials),
        "trials_stopped": sum(bool(t.user_attrs.get("distill_stopped")) for t in trials),
        "quality_noise_floor": study_noise_floor(study),
    }
    best = Fastest().select(front)
    fp32 = None
    if best is not None:
        m["best_latency_ms"] = best.latency_ms
        m["best_latency_quality_loss"] = best.quality_loss
        thr = [p.throughput for p in feasible if p.throughput]
        if thr:
            m["best_throughput"] = max(thr)
        eager = [p for p in (trial_point(t) for t in measured) if _is_fp32_eager(p)
                 and p.batch_size == best.batch_size and "latency_ms" in p.metrics]
        if eager:
            fp32 = min(eager, key=lambda p: p.latency_ms)
            m["fp32_latency_ms"] = fp32.latency_ms
            m["best_latency_vs_fp32"] = best.latency_ms / fp32.latency_ms
    cons = (study.user_attrs.get("target_spec") or {}).get("constraints") or {}
    ref_q = cons.get("max_quality_loss")
    ref_lat = cons.get("latency_slo_ms") or (max(p.latency_ms for p in feasible) if feasible else None)
    if ref_q and ref_lat:
        m["hypervolume"] = hypervolume(front, float(ref_lat), float(ref_q))
        m["hypervolume_ref_latency_ms"] = float(ref_lat)
        m["hypervolume_ref_quality_loss"] = float(ref_q)
    return {"metrics": m, "best": best, "fp32": fp32}
