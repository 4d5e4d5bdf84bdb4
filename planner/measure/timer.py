"""Latency protocol: warm-up, then repeat until both a minimum count and a minimum time.

Every sample is one call of the engine on inputs already in place (one batch),
with device synchronisation inside the timed region.  We report percentiles
over per-call samples (never the max of a handful), the coefficient of
variation, and re-measure when the window is unstable.

How one call is timed is pluggable (``time_one``): the host clock around the call
and a synchronisation by default; on CUDA, `cuda_event_timer` records CUDA events
on the engine's stream around the call and waits on the end event, so the sample
is the device's own elapsed time.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

MIN_SAMPLES_FOR_P99 = 100
# After the fixed warm-up, timed blocks of SETTLE_BLOCK calls run until one block's median is within
# SETTLE_TOLERANCE of the block before it: CUDA-graph and Inductor engines, and GPU clocks, are not steady
# right after a generic warm-up (a torch.compile fp16 b=1 engine on an H200 gave a 1.48 ms median over its
# first samples and 0.25-0.36 ms in its full measurement).  Only settled samples are timed or judged.
SETTLE_BLOCK = 5
SETTLE_TOLERANCE = 0.10
SETTLE_MAX_BLOCKS = 200


class EarlyExit(Exception):
    """The candidate is hopeless: its first samples are far slower than the current best."""

    def __init__(self, median_ms: float, bound_ms: float):
        self.median_ms = median_ms
        self.bound_ms = bound_ms
        super().__init__(f"median of first samples {median_ms:.3f} ms > bound {bound_ms:.3f} ms")


@dataclass(frozen=True)
class LatencyStats:
    n: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    cv: float
    seconds: float  # wall time of the measured window
    warmup_iters: int
    windows: int  # 1 + number of re-measurements
    unstable: bool  # CV stayed above threshold after re-measuring
    p99_reliable: bool  # enough samples for p99 to mean something
    settled: bool = True  # the warm-up ended on two agreeing blocks (False: it ran out of time still changing)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def at(self, percentile: str) -> float:
        return {"p50": self.p50_ms, "p90": self.p90_ms, "p99": self.p99_ms}[percentile]


def percentile(sorted_vals: list[float], q: float) -> float:
    """Linear-interpolated percentile of an already sorted list (q in [0, 100])."""
    if not sorted_vals:
        return math.nan
    k = (len(sorted_vals) - 1) * q / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (k - lo)


def summarize(samples_s: list[float], seconds: float, warmup: int, windows: int, cv_threshold: float,
              settled: bool = True) -> LatencyStats:
    ms = sorted(s * 1e3 for s in samples_s)
    n = len(ms)
    mean = sum(ms) / n
    std = math.sqrt(sum((x - mean) ** 2 for x in ms) / (n - 1)) if n > 1 else 0.0
    cv = std / mean if mean > 0 else 0.0
    return LatencyStats(
        n=n, p50_ms=percentile(ms, 50), p90_ms=percentile(ms, 90), p99_ms=percentile(ms, 99),
        mean_ms=mean, std_ms=std, min_ms=ms[0], max_ms=ms[-1], cv=cv, seconds=seconds,
        warmup_iters=warmup, windows=windows, unstable=cv > cv_threshold, p99_reliable=n >= MIN_SAMPLES_FOR_P99,
        settled=settled,
    )


def host_timer(sync: Callable[[], None], clock: Callable[[], float] = time.perf_counter) -> Callable[[Callable[[], Any]], float]:
    """Seconds of one call by the host clock, the device synchronised inside the timed region."""

    def time_one(fn: Callable[[], Any]) -> float:
        t0 = clock()
        fn()
        sync()
        return clock() - t0

    return time_one


def cuda_event_timer(stream) -> Callable[[Callable[[], Any]], float]:
    """Seconds of one call by CUDA events recorded on ``stream`` (a ``torch.cuda.Stream``) before and
    after it; waits on the end event, so the call's queued device work is inside the sample."""
    import torch

    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def time_one(fn: Callable[[], Any]) -> float:
        start.record(stream)
        fn()
        end.record(stream)
        end.synchronize()
        return start.elapsed_time(end) / 1e3

    return time_one


def measure(
    fn: Callable[[], Any],
    protocol,
    sync: Callable[[], None] | None = None,
    abort_above_ms: float | None = None,
    probe_samples: int = 5,
    clock: Callable[[], float] = time.perf_counter,
    time_one: Callable[[Callable[[], Any]], float] | None = None,
) -> LatencyStats:
    """Time ``fn`` per ``protocol`` (a target's `measurement` section).

    ``abort_above_ms``: raise `EarlyExit` when the median of the first ``probe_samples``
    samples exceeds it (hopeless candidate), before spending the full protocol.  Those samples
    come after the warm-up has settled (`settle`), so an engine still speeding up is not judged.
    ``time_one``: how one sample is taken (default `host_timer` with ``sync``); the
    warm-up and the window lengths always follow the host ``clock``.
    """
    sync = sync or (lambda: None)
    time_one = time_one or host_timer(sync, clock)

    # warm-up: at least warmup_iters calls and warmup_seconds
    warm, t_start = 0, clock()
    while warm < protocol.warmup_iters or clock() - t_start < protocol.warmup_seconds:
        fn()
        sync()
        warm += 1
        if clock() - t_start > protocol.max_seconds:
            break
    settle_calls, settled = settle(fn, time_one, clock, protocol.max_seconds)
    warm += settle_calls

    def window() -> tuple[list[float], float]:
        samples: list[float] = []
        w0 = clock()
        while True:
            samples.append(time_one(fn))
            elapsed = clock() - w0
            if abort_above_ms is not None and len(samples) == probe_samples:
                med = sorted(samples)[len(samples) // 2] * 1e3
                if med > abort_above_ms:
                    raise EarlyExit(med, abort_above_ms)
            if len(samples) >= protocol.min_repeats and elapsed >= protocol.min_seconds:
                break
            if elapsed >= protocol.max_seconds and len(samples) >= 3:
                break
        return samples, clock() - w0

    samples, secs = window()
    best = summarize(samples, secs, warm, 1, protocol.cv_threshold, settled)
    windows = 1
    while best.unstable and windows <= protocol.max_remeasure:
        samples, secs = window()
        windows += 1
        again = summarize(samples, secs, warm, windows, protocol.cv_threshold, settled)
        best = again if again.cv < best.cv else best
    return LatencyStats(**{**best.to_dict(), "windows": windows})


def settle(fn: Callable[[], Any], time_one: Callable[[Callable[[], Any]], float], clock: Callable[[], float],
           max_seconds: float) -> tuple[int, bool]:
    """Time blocks of `SETTLE_BLOCK` calls until a block's median is within `SETTLE_TOLERANCE` of the previous
    block's (the engine has stopped speeding up or slowing down); at most ``max_seconds`` or
    `SETTLE_MAX_BLOCKS` blocks.  Returns (calls made, whether the samples settled)."""
    prev, calls, t0 = None, 0, clock()
    for _ in range(SETTLE_MAX_BLOCKS):
        block = sorted(time_one(fn) for _ in range(SETTLE_BLOCK))
        calls += SETTLE_BLOCK
        med = block[SETTLE_BLOCK // 2]
        if prev is not None and abs(med - prev) <= SETTLE_TOLERANCE * prev:
            return calls, True
        prev = med
        if clock() - t0 > max_seconds:
            break
    return calls, False
