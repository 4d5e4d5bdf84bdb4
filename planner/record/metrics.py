"""A trial's metrics, flat: what Optuna values, MLflow metrics and the Pareto table read from a worker result."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from planner.config import TrialConfig
    from planner.target import Target


def per_sample(p50_ms: float, batch_size: int) -> dict[str, float]:
    """The figures derived from a batch's median latency: per-sample latency and throughput (samples/s)."""
    return {"latency_per_sample_ms": p50_ms / batch_size, "throughput": batch_size / (p50_ms / 1e3)}


def metrics_of(res: dict[str, Any], cfg: "TrialConfig", target: "Target") -> dict[str, float]:
    """Flatten a worker's trial result into named metrics (latency at the target's percentile as ``latency_ms``)."""
    lat = res["latency"]
    m: dict[str, float] = {
        "latency_ms": lat[f"{target.constraints.latency_percentile}_ms"],
        "single_latency_ms": lat[f"{target.constraints.latency_percentile}_ms"],
        "latency_p50_ms": lat["p50_ms"], "latency_p90_ms": lat["p90_ms"], "latency_p99_ms": lat["p99_ms"],
        "latency_mean_ms": lat["mean_ms"], "latency_min_ms": lat["min_ms"], "latency_cv": lat["cv"],
        "latency_samples": lat["n"], "latency_windows": lat["windows"],
        **per_sample(lat["p50_ms"], cfg.batch_size),
        "compile_seconds": res.get("compile_seconds", 0.0),
        "peak_rss_mb": res.get("peak_rss_mb", 0.0),
        "model_rss_mb": res.get("model_rss_mb", 0.0),
        "artifact_mb": res.get("artifact_mb", 0.0),
        "batch_size": cfg.batch_size,
    }
    if res.get("gpu_peak_mb") is not None:
        m["gpu_peak_mb"] = res["gpu_peak_mb"]
    if res.get("serving_rss_mb") is not None:  # decoder trials: resident memory while serving, after the build
        m["serving_rss_mb"] = res["serving_rss_mb"]
    m["latency_cuda_events"] = float(res.get("timing") == "cuda_events")
    copies = res.get("latency_with_copies")
    if copies:  # a device engine: `latency_*` excludes host<->device copies, these include them
        m["latency_copies_included"] = 0.0
        for k in ("p50", "p90", "p99"):
            m[f"latency_with_copies_{k}_ms"] = copies[f"{k}_ms"]
    served = res.get("served")
    if served:  # the target declares traffic: the latency of the study is the served one (planner.measure.serving)
        m.update({k: v for k, v in served_metrics(served, target).items() if k != "single_latency_ms"})
        m["latency_ms"] = m["served_latency_ms"]
    for k, v in (res.get("quality") or {}).items():
        m[k] = v
    m.update({f"time.{k}_s": v for k, v in time_split(res).items()})
    for k, v in (res.get("build_info") or {}).items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            m[f"build.{k}"] = v
    for k, v in (res.get("transform_info") or {}).items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            m[f"transform.{k}"] = v
    return m


def served_metrics(served: dict[str, Any], target: "Target") -> dict[str, float]:
    """The served figures as metrics: ``latency_ms`` becomes the served latency at the traffic's percentile and
    rate, the single-request figure stays as ``single_latency_ms`` (and ``latency_p50_ms`` ... as before)."""
    at = served["at_rate"]
    pct = target.traffic.percentile  # type: ignore[union-attr]
    m: dict[str, float] = {}
    m.update({f"served_{k}_ms": at[f"{k}_ms"] for k in ("p50", "p90", "p99", "mean", "max")})
    m.update({"served_achieved_rate": at["achieved_rate"], "served_dropped": at["dropped"], "served_late": at["late"],
              "served_requests": at["requests"], "served_mean_batch": at["mean_batch"],
              "serving_instances": served["serving"]["instances"], "serving_max_batch": served["serving"]["max_batch"],
              "serving_max_queue_delay_us": served["serving"]["max_queue_delay_us"],
              "serving_threads_per_instance": served["serving"]["threads_per_instance"]})
    if at.get("rate") is not None:
        m["served_rate"] = at["rate"]
    if at.get("offered_rate") is not None:
        m["served_offered_rate"] = at["offered_rate"]
    if "sustained_rate" in served:
        m["sustained_rate"] = served["sustained_rate"]
    if at.get("lengths"):  # requests at their own lengths (traffic lengths: data): their mean padded length
        n = sum(at["lengths"].values())
        m["served_mean_length"] = sum(int(k) * v for k, v in at["lengths"].items()) / n
    m["served_latency_ms"] = at[f"{pct}_ms"]
    return m


# the phases of a trial's wall time; the planner's own share is what is not transforms, compile or timing
TIME_PHASES = ("startup", "imports", "model", "transforms", "export", "compile", "waiting", "quality", "timing", "serving",
               "other")
PLANNER_SHARE = ("startup", "imports", "model", "export", "quality", "other")


def time_split(res: dict[str, Any]) -> dict[str, float]:
    """A trial's wall time by phase (`TIME_PHASES`), summing to the parent's wall time: ``startup`` is the process
    start and the job's reading (the parent's wall time less the worker's own), ``other`` what the worker did
    outside the named phases (reading the reference, writing results).  Empty when the worker recorded none."""
    split = res.get("time_split")
    if not split or res.get("wall_seconds") is None or res.get("worker_seconds") is None:
        return {}
    out = {"startup": max(0.0, float(res["wall_seconds"]) - float(res["worker_seconds"]))}
    out.update({k: float(split.get(k, 0.0)) for k in TIME_PHASES if k not in ("startup", "other")})
    out["other"] = max(0.0, float(res["worker_seconds"]) - sum(float(v) for v in split.values()))
    return out
