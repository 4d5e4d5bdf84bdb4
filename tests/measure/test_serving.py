"""The load generator, the dynamic batcher and the served-latency accounting, against a fake engine whose
service time is known (it sleeps) and whose calls are recorded.  Timing tolerances are a few ms: the
engine sleeps for tens of ms, so a wrong accounting (latency from send instead of from arrival, a batch
formed too early or too late, waits not added up) is off by far more than that.  On a loaded host a thread is
sometimes descheduled for longer: the tolerances add the largest oversleep the fake engine itself saw in the same
test (`FakeEngine.noise_ms`), a measure of that run's scheduling delays, never a fixed allowance for them."""

from __future__ import annotations

import math
import threading
import time

import pytest

from planner.measure.serving import (ServedStats, arrival_times, serve_closed, serve_open, sustained_rate)


TOL_MS = 6.0


class FakeEngine:
    """``call(k)`` sleeps ``base_s + per_req_s * k`` and records (start, end, k)."""

    def __init__(self, base_s: float, per_req_s: float = 0.0):
        self.base, self.per = base_s, per_req_s
        self.calls: list[tuple[float, float, int]] = []
        self.lock = threading.Lock()

    def __call__(self, k: int) -> None:
        t = time.perf_counter()
        time.sleep(self.base + self.per * k)
        with self.lock:
            self.calls.append((t, time.perf_counter(), k))

    def noise_ms(self) -> float:
        """The largest oversleep of its calls (ms): how late this host woke a sleeping thread during the test."""
        return max(((e - s) - (self.base + self.per * k)) * 1e3 for s, e, k in self.calls) if self.calls else 0.0


def tol(*engines: FakeEngine) -> float:
    return TOL_MS + 2 * max(e.noise_ms() for e in engines)



def test_arrivals_seeded_and_at_the_rate():
    a = arrival_times("poisson", 200.0, 20.0, seed=3)
    assert a == arrival_times("poisson", 200.0, 20.0, seed=3)
    assert a != arrival_times("poisson", 200.0, 20.0, seed=4)
    assert all(0 <= x < 20.0 for x in a) and a == sorted(a)
    assert abs(len(a) / 20.0 - 200.0) < 200.0 * 0.05  # 4000 arrivals: within 5 % of the rate
    gaps = [b - c for b, c in zip(a[1:], a[:-1])]
    mean = sum(gaps) / len(gaps)
    cv = math.sqrt(sum((g - mean) ** 2 for g in gaps) / len(gaps)) / mean
    assert abs(cv - 1.0) < 0.1  # exponential gaps
    assert arrival_times("uniform", 10.0, 1.0) == [i / 10 for i in range(10)]
    with pytest.raises(ValueError, match="unknown arrival kind"):
        arrival_times("bursty", 10.0, 1.0)


def test_burst_waits_add_up_exactly():
    """Three requests at the same instant, one instance, no batching, 30 ms each: 30, 60, 90 ms."""
    eng = FakeEngine(0.030)
    keep: list = []
    s = serve_open([eng], [0.0, 0.0, 0.0], keep=keep, rate=None)
    lat = sorted((r.done - r.scheduled) * 1e3 for r in keep)
    for got, want in zip(lat, (30, 60, 90)):
        assert abs(got - want) < tol(eng), lat
    assert s.completed == 3 and s.dropped == 0 and s.batches == {"1": 3}


def test_latency_counts_from_the_scheduled_arrival():
    """Evenly spaced arrivals faster than the engine (every 10 ms, 25 ms each): each request waits for those
    before it, so latency grows by 15 ms a request -- the queue an open loop must show."""
    eng = FakeEngine(0.025)
    keep: list = []
    serve_open([eng], arrival_times("uniform", 100.0, 0.08), keep=keep, drain_s=1.0)
    lat = [(r.done - r.scheduled) * 1e3 for r in keep]
    for i, got in enumerate(lat):
        assert abs(got - (25 + 15 * i)) < tol(eng) + 0.5 * i, lat  # sleep overshoot adds up along the queue


def test_waits_follow_lindley_on_poisson_arrivals():
    """One FIFO instance: request n starts when it has arrived and n-1 is done (Lindley's recursion), with the
    service times the fake engine actually took."""
    eng = FakeEngine(0.008)
    keep: list = []
    serve_open([eng], arrival_times("poisson", 60.0, 3.0, seed=1), keep=keep, drain_s=2.0)
    assert len(eng.calls) == len(keep)
    done_prev, errs = -math.inf, []
    for r, (start, end, k) in zip(keep, eng.calls):
        assert k == 1
        predicted_done = max(r.scheduled, done_prev) + (end - start)
        errs.append(abs(r.done - predicted_done) * 1e3)
        done_prev = r.done
    errs.sort()
    assert errs[len(errs) // 2] < 1.0 and errs[-1] < tol(eng), (errs[-5:], eng.noise_ms())


def test_md1_mean_wait_matches_pollaczek_khinchine():
    """M/D/1 at load 0.5: the mean wait in queue is rho*S / (2 (1 - rho)); with the service times the fake
    engine took (a sleep overshoots a little), the M/G/1 form lambda E[S^2] / (2 (1 - lambda E[S]))."""
    rate, service = 100.0, 0.005
    eng = FakeEngine(service)
    keep: list = []
    s = serve_open([eng], arrival_times("poisson", rate, 16.0, seed=7), keep=keep, warmup_s=1.0, rate=rate)
    # the server's effective service time: from when it could start a request (arrived, the previous one done) to
    # its end -- the engine's time plus the dispatch (thread wake-up), which a loaded host lengthens
    times, prev_end = [], -math.inf
    for r, (start, end, _) in zip(keep, eng.calls):
        times.append(end - max(r.enqueued, prev_end))
        prev_end = end
    es, es2 = sum(times) / len(times), sum(t * t for t in times) / len(times)
    rho = rate * es
    assert 0.4 < rho < 0.65, rho
    theory_wait_ms = rate * es2 / (2 * (1 - rho)) * 1e3
    measured = [r for r in keep if r.scheduled - keep[0].scheduled >= 1.0]
    wait_ms = sum((r.done - r.scheduled) * 1e3 for r in measured) / len(measured) - es * 1e3
    assert abs(wait_ms - theory_wait_ms) < 0.25 * theory_wait_ms + 0.3, (wait_ms, theory_wait_ms)
    assert s.dropped == 0 and s.meets(None)
    assert abs(s.achieved_rate - rate) < 0.1 * rate


def test_batcher_forms_batches_as_declared():
    """Ten requests at once, max batch 4, queue delay 50 ms: batches of 4, 4 and 2, the last formed when the
    delay of its oldest request ran out."""
    eng = FakeEngine(0.020)
    keep: list = []
    s = serve_open([eng], [0.0] * 10, max_batch=4, max_queue_delay_s=0.050, keep=keep)
    assert [k for _, _, k in eng.calls] == [4, 4, 2]
    assert s.batches == {"4": 2, "2": 1} and s.mean_batch == pytest.approx(3.6)
    lat = sorted({round((r.done - r.scheduled) * 1e3) for r in keep})
    t = tol(eng)
    assert abs(lat[0] - 20) < t and abs(lat[1] - 40) < t
    assert abs(lat[-1] - 70) < t  # waited to 50 ms for more, then ran 20 ms
    third_start = eng.calls[2][0]
    assert third_start - keep[8].enqueued >= 0.050 - 0.001  # the delay of its oldest request was waited out


def test_batcher_waits_up_to_the_delay_for_a_second_request():
    """Two requests 10 ms apart, max batch 4, delay 30 ms: one batch of 2, run when the first's delay ends."""
    eng = FakeEngine(0.010)
    keep: list = []
    serve_open([eng], [0.0, 0.010], max_batch=4, max_queue_delay_s=0.030, keep=keep)
    assert [k for _, _, k in eng.calls] == [2]
    first, second = ((r.done - r.scheduled) * 1e3 for r in keep)
    assert abs(first - 40) < tol(eng) and abs(second - 30) < tol(eng)


def test_no_batching_without_a_max_batch():
    eng = FakeEngine(0.010)
    serve_open([eng], [0.0] * 4, max_batch=1, max_queue_delay_s=0.050)
    assert [k for _, _, k in eng.calls] == [1, 1, 1, 1]


def test_instances_run_in_parallel():
    """Four requests at once on two instances of 30 ms: two finish at 30 ms, two at 60 ms."""
    a, b = FakeEngine(0.030), FakeEngine(0.030)
    keep: list = []
    serve_open([a, b], [0.0] * 4, keep=keep)
    lat = sorted((r.done - r.scheduled) * 1e3 for r in keep)
    assert len(a.calls) == len(b.calls) == 2
    for got, want in zip(lat, (30, 30, 60, 60)):
        assert abs(got - want) < tol(a, b), lat


def test_overload_is_not_a_latency():
    """Asked twice what the engine can serve: the achieved rate falls short and the point is not sustained."""
    eng = FakeEngine(0.020)  # 50 req/s at most
    s = serve_open([eng], arrival_times("uniform", 100.0, 1.0), rate=100.0, drain_s=0.3)
    assert s.achieved_rate < 60 and not s.meets(None)
    assert s.dropped > 0 and s.p99_ms >= 300  # unanswered at the drain deadline: counted at what they had waited


def test_warmup_is_left_out():
    eng = FakeEngine(0.002)
    s = serve_open([eng], arrival_times("uniform", 50.0, 1.0), warmup_s=0.5, rate=50.0)
    assert s.warmup_requests == 25 and s.requests == 25


def test_closed_loop_clients_wait_for_their_answers():
    """Two clients, one instance of 20 ms, no batching: each request waits for the other's, ~40 ms, 50 req/s."""
    eng = FakeEngine(0.020)
    s = serve_closed([eng], 2, 1.0, warmup_s=0.2)
    assert abs(s.p50_ms - 40) < tol(eng) and abs(s.achieved_rate - 50) < 8
    eng2 = FakeEngine(0.020)
    s2 = serve_closed([eng2], 2, 1.0, warmup_s=0.2, max_batch=2, max_queue_delay_s=0.005)
    assert s2.mean_batch > 1.5 and s2.p50_ms < 30  # batched together: one call serves both clients


def _point(rate: float, ok: bool) -> ServedStats:
    return ServedStats("poisson", rate, None, 100, 0, 100, 0, 0, rate if ok else rate * 0.5, 1, 1,
                       1 if ok else 1e3, 1, 1, 1, 1)


def test_sustained_rate_search():
    asked = []

    def at(rate):
        asked.append(rate)
        return _point(rate, rate <= 130)

    rate, points = sustained_rate(at, 50.0, slo_ms=10.0, steps=4)
    assert asked == [50.0, 100.0, 200.0, 150.0, 125.0] and rate == 125.0 and len(points) == 5
    asked.clear()
    rate, _ = sustained_rate(at, 400.0, slo_ms=10.0, steps=3)
    assert asked == [400.0, 200.0, 100.0, 150.0] and rate == 100.0
    rate, _ = sustained_rate(lambda r: _point(r, False), 10.0, slo_ms=10.0, steps=2)
    assert rate == 0.0


def test_measure_served_reads_the_traffic_and_the_serving_config():
    """The worker's entry: a closed-loop traffic gives a point without a rate search; an open-loop one the point at
    its rate and the sustained rate from the measured search (a 30 ms engine, 33 req/s at most, sustains 25 req/s
    but neither 50 nor 37.5)."""
    from planner.config import ServingConfig
    from planner.measure.serving import measure_served
    from planner.target import Traffic

    eng = FakeEngine(0.020)
    closed = measure_served([eng], Traffic(arrival="closed", concurrency=2, duration_s=0.6, warmup_s=0.2), ServingConfig())
    assert closed["at_rate"]["arrival"] == "closed" and "sustained_rate" not in closed
    assert abs(closed["at_rate"]["p50_ms"] - 40) < tol(eng)
    t = Traffic(rate=25, duration_s=1.5, warmup_s=0.2, drain_s=0.5, slo_ms=100, rate_search_steps=2, seed=3)
    out = measure_served([FakeEngine(0.030)], t, ServingConfig())
    assert [p["rate"] for p in out["rate_points"]] == [25, 50, 37.5]
    assert out["sustained_rate"] == 25 and out["rate_points"][0]["meets"] and not out["rate_points"][1]["meets"]


def test_a_late_harness_shows_as_latency_not_as_a_lighter_load(monkeypatch):
    """The harness is held up 60 ms before taking the third request (a busy host): that request's latency still
    counts from its scheduled arrival, and it is counted as late (coordinated omission would hide both)."""
    import planner.measure.serving as serving

    real, n = serving._sleep_until, []

    def stalled(t, clock):
        real(t, clock)
        n.append(1)
        if len(n) == 3:
            time.sleep(0.060)

    monkeypatch.setattr(serving, "_sleep_until", stalled)
    eng = FakeEngine(0.005)
    keep: list = []
    s = serve_open([eng], [0.0, 0.1, 0.2, 0.3], keep=keep, rate=None)
    third = (keep[2].done - keep[2].scheduled) * 1e3
    assert third >= 60 + 5 - 1 and s.late >= 1
    assert s.max_ms >= 60


# ------------------------------------------------------------------ requests at their own lengths (lengths: data)


class ShapedEngine(FakeEngine):
    """``call(k, length)``: sleeps like `FakeEngine` and records the length of each batch."""

    def __init__(self, base_s: float, per_req_s: float = 0.0):
        super().__init__(base_s, per_req_s)
        self.lengths: list[int] = []

    def __call__(self, k: int, length: int) -> None:  # type: ignore[override]
        super().__call__(k)
        with self.lock:
            self.lengths.append(length)


def test_a_batch_holds_one_length_as_tritons_batcher():
    """Six requests at once of lengths 16, 32, 16, 32, 16, 64, max batch 4, delay 20 ms: batches by length in the
    order of their oldest request (16 x3, then 32 x2, then 64), never a mix; each request's latency counts from its
    own arrival, queueing behind the other lengths included."""
    eng = ShapedEngine(0.010)
    keep: list = []
    s = serve_open([eng], [0.0] * 6, max_batch=4, max_queue_delay_s=0.020, keep=keep,
                   classes=[16, 32, 16, 32, 16, 64])
    assert [(k, n) for (_, _, k), n in zip(eng.calls, eng.lengths)] == [(3, 16), (2, 32), (1, 64)]
    assert s.lengths == {"16": 3, "32": 2, "64": 1}
    lat = {r.idx: (r.done - r.scheduled) * 1e3 for r in keep}
    t = tol(eng)
    assert abs(lat[0] - 30) < t  # waited out the 20 ms delay for a fourth 16, then 10 ms
    assert abs(lat[1] - 40) < t and abs(lat[5] - 50) < t  # behind the 16s (its delay already run out)


def test_one_length_batches_as_before():
    """Requests of one length batch exactly as unshaped ones (the contiguous path)."""
    a, b = ShapedEngine(0.010), FakeEngine(0.010)
    serve_open([a], [0.0] * 10, max_batch=4, max_queue_delay_s=0.030, classes=[8] * 10)
    serve_open([b], [0.0] * 10, max_batch=4, max_queue_delay_s=0.030)
    assert [k for _, _, k in a.calls] == [k for _, _, k in b.calls] == [4, 4, 2]


def test_closed_loop_batches_by_length():
    eng = ShapedEngine(0.005)
    s = serve_closed([eng], 4, 0.5, max_batch=4, max_queue_delay_s=0.010, classes=[16, 32])
    assert set(eng.lengths) == {16, 32} and s.completed > 0
    assert set(s.lengths) == {"16", "32"}
    with pytest.raises(ValueError, match="classes for"):
        serve_open([eng], [0.0, 0.1], classes=[16])


def test_sample_and_request_lengths():
    """A sample's length is one past its last non-zero token; a request's is its longest sample's, rounded up to
    the multiple, at least 2, at most the full length."""
    import numpy as np

    from planner.measure.serving import request_lengths, sample_lengths

    ids = np.zeros((4, 12), dtype=np.int64)
    for i, n in enumerate((3, 12, 1, 7)):
        ids[i, :n] = 5
    mask = (ids != 0).astype(np.int64)
    x = np.ones((4, 3), dtype=np.float32)  # an input without a length axis
    assert sample_lengths({"ids": ids, "mask": mask, "x": x}, {"ids": 0, "mask": 0}).tolist() == [3, 12, 1, 7]
    got = request_lengths({"ids": ids, "mask": mask}, {"ids": 0, "mask": 0}, 1, 4, seed=0)
    assert sorted(got) == [4, 4, 8, 12]  # 1 -> 4, 3 -> 4, 7 -> 8, 12 -> 12 (the full length)
    assert sorted(request_lengths({"ids": ids}, {"ids": 0}, 1, 1)) == [2, 3, 7, 12]  # at least 2
    assert got == request_lengths({"ids": ids, "mask": mask}, {"ids": 0, "mask": 0}, 1, 4, seed=0)
    pairs = request_lengths({"ids": ids}, {"ids": 0}, 2, 1, seed=1)
    assert len(pairs) == 2 and 12 in pairs  # the request holding the 12-token sample


def test_engine_calls_cut_each_batch_to_its_length():
    """`engine_calls` with lengths feeds each (k, length) batch cut to the length, from samples no longer than it;
    inputs without a length axis keep their shape."""
    import numpy as np

    from planner.measure.serving import engine_calls

    ids = np.zeros((4, 12), dtype=np.int64)
    for i, n in enumerate((3, 12, 1, 7)):
        ids[i, :n] = i + 1
    x = np.arange(4, dtype=np.float32)[:, None].repeat(3, 1)
    seen: list = []

    class RT:
        def serving_instances(self, n):
            return [lambda feed: seen.append(feed)] * n

    calls = engine_calls(RT(), 1, {"ids": ids, "x": x}, 1, 2, lengths=[4, 8, 12], length_axes={"ids": 0})
    calls[0](2, 4)
    assert seen[-1]["ids"].shape == (2, 4) and seen[-1]["x"].shape == (2, 3)
    assert set(seen[-1]["ids"][:, 0].tolist()) <= {1, 3}  # samples of length <= 4 only
    calls[0](1, 12)
    assert seen[-1]["ids"].shape == (1, 12)
