"""TTFT, TPOT and output tokens/s of a decoder runtime, under the target's measurement protocol.

* **TTFT** (time to first token): one ``prefill`` call on a ``[batch, prompt_length]``
  prompt -- it processes the prompt, populates the KV cache and returns the logits of the
  first generated token.  Each timer sample is one prefill.
* **TPOT** (time per output token): one ``decode`` step with a KV cache of realistic
  length.  The timed function walks a whole generation of ``generation_length`` tokens --
  the first comes from the (untimed) prefill, then ``generation_length - 1`` greedy decode
  steps at context lengths ``prompt_length .. prompt_length + generation_length - 2`` --
  and then starts over from the state saved after the prefill (an O(1) reset: see
  `planner.llm.runtimes`), for as many steps as the protocol asks (warm-up, then at least
  ``min_repeats`` samples and ``min_seconds``, percentiles, CV, re-measure when unstable).
  Greedy token selection (argmax over the vocabulary) is part of each step, as in serving.
* **tokens/s** = batch / mean TPOT (steady-state decode throughput of the batch).

Both use `planner.measure.timer.measure` unchanged.  `llm_constraints` turns the metrics
into Optuna constraint values against a `Workload` (≤ 0 feasible).  Importing this module
is light (no numpy/torch), so the planner process can use `llm_constraints`/`llm_metrics`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from planner.measure.timer import LatencyStats, measure

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from planner.llm.runtimes import DecoderRuntime
    from planner.llm.workload import Workload

PERCENTILES = ("p50", "p90", "p99")


def prompt_ids(batch: int, prompt_length: int, vocab: int, seed: int = 0) -> "np.ndarray":
    """Seeded random prompt ``[batch, prompt_length]`` int64 (content does not change the cost)."""
    import numpy as np

    return np.random.default_rng(seed).integers(0, vocab, size=(batch, prompt_length)).astype(np.int64)


def measure_ttft(rt: "DecoderRuntime", ids: "np.ndarray", protocol, abort_above_ms: float | None = None) -> LatencyStats:
    """Prefill latency; raises `planner.measure.timer.EarlyExit` above ``abort_above_ms``."""

    def fn():
        logits, _ = rt.prefill(ids)
        return logits.argmax(-1)

    return measure(fn, protocol, sync=rt.synchronize, abort_above_ms=abort_above_ms)


def measure_tpot(rt: "DecoderRuntime", ids: "np.ndarray", generation_length: int, protocol) -> LatencyStats:
    """Per-step decode latency over repeated generations of ``generation_length`` tokens."""
    logits0, state0 = rt.prefill(ids)
    tok0 = logits0.argmax(-1)
    steps = max(1, int(generation_length) - 1)
    cur = {"state": state0, "tok": tok0, "i": 0}

    def fn():
        if cur["i"] >= steps:  # generation done: restart from the post-prefill cache (O(1))
            cur["state"], cur["tok"], cur["i"] = state0, tok0, 0
        logits, cur["state"] = rt.decode(cur["tok"], cur["state"])
        cur["tok"] = logits.argmax(-1)
        cur["i"] += 1

    return measure(fn, protocol, sync=rt.synchronize)


def measure_llm(rt: "DecoderRuntime", prompt_length: int, batch: int, generation_length: int, protocol,
                vocab: int | None = None, seed: int = 0, abort_above_ms: float | None = None) -> dict[str, Any]:
    """TTFT and TPOT of one (prompt length, batch): flat metrics plus the two timer dicts."""
    vocab = int(vocab or getattr(rt, "vocab", 2))
    ids = prompt_ids(batch, prompt_length, vocab, seed)
    ttft = measure_ttft(rt, ids, protocol, abort_above_ms)
    tpot = measure_tpot(rt, ids, generation_length, protocol)
    out: dict[str, Any] = {"prompt_length": int(prompt_length), "batch": int(batch),
                           "generation_length": int(generation_length)}
    for name, s in (("ttft", ttft), ("tpot", tpot)):
        for p in PERCENTILES:
            out[f"{name}_{p}_ms"] = s.at(p)
        out[f"{name}_mean_ms"] = s.mean_ms
        out[f"{name}_cv"] = s.cv
        out[f"{name}_samples"] = s.n
        out[f"{name}_unstable"] = s.unstable
    out["tokens_per_s"] = batch / (tpot.mean_ms / 1e3) if tpot.mean_ms > 0 else float("inf")
    out["ttft_stats"] = ttft.to_dict()
    out["tpot_stats"] = tpot.to_dict()
    return out


def measure_workload(rt: "DecoderRuntime", workload: "Workload", batch: int, protocol, vocab: int | None = None,
                     seed: int = 0, abort_above_ms: float | None = None) -> dict[str, Any]:
    """Measure every prompt length of ``workload`` at ``batch``.

    Returns ``{"by_prompt": [per-length metrics...], **worst}`` where the top-level
    metrics are the worst case over prompt lengths (per percentile: the max TTFT and max
    TPOT; tokens/s: the min), which is what an SLO on every request must meet.
    ``ttft_stats``/``tpot_stats`` are those of the prompt length with the largest TTFT
    (resp. TPOT) at the SLO percentile.  ``abort_above_ms`` applies to the first TTFT.
    """
    per = []
    for i, t in enumerate(workload.prompt_lengths):
        per.append(measure_llm(rt, t, batch, workload.generation_length, protocol, vocab, seed + i,
                               abort_above_ms if i == 0 else None))
    return {**aggregate(per, workload.slo.percentile), "by_prompt": per}


def aggregate(per: list[dict[str, Any]], percentile: str = "p99") -> dict[str, Any]:
    """Worst case over prompt lengths (see `measure_workload`)."""
    out: dict[str, Any] = {"batch": per[0]["batch"], "generation_length": per[0]["generation_length"]}
    for name in ("ttft", "tpot"):
        for p in PERCENTILES:
            out[f"{name}_{p}_ms"] = max(m[f"{name}_{p}_ms"] for m in per)
        out[f"{name}_mean_ms"] = max(m[f"{name}_mean_ms"] for m in per)
        out[f"{name}_cv"] = max(m[f"{name}_cv"] for m in per)
        worst = max(per, key=lambda m: m[f"{name}_{percentile}_ms"])
        out[f"{name}_prompt_length"] = worst["prompt_length"]
        out[f"{name}_stats"] = worst[f"{name}_stats"]
    out["prompt_length"] = out["ttft_prompt_length"]
    out["tokens_per_s"] = min(m["tokens_per_s"] for m in per)
    return out


def llm_constraints(metrics: dict[str, Any], workload: "Workload") -> dict[str, float]:
    """Optuna constraint values (≤ 0 feasible), in the units of the bound (ms, or the quality metric).

    ``ttft_slo`` / ``tpot_slo``: measured value at the workload's percentile minus the bound
    (only for the bounds the workload sets); ``quality``: the workload's quality metric
    (``disagreement`` or ``kl_mean``, read from ``metrics`` or ``metrics["quality"]``) minus
    its maximum; ``quality_kl``: ``kl_mean`` minus ``max_kl`` when the workload bounds both.  A missing or non-finite measurement counts as infinitely violated.
    """
    slo, p = workload.slo, workload.slo.percentile
    out: dict[str, float] = {}

    def get(key: str) -> float:
        v = metrics.get(key)
        if v is None and isinstance(metrics.get("quality"), dict):
            v = metrics["quality"].get(key)
        if v is None and isinstance(metrics.get("llm"), dict):
            v = metrics["llm"].get(key)
        try:
            v = float(v)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return float("inf")
        return v if math.isfinite(v) else float("inf")

    if slo.ttft_ms is not None:
        out["ttft_slo"] = get(f"ttft_{p}_ms") - slo.ttft_ms
    if slo.tpot_ms is not None:
        out["tpot_slo"] = get(f"tpot_{p}_ms") - slo.tpot_ms
    q = workload.quality
    out["quality"] = get(q.metric) - q.bound
    if q.kl_bound is not None:  # both bounds given: KL as a second constraint
        out["quality_kl"] = get("kl_mean") - q.kl_bound
    return out


def llm_metrics(res: dict[str, Any]) -> dict[str, float]:
    """Flat numeric metrics of an LLM trial result (``res["llm"]`` and ``res["quality"]``), for
    study records: ``ttft_p99_ms``, ``tpot_p50_ms``, ``tokens_per_s``, ``disagreement``, ..."""
    out: dict[str, float] = {}
    for src in (res.get("llm") or {}, res.get("quality") or {}):
        for k, v in src.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out[k] = v
    return out
