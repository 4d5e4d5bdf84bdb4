import math
import time

import pytest

from planner.measure.timer import EarlyExit, host_timer, measure, percentile, summarize
from planner.target import Protocol


def test_percentile_interpolates():
    vals = sorted(float(i) for i in range(1, 101))  # 1..100
    assert percentile(vals, 50) == pytest.approx(50.5)
    assert percentile(vals, 99) == pytest.approx(99.01)
    assert percentile([3.0], 99) == 3.0
    assert math.isnan(percentile([], 50))


def test_summary_statistics():
    s = summarize([0.001] * 50 + [0.003] * 50, 1.0, 5, 1, cv_threshold=0.1)
    assert s.n == 100 and s.p50_ms == pytest.approx(2.0) and s.min_ms == pytest.approx(1.0)
    assert s.p99_ms == pytest.approx(3.0) and s.cv > 0.4 and s.unstable and s.p99_reliable


def test_repeats_until_both_count_and_time():
    calls = []
    # no re-measure here (that has its own test): every call is warm-up or a sample of the one window
    proto = Protocol(warmup_iters=3, warmup_seconds=0, min_repeats=10, min_seconds=0.05, max_seconds=5, max_remeasure=0)
    s = measure(lambda: calls.append(time.sleep(0.001)), proto)
    assert s.n >= 10 and s.seconds >= 0.05
    assert len(calls) == s.n + s.warmup_iters
    assert s.p50_ms >= 1.0 and not s.p99_reliable or s.n >= 100


def test_max_seconds_caps_slow_candidates():
    proto = Protocol(warmup_iters=0, warmup_seconds=0, min_repeats=1000, min_seconds=0, max_seconds=0.05)
    s = measure(lambda: time.sleep(0.01), proto)
    assert 3 <= s.n < 20


def test_sync_is_inside_the_timed_region():
    proto = Protocol(warmup_iters=0, warmup_seconds=0, min_repeats=5, min_seconds=0, max_seconds=5)
    s = measure(lambda: None, proto, sync=lambda: time.sleep(0.002))
    assert s.p50_ms >= 2.0


def test_early_exit_for_hopeless_candidate():
    proto = Protocol(warmup_iters=1, warmup_seconds=0, min_repeats=1000, min_seconds=10, max_seconds=20)
    t0 = time.perf_counter()
    with pytest.raises(EarlyExit) as e:
        measure(lambda: time.sleep(0.003), proto, abort_above_ms=1.0)
    assert e.value.median_ms >= 3.0 and time.perf_counter() - t0 < 1.0


def test_unstable_window_is_remeasured():
    state = {"i": 0}

    def fn():
        state["i"] += 1
        # noisy first window, quiet afterwards; 2 slow calls in every 5, so settling blocks agree (noise, no trend);
        # every call takes >= 0.5 ms so that the blocks' medians are steady on a loaded host
        time.sleep(0.004 if state["i"] < 80 and state["i"] % 5 in (0, 1) else 0.0005)

    proto = Protocol(warmup_iters=0, warmup_seconds=0, min_repeats=20, min_seconds=0, max_seconds=5,
                     cv_threshold=0.5, max_remeasure=2)
    s = measure(fn, proto)
    assert s.windows >= 2


def test_samples_come_from_the_pluggable_timer():
    """A device timer (CUDA events on a GPU) decides each sample; the host clock only sizes the window."""
    durations = iter([0.010, 0.010, 0.030, 0.030, 0.010] * 100)  # every block of 5 has the same median
    calls = []

    def device_time(fn):
        fn()
        return next(durations)

    proto = Protocol(warmup_iters=2, warmup_seconds=0, min_repeats=10, min_seconds=0, max_seconds=5, max_remeasure=0)
    s = measure(lambda: calls.append(1), proto, time_one=device_time)
    # the fixed warm-up calls are not timed; the two settling blocks are, by the same timer, but are no samples
    assert s.n == 10 and len(calls) == 2 + 2 * 5 + 10 and s.warmup_iters == 12 and s.settled
    assert s.min_ms == pytest.approx(10.0) and s.max_ms == pytest.approx(30.0) and s.p50_ms == pytest.approx(10.0)


def test_host_timer_includes_the_sync():
    one = host_timer(lambda: time.sleep(0.003))
    assert one(lambda: None) >= 0.003


class _SettlingEngine:
    """An engine whose first ``slow_calls`` calls take 10 ms and every later one 1 ms (CUDA graphs, autotuned
    kernels and GPU clocks settle after the warm-up), on a simulated clock: no sleeping, no timing of this host."""

    def __init__(self, slow_calls: int, slow_s: float = 0.010, fast_s: float = 0.001):
        self.calls, self.now, self.slow_calls, self.slow_s, self.fast_s = 0, 0.0, slow_calls, slow_s, fast_s

    def __call__(self):
        self.calls += 1
        self.now += self.slow_s if self.calls <= self.slow_calls else self.fast_s

    def clock(self) -> float:
        return self.now

    def time_one(self, fn) -> float:
        t0 = self.now
        fn()
        return self.now - t0


SETTLE_PROTO = Protocol(warmup_iters=2, warmup_seconds=0, min_repeats=20, min_seconds=0, max_seconds=5, max_remeasure=0)


def test_early_exit_waits_for_settled_samples():
    """Slow for 3 calls past the fixed warm-up, then 10x faster: the first samples after the warm-up have a 10 ms
    median, but the engine is judged (bound 5 ms) and timed only once two blocks agree."""
    eng = _SettlingEngine(slow_calls=SETTLE_PROTO.warmup_iters + 3)
    s = measure(eng, SETTLE_PROTO, abort_above_ms=5.0, clock=eng.clock, time_one=eng.time_one)
    assert s.settled and s.p50_ms == pytest.approx(1.0) and s.max_ms == pytest.approx(1.0)
    assert s.warmup_iters == SETTLE_PROTO.warmup_iters + 3 * 5  # a slow block, a fast one, the one that agrees
    assert eng.calls == s.warmup_iters + s.n


def test_settled_but_hopeless_engine_is_still_cut():
    eng = _SettlingEngine(slow_calls=10**9)  # steady at 10 ms
    with pytest.raises(EarlyExit) as e:
        measure(eng, SETTLE_PROTO, abort_above_ms=5.0, clock=eng.clock, time_one=eng.time_one)
    assert e.value.median_ms == pytest.approx(10.0)
    assert eng.calls == SETTLE_PROTO.warmup_iters + 2 * 5 + 5  # warm-up, two agreeing blocks, the probe


def test_settling_gives_up_after_max_seconds():
    """An engine that keeps getting faster is timed anyway after max_seconds of settling, flagged unsettled."""
    state = {"now": 0.0, "d": 0.1}

    def fn():
        state["now"] += state["d"]
        state["d"] *= 0.95  # each block of 5 is 23 % faster than the one before

    def time_one(f):
        t0 = state["now"]
        f()
        return state["now"] - t0

    proto = Protocol(warmup_iters=0, warmup_seconds=0, min_repeats=5, min_seconds=0, max_seconds=0.5, max_remeasure=0)
    s = measure(fn, proto, clock=lambda: state["now"], time_one=time_one)
    assert not s.settled and s.n >= 5
