"""Objectives and constraints of a study, from the target and the chosen objective names."""

from __future__ import annotations

from dataclasses import dataclass

from planner.errors import ConfigError, did_you_mean


@dataclass(frozen=True)
class Objective:
    name: str  # as given on the command line
    metric: str  # key in a trial's metrics
    direction: str  # minimize | maximize


OBJECTIVES = {
    "latency": Objective("latency", "latency_ms", "minimize"),
    "quality": Objective("quality", "quality_loss", "minimize"),
    "throughput": Objective("throughput", "throughput", "maximize"),
    "memory": Objective("memory", "peak_rss_mb", "minimize"),
    "size": Objective("size", "artifact_mb", "minimize"),
    # a target with open-loop traffic (`traffic:` with rate_search_steps > 0): the highest rate served within the SLO
    "sustained": Objective("sustained", "sustained_rate", "maximize"),
    # decoder workloads (--workload)
    "ttft": Objective("ttft", "ttft_ms", "minimize"),
    "tpot": Objective("tpot", "tpot_ms", "minimize"),
    "tokens": Objective("tokens", "tokens_per_s", "maximize"),
}
DEFAULT_OBJECTIVES = ("latency", "quality")
DEFAULT_LLM_OBJECTIVES = ("ttft", "tpot", "quality")


def parse_objectives(text: str | tuple[str, ...]) -> tuple[Objective, ...]:
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
    if not names:
        raise ConfigError("--objectives: give at least one of " + ", ".join(OBJECTIVES))
    bad = [n for n in names if n not in OBJECTIVES]
    if bad:
        raise ConfigError(f"--objectives: unknown objective {bad[0]!r}; {did_you_mean(bad[0], OBJECTIVES)}")
    if len(set(names)) != len(names):
        raise ConfigError("--objectives: an objective is listed twice")
    return tuple(OBJECTIVES[n] for n in names)


def check_objectives(objectives: tuple[Objective, ...], target, workload=None) -> None:
    """`ConfigError` for an objective the study cannot measure: decoder metrics without a workload, the
    sustained rate without open-loop traffic that searches it."""
    names = {o.name for o in objectives}
    llm = names & {"ttft", "tpot", "tokens"}
    if llm and workload is None:
        raise ConfigError(f"--objectives {sorted(llm)[0]}: measured for decoder workloads only; give --workload FILE")
    if "sustained" in names:
        tr = getattr(target, "traffic", None)
        if tr is None or tr.arrival == "closed" or tr.rate_search_steps < 1:
            raise ConfigError(f"--objectives sustained: target {target.name!r} must declare open-loop traffic that searches "
                              "the sustained rate (traffic: {arrival: poisson, rate: R, rate_search_steps: N >= 1})")


def constraints(metrics: dict[str, float], target) -> dict[str, float]:
    """Optuna constraint values (≤ 0 feasible) from the target's constraints."""
    c = target.constraints
    out = {"quality": metrics["quality_loss"] - c.max_quality_loss}
    if c.latency_slo_ms is not None:  # one request at a time (with traffic too: `single_latency_ms`)
        out["latency_slo"] = metrics.get("single_latency_ms", metrics["latency_ms"]) - c.latency_slo_ms
    traffic = getattr(target, "traffic", None)
    if traffic is not None and "served_latency_ms" in metrics:
        if traffic.slo_ms is not None:
            out["served_slo"] = metrics["served_latency_ms"] - traffic.slo_ms
        # the traffic is served: nothing dropped, the asked rate achieved (else the percentile is of an overload)
        asked = metrics.get("served_offered_rate", metrics.get("served_rate"))  # the sample's own rate, else the asked
        short = 0.95 * asked - metrics["served_achieved_rate"] if asked is not None else 0.0
        out["served_rate"] = max(short, 0.0) + metrics.get("served_dropped", 0.0)
    if c.max_memory_mb is not None:
        mem = metrics.get("gpu_peak_mb") if target.is_gpu else metrics.get("peak_rss_mb")
        if mem is not None:
            out["memory"] = mem - c.max_memory_mb
    return out
