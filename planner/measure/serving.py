"""Served latency: scheduled arrivals and a dynamic batcher in front of N engine instances, in this process.

What a deployment's users see is not the time of one request on an idle engine but the time from when a request
*arrives* to when its answer is back, queueing included.  This module measures that:

- arrivals (`arrival_times`): open-loop Poisson at a rate (seeded), or evenly spaced (for tests), read off the clock
  by idle instances (`_ScheduledServer`: no generator thread); or closed loop (`serve_closed`: C clients, each
  sends its next request when the previous one is answered, through `Server`'s queue);
- a dynamic batcher (`Server`) in the manner of Triton's: an idle instance takes the oldest waiting request and
  waits up to ``max_queue_delay_s`` (from that request's arrival in the queue) for more, up to ``max_batch``
  requests, then runs them as one batch;
- N instances, one thread each, each owning its engine call (its own infer request, session or module);
- a request's latency is its completion minus its *scheduled* arrival, so a harness that falls behind
  (the GIL, a busy host) shows up as latency, never as a lighter load (no coordinated omission);
- warm-up requests (scheduled before ``warmup_s``) are left out of the figures; requests not answered by the
  drain deadline are *dropped* and enter the percentiles at the latency they had reached then (a lower bound);
- `sustained_rate`: the highest arrival rate whose served percentile is within the SLO with the rate achieved
  (a short search of measured points, none estimated).

The instances are given as ``call(k)`` functions that run a batch of ``k`` requests; `engine_calls` makes them
from a built runtime (`planner.backends.base.Runtime.serving_instances`).  Pure Python threads: the engines
release the GIL while they compute, the batcher needs little of it.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

LATE_MS = 1.0  # a request taken (open loop) or sent (closed loop) more than this late counts as late
MEETS_ACHIEVED = 0.95  # a rate is sustained when at least this share of it is achieved


def arrival_times(kind: str, rate: float, seconds: float, seed: int = 0) -> list[float]:
    """Scheduled arrival offsets (s) in ``[0, seconds)``: ``poisson`` (exponential gaps, seeded) or ``uniform``
    (every ``1/rate`` s)."""
    if rate <= 0 or seconds <= 0:
        raise ValueError(f"rate and seconds must be positive (rate={rate}, seconds={seconds})")
    if kind == "uniform":
        return [i / rate for i in range(int(math.ceil(seconds * rate - 1e-9)))]
    if kind != "poisson":
        raise ValueError(f"unknown arrival kind {kind!r}; valid: poisson, uniform")
    import random

    rng = random.Random(seed)
    out, t = [], rng.expovariate(rate)
    while t < seconds:
        out.append(t)
        t += rng.expovariate(rate)
    return out


@dataclass
class ServedStats:
    """The figures of one load point (latencies in ms, rates in requests/s)."""

    arrival: str
    rate: float | None  # asked (open loop); None for closed loop
    concurrency: int | None  # closed loop clients
    requests: int  # measured (after warm-up)
    warmup_requests: int
    completed: int
    dropped: int
    late: int  # taken (open loop) or sent (closed loop) more than LATE_MS late: the harness fell behind
    achieved_rate: float  # answered requests per second from the first measured arrival to the last answer
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    mean_batch: float  # requests per engine call
    seconds: float  # measured window
    max_batch: int = 1
    instances: int = 1
    batches: dict[str, int] = field(default_factory=dict)  # batch size -> engine calls of that size
    # the measured requests per second of their scheduled span: the sample's own rate (a Poisson sample of a few
    # hundred requests is some percent off the asked rate), what the achieved rate is held to
    offered_rate: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def meets(self, slo_ms: float | None, percentile: str = "p99") -> bool:
        """Sustained: nothing dropped, the asked rate achieved (open loop) and the percentile within the SLO."""
        if self.dropped or self.completed == 0:
            return False
        if self.rate is not None and self.achieved_rate < MEETS_ACHIEVED * (self.offered_rate or self.rate):
            return False
        return slo_ms is None or getattr(self, f"{percentile}_ms") <= slo_ms


class _Req:
    __slots__ = ("idx", "scheduled", "enqueued", "done", "batch", "event", "late")

    def __init__(self, idx: int, scheduled: float, enqueued: float, event: threading.Event | None = None):
        self.idx, self.scheduled, self.enqueued = idx, scheduled, enqueued
        self.done: float | None = None
        self.batch = 0
        self.event = event
        self.late = False  # taken late by the harness (open loop), or enqueued late by a client (closed loop)


class Server:
    """A dynamic batcher in front of instance threads.  ``calls[i](k)`` runs a batch of ``k`` requests on
    instance ``i``; `submit` queues a request; `close` stops the instances after what is queued (or drops it)."""

    def __init__(self, calls: Sequence[Callable[[int], Any]], max_batch: int = 1, max_queue_delay_s: float = 0.0,
                 clock: Callable[[], float] = time.perf_counter):
        if not calls:
            raise ValueError("a server needs at least one instance")
        if max_batch < 1 or max_queue_delay_s < 0:
            raise ValueError(f"max_batch must be >= 1 and max_queue_delay_s >= 0 (got {max_batch}, {max_queue_delay_s})")
        self.max_batch, self.delay, self.clock = int(max_batch), float(max_queue_delay_s), clock
        self.queue: deque[_Req] = deque()
        self.cond = threading.Condition()
        self.closed = False
        self.batch_sizes: list[int] = []
        self.errors: list[BaseException] = []
        self.threads = [threading.Thread(target=self._instance, args=(c,), daemon=True, name=f"instance-{i}")
                        for i, c in enumerate(calls)]
        for t in self.threads:
            t.start()

    def submit(self, req: _Req) -> None:
        with self.cond:
            self.queue.append(req)
            self.cond.notify()

    def _take(self) -> list[_Req] | None:
        with self.cond:
            while True:
                while not self.queue and not self.closed:
                    self.cond.wait()
                if not self.queue:
                    return None  # closed and empty
                deadline = self.queue[0].enqueued + self.delay
                while len(self.queue) < self.max_batch and not self.closed:
                    left = deadline - self.clock()
                    if left <= 0:
                        break
                    self.cond.wait(left)
                if not self.queue:  # another instance took them while this one waited
                    continue
                n = min(self.max_batch, len(self.queue))
                return [self.queue.popleft() for _ in range(n)]

    def _instance(self, call: Callable[[int], Any]) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            try:
                call(len(batch))
            except BaseException as e:  # noqa: BLE001 -- the measurement reports it; the requests stay unanswered
                self.errors.append(e)
                with self.cond:
                    self.closed = True
                    self.queue.clear()
                    self.cond.notify_all()
                for r in batch:
                    if r.event is not None:
                        r.event.set()
                return
            t = self.clock()
            self.batch_sizes.append(len(batch))
            for r in batch:
                r.done, r.batch = t, len(batch)
                if r.event is not None:
                    r.event.set()

    def close(self, drop: bool = False, join_s: float = 30.0) -> int:
        """Stop taking requests; with ``drop``, what still waits in the queue is dropped (returns how many)."""
        with self.cond:
            self.closed = True
            dropped = len(self.queue) if drop else 0
            if drop:
                for r in self.queue:
                    if r.event is not None:
                        r.event.set()
                self.queue.clear()
            self.cond.notify_all()
        for t in self.threads:
            t.join(join_s)
        return dropped


def _sleep_until(t: float, clock: Callable[[], float]) -> None:
    while True:
        left = t - clock()
        if left <= 0:
            return
        time.sleep(left if left > 0.002 else left / 2)


def _stats(reqs: list[_Req], t0: float, warmup_s: float, end: float, server, *, arrival: str,
           rate: float | None, concurrency: int | None, instances: int) -> ServedStats:
    import numpy as np

    measured = [r for r in reqs if r.scheduled - t0 >= warmup_s]
    if not measured:
        raise ValueError("no request arrived after the warm-up: lengthen the duration or raise the rate")
    done = [r for r in measured if r.done is not None and r.done <= end]
    dropped = len(measured) - len(done)
    # a dropped request enters the percentiles with the latency it had reached at the drain deadline (a lower bound)
    lat = np.array([((r.done if r.done is not None and r.done <= end else end) - r.scheduled) * 1e3 for r in measured])
    first = min(r.scheduled for r in measured)
    last = max((r.done for r in done), default=first)
    window = max(last - first, 1e-9)
    span = max(r.scheduled for r in measured) - first
    sizes = [r.batch for r in done]
    hist: dict[str, int] = {}
    for b in server.batch_sizes:
        hist[str(b)] = hist.get(str(b), 0) + 1
    p50, p90, p99 = (float(x) for x in np.percentile(lat, [50, 90, 99]))
    return ServedStats(
        arrival=arrival, rate=rate, concurrency=concurrency, requests=len(measured),
        warmup_requests=len(reqs) - len(measured), completed=len(done), dropped=dropped,
        late=sum(1 for r in measured if r.late or (r.enqueued - r.scheduled) * 1e3 > LATE_MS),
        achieved_rate=len(done) / window if len(done) > 1 else 0.0,
        p50_ms=p50, p90_ms=p90, p99_ms=p99, mean_ms=float(lat.mean()), max_ms=float(lat.max()),
        mean_batch=float(np.mean(sizes)) if sizes else 0.0, seconds=window, max_batch=server.max_batch,
        instances=instances, batches=hist, offered_rate=(len(measured) - 1) / span if span > 0 and rate is not None else None,
    )


class _ScheduledServer:
    """The open loop's server: its arrivals are known in advance (an open loop sends whatever the server does), so
    an idle instance reads them off the clock instead of a generator thread putting each on a queue.  Batching as
    `Server`'s: an idle instance waits for the oldest unanswered request's arrival, then up to ``max_queue_delay_s``
    more (or until ``max_batch`` requests have arrived), and takes every arrived request up to ``max_batch``.  The
    Python work per request is a list write, so the harness keeps up with tens of thousands of requests a second
    (a generator thread handing over each request fell behind at a few thousand).  A batch taken more than
    `LATE_MS` after the moment its instance meant to take it counts its requests ``late``: the harness (the GIL, a
    busy host) woke late, and that shows as latency, never as a lighter load."""

    def __init__(self, calls, sched: list[float], max_batch: int, max_queue_delay_s: float, clock, end: float):
        if max_batch < 1 or max_queue_delay_s < 0:
            raise ValueError(f"max_batch must be >= 1 and max_queue_delay_s >= 0 (got {max_batch}, {max_queue_delay_s})")
        self.sched, self.max_batch, self.delay, self.clock, self.end = sched, int(max_batch), float(max_queue_delay_s), clock, end
        n = len(sched)
        self.done: list[float | None] = [None] * n
        self.batch = [0] * n
        self.late = [False] * n
        self.next = 0  # the oldest request no instance has taken
        self.lock = threading.Lock()
        self.batch_sizes: list[int] = []
        self.errors: list[BaseException] = []
        self.threads = [threading.Thread(target=self._instance, args=(c,), daemon=True, name=f"instance-{i}")
                        for i, c in enumerate(calls)]

    def run(self) -> None:
        for t in self.threads:
            t.start()
        for t in self.threads:
            t.join(max(0.0, self.end - self.clock()) + 30.0)

    def _close_time(self, i: int) -> float:
        """When the batch starting at request ``i`` is taken: ``max_batch`` arrived, or the delay from ``i``'s arrival."""
        sched, last = self.sched, i + self.max_batch - 1
        close = sched[i] + self.delay
        return min(close, sched[last]) if last < len(sched) else close

    def _instance(self, call) -> None:
        n, sched, clock = len(self.sched), self.sched, self.clock
        while True:
            with self.lock:
                i = self.next
            if i >= n or self.errors or clock() > self.end:
                return
            wake = max(self._close_time(i), clock())
            _sleep_until(wake, clock)
            with self.lock:
                i, now = self.next, clock()
                if i >= n or sched[i] > now:  # another instance took what this one waited for
                    continue
                j = i + 1
                while j < n and j - i < self.max_batch and sched[j] <= now:
                    j += 1
                self.next = j
            late = (now - wake) * 1e3 > LATE_MS
            try:
                call(j - i)
            except BaseException as e:  # noqa: BLE001 -- the measurement reports it; the requests stay unanswered
                self.errors.append(e)
                return
            t = clock()
            self.batch_sizes.append(j - i)
            for k in range(i, j):
                self.done[k], self.batch[k], self.late[k] = t, j - i, late


def serve_open(calls: Sequence[Callable[[int], Any]], arrivals: Sequence[float], *, max_batch: int = 1,
               max_queue_delay_s: float = 0.0, warmup_s: float = 0.0, drain_s: float = 2.0, rate: float | None = None,
               arrival: str = "poisson", clock: Callable[[], float] = time.perf_counter,
               keep: list | None = None) -> ServedStats:
    """Open loop: a request arrives at each scheduled offset of ``arrivals`` (s), whatever the server is doing
    (`_ScheduledServer`); answers are waited for up to ``drain_s`` after the last arrival; the figures of those
    scheduled from ``warmup_s`` on.  ``keep``: a list that receives the requests (tests read their times)."""
    if not calls:
        raise ValueError("a server needs at least one instance")
    t0 = clock() + 0.02
    sched = [t0 + a for a in arrivals]
    end = t0 + (arrivals[-1] if arrivals else 0.0) + drain_s
    server = _ScheduledServer(calls, sched, max_batch, max_queue_delay_s, clock, end)
    server.run()
    if server.errors:
        raise server.errors[0]
    reqs = []
    for i, s in enumerate(sched):
        r = _Req(i, s, s)
        r.done, r.batch, r.late = server.done[i], server.batch[i], server.late[i]
        reqs.append(r)
    if keep is not None:
        keep.extend(reqs)
    duration = arrivals[-1] if arrivals else 0.0
    return _stats(reqs, t0, warmup_s, end, server, arrival=arrival,
                  rate=rate if rate is not None else (len(arrivals) / duration if duration else None),
                  concurrency=None, instances=len(calls))


def serve_closed(calls: Sequence[Callable[[int], Any]], concurrency: int, seconds: float, *, max_batch: int = 1,
                 max_queue_delay_s: float = 0.0, warmup_s: float = 0.0, drain_s: float = 2.0,
                 clock: Callable[[], float] = time.perf_counter) -> ServedStats:
    """Closed loop: ``concurrency`` clients, each sending its next request when its last one is answered, for
    ``seconds`` (warm-up included).  Latency hides queueing that an open loop shows: use it for a known number of
    callers, not for a rate."""
    server = Server(calls, max_batch, max_queue_delay_s, clock)
    t0 = clock()
    stop = t0 + seconds
    reqs: list[_Req] = []
    lock = threading.Lock()

    def client() -> None:
        while clock() < stop and not server.errors:
            now = clock()
            r = _Req(0, now, now, threading.Event())
            with lock:
                r.idx = len(reqs)
                reqs.append(r)
            server.submit(r)
            if not r.event.wait(seconds + drain_s) or r.done is None:  # type: ignore[union-attr]
                return

    clients = [threading.Thread(target=client, daemon=True) for _ in range(concurrency)]
    for c in clients:
        c.start()
    for c in clients:
        c.join(seconds + drain_s + 1)
    server.close(drop=True)
    if server.errors:
        raise server.errors[0]
    return _stats(reqs, t0, warmup_s, stop + drain_s, server, arrival="closed", rate=None,
                  concurrency=concurrency, instances=len(calls))


def sustained_rate(measure_at: Callable[[float], ServedStats], start_rate: float, slo_ms: float | None,
                   percentile: str = "p99", steps: int = 4, first: ServedStats | None = None
                   ) -> tuple[float, list[ServedStats]]:
    """The highest measured rate that `ServedStats.meets` the SLO: from ``start_rate`` (``first``: its point,
    when measured already) doubling until a rate fails, then halving the interval, ``steps`` points in all
    beyond the first.  0.0 when no measured rate is sustained."""
    points: list[ServedStats] = []
    lo, hi = 0.0, math.inf
    rate = start_rate
    for i in range(steps + 1):
        s = first if (i == 0 and first is not None) else measure_at(rate)
        points.append(s)
        if s.meets(slo_ms, percentile):
            lo = rate
            rate = rate * 2 if math.isinf(hi) else (lo + hi) / 2
        else:
            hi = rate
            rate = rate / 2 if lo == 0 else (lo + hi) / 2
    return lo, points


# ------------------------------------------------------------------ a built engine under the target's traffic


def engine_calls(runtime, instances: int, inputs: dict, request_batch: int, max_batch: int,
                 engine_batch: int | None = None) -> list[Callable[[int], Any]]:
    """``call(k)`` per instance (`Runtime.serving_instances`): runs ``k`` requests of ``request_batch`` samples as
    one batch.  The feeds of every k are made beforehand (a server's copies into a batch are not timed), from
    the evaluation inputs; ``engine_batch``: an engine with a fixed batch axis gets its batch padded to it."""
    import numpy as np

    n = len(next(iter(inputs.values())))
    feeds = {}
    for k in range(1, max_batch + 1):
        rows = k * request_batch
        if engine_batch is not None:
            if rows > engine_batch:
                raise ValueError(f"a batch of {rows} samples exceeds the engine's fixed batch {engine_batch}")
            rows = engine_batch
        idx = np.arange(rows) % n
        feeds[k] = {name: np.ascontiguousarray(v[idx]) for name, v in inputs.items()}
    return [(lambda k, f=f: f(feeds[k])) for f in runtime.serving_instances(instances)]


def served(calls: Sequence[Callable[[int], Any]], traffic, serving, rate: float | None = None) -> ServedStats:
    """One load point of ``traffic`` (a `planner.target.Traffic`) on ``calls`` batched per ``serving``
    (a `planner.config.ServingConfig`); ``rate`` overrides the traffic's rate (the sustained-rate search)."""
    kw = dict(max_batch=serving.max_batch, max_queue_delay_s=serving.max_queue_delay_us / 1e6,
              warmup_s=traffic.warmup_s, drain_s=traffic.drain_s)
    if traffic.arrival == "closed":
        return serve_closed(calls, traffic.concurrency, traffic.warmup_s + traffic.duration_s, **kw)
    r = rate or traffic.rate
    arrivals = arrival_times(traffic.arrival, r, traffic.warmup_s + traffic.duration_s, traffic.seed)
    return serve_open(calls, arrivals, rate=r, arrival=traffic.arrival, **kw)


def measure_served(calls: Sequence[Callable[[int], Any]], traffic, serving) -> dict[str, Any]:
    """The served figures of a trial: the point at the traffic's rate (or concurrency) and, for open-loop traffic,
    the sustained rate within the SLO (`sustained_rate`, from the traffic's rate)."""
    at = served(calls, traffic, serving)
    out: dict[str, Any] = {"at_rate": at.to_dict()}
    if traffic.arrival != "closed" and traffic.rate_search_steps > 0:
        slo = traffic.slo_ms
        rate, points = sustained_rate(lambda r: served(calls, traffic, serving, r), traffic.rate, slo,
                                      traffic.percentile, traffic.rate_search_steps, first=at)
        out["sustained_rate"] = rate
        out["rate_points"] = [{"rate": p.rate, "offered_rate": p.offered_rate, "achieved_rate": p.achieved_rate,
                               f"{traffic.percentile}_ms":
                               getattr(p, f"{traffic.percentile}_ms"), "dropped": p.dropped,
                               "meets": p.meets(slo, traffic.percentile)} for p in points]
    return out
