"""Served latency: scheduled arrivals and a dynamic batcher in front of N engine instances, in this process.

What a deployment's users see is not the time of one request on an idle engine but the time from when a request
*arrives* to when its answer is back, queueing included.  This module measures that:

- arrivals (`arrival_times`): open-loop Poisson at a rate (seeded), or evenly spaced (for tests), read off the clock
  by idle instances (`_ScheduledServer`: no generator thread); or closed loop (`serve_closed`: C clients, each
  sends its next request when the previous one is answered, through `Server`'s queue);
- a dynamic batcher (`Server`) in the manner of Triton's: an idle instance takes the oldest waiting request and
  waits up to ``max_queue_delay_s`` (from that request's arrival in the queue) for more, up to ``max_batch``
  requests, then runs them as one batch;
- requests of several shapes (traffic ``lengths: data``: each at its own sample's length, `request_lengths`): a
  batch holds one length, as Triton's batcher batches only same-shape requests, and runs as ``call(k, length)``;
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
    # requests at their own lengths (traffic ``lengths: data``): padded length -> measured requests of it
    lengths: dict[str, int] = field(default_factory=dict)

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
    __slots__ = ("idx", "scheduled", "enqueued", "done", "batch", "event", "late", "cls")

    def __init__(self, idx: int, scheduled: float, enqueued: float, event: threading.Event | None = None,
                 cls: int | None = None):
        self.idx, self.scheduled, self.enqueued, self.cls = idx, scheduled, enqueued, cls
        self.done: float | None = None
        self.batch = 0
        self.event = event
        self.late = False  # taken late by the harness (open loop), or enqueued late by a client (closed loop)


class Server:
    """A dynamic batcher in front of instance threads.  ``calls[i](k)`` runs a batch of ``k`` requests on
    instance ``i``; `submit` queues a request; `close` stops the instances after what is queued (or drops it).
    With ``shaped``, requests carry a class (``_Req.cls``, their padded length): a batch holds the oldest request's
    class only and runs as ``calls[i](k, class)``."""

    def __init__(self, calls: Sequence[Callable[[int], Any]], max_batch: int = 1, max_queue_delay_s: float = 0.0,
                 clock: Callable[[], float] = time.perf_counter, shaped: bool = False):
        self.shaped = shaped
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
                head = self.queue[0]
                deadline = head.enqueued + self.delay
                while self._ready(head) < self.max_batch and not self.closed:
                    left = deadline - self.clock()
                    if left <= 0:
                        break
                    self.cond.wait(left)
                if not self.queue:  # another instance took them while this one waited
                    continue
                if not self.shaped:
                    n = min(self.max_batch, len(self.queue))
                    return [self.queue.popleft() for _ in range(n)]
                c = self.queue[0].cls
                got = [r for r in self.queue if r.cls == c][: self.max_batch]
                keep = set(map(id, got))
                self.queue = deque(r for r in self.queue if id(r) not in keep)
                return got

    def _ready(self, head: _Req) -> int:
        """Queued requests that can join ``head``'s batch (its class, when shaped)."""
        if not self.shaped:
            return len(self.queue)
        return sum(1 for r in self.queue if r.cls == head.cls)

    def _instance(self, call: Callable[[int], Any]) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            try:
                if self.shaped:
                    call(len(batch), batch[0].cls)
                else:
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
    lengths: dict[str, int] = {}
    for r in measured:
        if r.cls is not None:
            lengths[str(r.cls)] = lengths.get(str(r.cls), 0) + 1
    return ServedStats(
        arrival=arrival, rate=rate, concurrency=concurrency, requests=len(measured),
        warmup_requests=len(reqs) - len(measured), completed=len(done), dropped=dropped,
        late=sum(1 for r in measured if r.late or (r.enqueued - r.scheduled) * 1e3 > LATE_MS),
        achieved_rate=len(done) / window if len(done) > 1 else 0.0,
        p50_ms=p50, p90_ms=p90, p99_ms=p99, mean_ms=float(lat.mean()), max_ms=float(lat.max()),
        mean_batch=float(np.mean(sizes)) if sizes else 0.0, seconds=window, max_batch=server.max_batch,
        instances=instances, batches=hist, offered_rate=(len(measured) - 1) / span if span > 0 and rate is not None else None,
        lengths=dict(sorted(lengths.items(), key=lambda kv: int(kv[0]))),
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

    def __init__(self, calls, sched: list[float], max_batch: int, max_queue_delay_s: float, clock, end: float,
                 classes: Sequence[int] | None = None):
        if max_batch < 1 or max_queue_delay_s < 0:
            raise ValueError(f"max_batch must be >= 1 and max_queue_delay_s >= 0 (got {max_batch}, {max_queue_delay_s})")
        self.sched, self.max_batch, self.delay, self.clock, self.end = sched, int(max_batch), float(max_queue_delay_s), clock, end
        n = len(sched)
        self.classes = list(classes) if classes is not None else None
        if self.classes is not None and len(self.classes) != n:
            raise ValueError(f"{len(self.classes)} request classes for {n} arrivals")
        self.taken = [False] * n
        self.done: list[float | None] = [None] * n
        self.batch = [0] * n
        self.late = [False] * n
        self.next = 0  # the oldest request no instance has taken
        self.lock = threading.Lock()
        self.batch_sizes: list[int] = []
        self.errors: list[BaseException] = []
        loop = self._instance if self.classes is None else self._instance_shapes
        self.threads = [threading.Thread(target=loop, args=(c,), daemon=True, name=f"instance-{i}")
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
            if not self._run(call, range(i, j), (now - wake) * 1e3 > LATE_MS):
                return

    def _run(self, call, got, late: bool, *shape) -> bool:
        """Run requests ``got`` as one batch (``call(k, *shape)``) and record their answers; False when the engine
        raised (the measurement reports it; the requests stay unanswered)."""
        try:
            call(len(got), *shape)
        except BaseException as e:  # noqa: BLE001
            self.errors.append(e)
            return False
        t = self.clock()
        self.batch_sizes.append(len(got))
        for k in got:
            self.done[k], self.batch[k], self.late[k] = t, len(got), late
        return True

    # requests of several shapes (`classes`: the padded length of each): a batch holds one shape, as Triton's
    # dynamic batcher batches only requests whose inputs have the same shape
    def _same_class(self, i: int, upto: float) -> list[int]:
        """Untaken requests of ``i``'s class scheduled by ``upto``, from ``i`` on, at most ``max_batch``."""
        sched, cls, taken, c = self.sched, self.classes, self.taken, self.classes[i]  # type: ignore[index]
        out, j, n = [i], i + 1, len(sched)
        while j < n and len(out) < self.max_batch and sched[j] <= upto:
            if not taken[j] and cls[j] == c:  # type: ignore[index]
                out.append(j)
            j += 1
        return out

    def _close_time_shapes(self, i: int) -> float:
        """When the batch of ``i``'s class starting at ``i`` is taken: ``max_batch`` of them arrived, or the delay."""
        close = self.sched[i] + self.delay
        got = self._same_class(i, close)
        return self.sched[got[-1]] if len(got) == self.max_batch else close

    def _instance_shapes(self, call) -> None:
        n, sched, clock, taken = len(self.sched), self.sched, self.clock, self.taken
        while True:
            with self.lock:
                while self.next < n and taken[self.next]:
                    self.next += 1
                i = self.next
                if i >= n or self.errors or clock() > self.end:
                    return
                wake = max(self._close_time_shapes(i), clock())
            _sleep_until(wake, clock)
            with self.lock:
                now = clock()
                if taken[i] or sched[i] > now:  # another instance took what this one waited for
                    continue
                got = self._same_class(i, now)
                for k in got:
                    taken[k] = True
            if not self._run(call, got, (now - wake) * 1e3 > LATE_MS, self.classes[i]):  # type: ignore[index]
                return


def serve_open(calls: Sequence[Callable[[int], Any]], arrivals: Sequence[float], *, max_batch: int = 1,
               max_queue_delay_s: float = 0.0, warmup_s: float = 0.0, drain_s: float = 2.0, rate: float | None = None,
               arrival: str = "poisson", clock: Callable[[], float] = time.perf_counter,
               keep: list | None = None, classes: Sequence[int] | None = None) -> ServedStats:
    """Open loop: a request arrives at each scheduled offset of ``arrivals`` (s), whatever the server is doing
    (`_ScheduledServer`); answers are waited for up to ``drain_s`` after the last arrival; the figures of those
    scheduled from ``warmup_s`` on.  ``keep``: a list that receives the requests (tests read their times).
    ``classes``: each request's shape (its padded length): a batch then holds requests of one class and the
    instances are called ``call(k, class)``."""
    if not calls:
        raise ValueError("a server needs at least one instance")
    t0 = clock() + 0.02
    sched = [t0 + a for a in arrivals]
    end = t0 + (arrivals[-1] if arrivals else 0.0) + drain_s
    server = _ScheduledServer(calls, sched, max_batch, max_queue_delay_s, clock, end, classes)
    server.run()
    if server.errors:
        raise server.errors[0]
    reqs = []
    for i, s in enumerate(sched):
        r = _Req(i, s, s, cls=classes[i] if classes is not None else None)
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
                 clock: Callable[[], float] = time.perf_counter, classes: Sequence[int] | None = None) -> ServedStats:
    """Closed loop: ``concurrency`` clients, each sending its next request when its last one is answered, for
    ``seconds`` (warm-up included).  Latency hides queueing that an open loop shows: use it for a known number of
    callers, not for a rate.  ``classes``: request ``i``'s shape is ``classes[i % len(classes)]`` (`serve_open`)."""
    server = Server(calls, max_batch, max_queue_delay_s, clock, shaped=classes is not None)
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
            if classes is not None:
                r.cls = classes[r.idx % len(classes)]
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


def sample_lengths(inputs: dict, length_axes: dict[str, int]) -> "np.ndarray":
    """Each sample's own length: one past the last non-zero position on the length axis of any input in
    ``length_axes`` (name: `InputSpec.length_axis`, an axis of the sample's shape; ``inputs`` sample-major)."""
    import numpy as np

    n = len(next(iter(inputs.values())))
    out = np.zeros(n, dtype=np.int64)
    for name, axis in length_axes.items():
        v = np.asarray(inputs[name]) != 0
        v = np.moveaxis(v, axis + 1, 1).reshape(n, v.shape[axis + 1], -1).any(axis=2)  # (samples, length)
        last = np.where(v.any(axis=1), v.shape[1] - np.argmax(v[:, ::-1], axis=1), 0)
        out = np.maximum(out, last)
    return out


def request_lengths(inputs: dict, length_axes: dict[str, int], request_batch: int, multiple: int,
                    seed: int = 0) -> list[int]:
    """The shape of each request of one pass over the samples (in a seeded order, ``request_batch`` samples per
    request): its longest sample's length rounded up to ``multiple`` (a client padding to a multiple, as
    tokenizers' ``pad_to_multiple_of`` does), at least 2 and at most the inputs' full length."""
    import numpy as np

    full = min(int(np.asarray(inputs[k]).shape[a + 1]) for k, a in length_axes.items())
    real = sample_lengths(inputs, length_axes)
    order = np.random.default_rng(seed).permutation(len(real))
    out = []
    for i in range(max(1, len(order) // request_batch)):
        longest = int(real[order[i * request_batch:(i + 1) * request_batch]].max())
        out.append(int(min(full, max(2, -(-longest // multiple) * multiple))))
    return out


def engine_calls(runtime, instances: int, inputs: dict, request_batch: int, max_batch: int,
                 engine_batch: int | None = None, lengths: Sequence[int] | None = None,
                 length_axes: dict[str, int] | None = None) -> list[Callable[..., Any]]:
    """``call(k)`` per instance (`Runtime.serving_instances`): runs ``k`` requests of ``request_batch`` samples as
    one batch.  The feeds of every k are made beforehand (a server's copies into a batch are not timed), from
    the evaluation inputs; ``engine_batch``: an engine with a fixed batch axis gets its batch padded to it.
    With ``lengths`` (each request's padded length, `request_lengths`), ``call(k, length)``: the batch is cut to
    that length on the inputs' ``length_axes``, from samples no longer than it."""
    import numpy as np

    n = len(next(iter(inputs.values())))
    real = sample_lengths(inputs, length_axes) if lengths else None

    def rows_of(k: int) -> int:
        rows = k * request_batch
        if engine_batch is not None:
            if rows > engine_batch:
                raise ValueError(f"a batch of {rows} samples exceeds the engine's fixed batch {engine_batch}")
            rows = engine_batch
        return rows

    feeds: dict[Any, dict] = {}
    if lengths:
        for length in sorted(set(lengths)):
            pool = np.flatnonzero(real <= length)  # type: ignore[operator]
            for k in range(1, max_batch + 1):
                idx = pool[np.arange(rows_of(k)) % len(pool)]
                feeds[(k, length)] = {name: np.ascontiguousarray(
                    np.take(v[idx], np.arange(length), axis=length_axes[name] + 1)  # type: ignore[index]
                    if name in (length_axes or {}) else v[idx]) for name, v in inputs.items()}
        return [(lambda k, length, f=f: f(feeds[(k, length)])) for f in runtime.serving_instances(instances)]
    for k in range(1, max_batch + 1):
        idx = np.arange(rows_of(k)) % n
        feeds[k] = {name: np.ascontiguousarray(v[idx]) for name, v in inputs.items()}
    return [(lambda k, f=f: f(feeds[k])) for f in runtime.serving_instances(instances)]


def served(calls: Sequence[Callable[..., Any]], traffic, serving, rate: float | None = None,
           lengths: Sequence[int] | None = None) -> ServedStats:
    """One load point of ``traffic`` (a `planner.target.Traffic`) on ``calls`` batched per ``serving``
    (a `planner.config.ServingConfig`); ``rate`` overrides the traffic's rate (the sustained-rate search);
    ``lengths``: each request's padded length, cycled (`request_lengths`; the calls take ``(k, length)``)."""
    kw = dict(max_batch=serving.max_batch, max_queue_delay_s=serving.max_queue_delay_us / 1e6,
              warmup_s=traffic.warmup_s, drain_s=traffic.drain_s)
    if traffic.arrival == "closed":
        return serve_closed(calls, traffic.concurrency, traffic.warmup_s + traffic.duration_s,
                            classes=list(lengths) if lengths else None, **kw)
    r = rate or traffic.rate
    arrivals = arrival_times(traffic.arrival, r, traffic.warmup_s + traffic.duration_s, traffic.seed)
    classes = [lengths[i % len(lengths)] for i in range(len(arrivals))] if lengths else None
    return serve_open(calls, arrivals, rate=r, arrival=traffic.arrival, classes=classes, **kw)


def measure_served(calls: Sequence[Callable[..., Any]], traffic, serving,
                   lengths: Sequence[int] | None = None) -> dict[str, Any]:
    """The served figures of a trial: the point at the traffic's rate (or concurrency) and, for open-loop traffic,
    the sustained rate within the SLO (`sustained_rate`, from the traffic's rate)."""
    at = served(calls, traffic, serving, lengths=lengths)
    out: dict[str, Any] = {"at_rate": at.to_dict()}
    if traffic.arrival != "closed" and traffic.rate_search_steps > 0:
        slo = traffic.slo_ms
        rate, points = sustained_rate(lambda r: served(calls, traffic, serving, r, lengths), traffic.rate, slo,
                                      traffic.percentile, traffic.rate_search_steps, first=at)
        out["sustained_rate"] = rate
        out["rate_points"] = [{"rate": p.rate, "offered_rate": p.offered_rate, "achieved_rate": p.achieved_rate,
                               f"{traffic.percentile}_ms":
                               getattr(p, f"{traffic.percentile}_ms"), "dropped": p.dropped,
                               "meets": p.meets(slo, traffic.percentile)} for p in points]
    return out
