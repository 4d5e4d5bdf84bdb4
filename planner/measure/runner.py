"""The parent side of the worker protocol: start a worker process for one job, pause and resume it, collect its
result, and turn a crash, hang or OOM into a failed result with its reason.

The child side (what runs inside the process) is `planner.measure.worker`; the jobs themselves are the typed
records of `planner.measure.jobs`.  A worker is either forked by the study's fork server
(`planner.measure.forkserver`: numpy, torch and the backends' libraries imported once per study) or spawned as
a fresh ``python -m planner.measure.worker``; `start_mode` says which (``PLANNER_WORKER_START``), and both are
handled alike here: one job per process, in its own process group, paused, killed and collected the same way.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from planner.errors import ConfigError, FailReason
from planner.measure.forkserver import ForkServer, ServerGone, preload_for
from planner.measure.gate import Gate
from planner.measure.jobs import WorkerJob, job_from_dict

START_MODES = ("fork", "spawn")


def start_mode(device: str = "cpu") -> str:
    """How workers start: ``PLANNER_WORKER_START`` (fork or spawn) when set, else ``fork`` on Linux for a CPU
    target and ``spawn`` otherwise (CUDA targets: the server never touches CUDA, so forked workers could
    initialise it, but that path has not been measured on a GPU host yet; set fork to use it)."""
    v = os.environ.get("PLANNER_WORKER_START", "").strip().lower()
    if v:
        if v not in START_MODES:
            raise ConfigError(f"PLANNER_WORKER_START={v!r}: valid values: {', '.join(START_MODES)}")
        if v == "fork" and not sys.platform.startswith("linux"):
            raise ConfigError(f"PLANNER_WORKER_START=fork: the fork server needs Linux (this is {sys.platform}); use spawn")
        return v
    return "fork" if sys.platform.startswith("linux") and device == "cpu" else "spawn"


def open_server(env: dict[str, str], backends: list[str] | tuple[str, ...], device: str = "cpu") -> ForkServer | None:
    """The fork server for a study's workers (close it when the study ends), or None: spawn mode, or it could
    not start (said once on stderr; every worker is then spawned)."""
    if start_mode(device) != "fork":
        return None
    try:
        return ForkServer(env, preload_for(backends))
    except Exception as e:  # e.g. out of processes: the study goes on with spawned workers
        print(f"note: the worker fork server could not start ({type(e).__name__}: {e}); each worker starts as a "
              "new process", file=sys.stderr)
        return None

def worker_env(target, cache_dir: Path) -> dict[str, str]:
    """Environment of a worker: pinned thread pools, compiler caches in the planner cache, no telemetry."""
    env = dict(os.environ)
    threads = str(target.thread_count())
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TVM_NUM_THREADS"):
        env[var] = threads
    env["TORCHINDUCTOR_CACHE_DIR"] = str(Path(cache_dir) / "inductor")
    env.setdefault("PLANNER_ZOO_CACHE", str(Path(cache_dir) / "zoo"))  # trained zoo weights (digits-cnn)
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    env.setdefault("DO_NOT_TRACK", "true")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env["PYTHONUNBUFFERED"] = "1"
    env["PLANNER_PARENT_PID"] = str(os.getpid())
    return env


class WorkerProcess:
    """One worker process: started now, collected later (lets the orchestrator overlap compiles)."""

    def __init__(self, job: WorkerJob | dict[str, Any], jobdir: Path, env: dict[str, str], gated: bool = False,
                 server: ForkServer | None = None):
        job = job if isinstance(job, WorkerJob) else job_from_dict(job)
        jobdir.mkdir(parents=True, exist_ok=True)
        self.dir = jobdir
        self.result_path, self.log_path = jobdir / "result.json", jobdir / "worker.log"
        self.gate = Gate(jobdir / ".gate").reset() if gated else None
        if self.result_path.exists():
            self.result_path.unlink()
        job = replace(job, result=str(self.result_path), gate=str(self.gate.dir) if self.gate else None)
        self.job = job
        (jobdir / "job.json").write_text(json.dumps(job.to_dict(), indent=2, default=str))
        self.t0 = time.perf_counter()
        self.paused_total, self._paused_at = 0.0, None
        self.proc: Any = _forked(server, jobdir / "job.json", self.log_path, env) if server is not None else None
        if self.proc is None:
            with open(self.log_path, "wb") as log:
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", "planner.measure.worker", str(jobdir / "job.json")],
                    stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                )

    # ---- gate (`planner.measure.gate`): the worker compiles, says "ready", and measures only when given a turn
    @property
    def ready(self) -> bool:
        return self.gate is not None and self.gate.ready

    # ---- pausing compiles while another candidate is measured
    def pause(self) -> None:
        if self._paused_at is None and self.proc.poll() is None:
            _signal_group(self.proc, signal.SIGSTOP)
            self._paused_at = time.perf_counter()

    def resume(self) -> None:
        if self._paused_at is not None:
            _signal_group(self.proc, signal.SIGCONT)
            self.paused_total += time.perf_counter() - self._paused_at
            self._paused_at = None

    def active_seconds(self) -> float:
        """Wall time this job has been running, not counting time it was paused."""
        paused = self.paused_total + (time.perf_counter() - self._paused_at if self._paused_at is not None else 0.0)
        return time.perf_counter() - self.t0 - paused

    def poll(self) -> int | None:
        return self.proc.poll()

    def kill(self) -> None:
        self.resume()
        _kill_group(self.proc)

    def collect(self, timed_out: float | None = None) -> dict[str, Any]:
        """The result of a finished (or timed-out: pass the limit) job, as a dict; never raises for candidate faults."""
        if timed_out is not None:
            self.kill()
            return _failure(FailReason.TIMEOUT, f"worker exceeded the {timed_out:.0f} s trial timeout", self.log_path, self.t0)
        rc = self.proc.wait()
        if self.result_path.is_file():
            try:
                res = json.loads(self.result_path.read_text())
                res["wall_seconds"] = time.perf_counter() - self.t0
                return res
            except json.JSONDecodeError:
                pass
        if getattr(self.proc, "lost", False):
            return _failure(FailReason.CRASH, "the worker fork server died, and the worker with it", self.log_path, self.t0)
        if rc < 0:
            sig = signal.Signals(-rc).name if -rc in signal.Signals._value2member_map_ else str(-rc)
            if -rc == signal.SIGKILL:
                return _failure(FailReason.OOM, "worker was killed (SIGKILL): most likely out of memory", self.log_path, self.t0)
            return _failure(FailReason.CRASH, f"worker died from signal {sig}", self.log_path, self.t0)
        return _failure(FailReason.CRASH, f"worker exited with code {rc} without a result", self.log_path, self.t0)


class Runner:
    """The measurement runner of one device: starts each job's worker (forked by the study's server, or spawned),
    gives one compiled job at a time its measurement turn while every other worker is paused, enforces the
    per-job timeout (paused time not counted), and hands back results as data, never raising for a candidate's
    fault.  The study loop, the re-measurement and `planner confirm` measure through it; nothing else touches a
    worker's gate.

    ``submit(job, jobdir, tag)`` starts a job; ``poll()`` advances the turns and returns ``[(tag, result)]`` of
    the jobs that finished (a result dict as `WorkerProcess.collect` gives); ``rounds(...)`` runs interleaved
    re-measurement rounds; ``close()`` kills whatever is left (no worker outlives its runner)."""

    def __init__(self, env: dict[str, str], timeout: float, server: ForkServer | None = None, gated: bool = True):
        self.env, self.timeout, self.server, self.gated = env, timeout, server, gated
        self.flights: list[tuple[Any, WorkerProcess]] = []
        self._turn: WorkerProcess | None = None

    def __len__(self) -> int:
        return len(self.flights)

    def submit(self, job: WorkerJob, jobdir: Path, tag: Any = None, env: dict[str, str] | None = None) -> WorkerProcess:
        w = WorkerProcess(job, jobdir, env if env is not None else self.env, gated=self.gated, server=self.server)
        self.flights.append((tag, w))
        return w

    def give_turn(self, w: WorkerProcess, round_: int | None = None) -> None:
        """Measure ``w`` now: every other worker of this runner is paused, ``w`` resumed and signalled."""
        for _, other in self.flights:
            if other is not w:
                other.pause()
        w.resume()
        if w.gate is not None:
            w.gate.go(round_)
        self._turn = w

    def _schedule(self) -> None:
        """The oldest compiled job gets the turn when none has it; every other worker stays paused."""
        if self._turn is None or all(w is not self._turn for _, w in self.flights):
            self._turn = None
            nxt = next((w for _, w in self.flights if w.ready), None)
            if nxt is None:
                return
            self.give_turn(nxt)
        for _, other in self.flights:
            if other is not self._turn:
                other.pause()

    def poll(self) -> list[tuple[Any, dict[str, Any]]]:
        """Advance the turns; the results of the jobs that finished or ran out of time, in submission order."""
        if self.gated:
            self._schedule()
        out = []
        for tag, w in list(self.flights):
            timed_out = w.poll() is None and w.active_seconds() > self.timeout
            if w.poll() is None and not timed_out:
                continue
            self.flights.remove((tag, w))
            out.append((tag, w.collect(timed_out=self.timeout if timed_out else None)))
            if w is self._turn:
                self._turn = None
                for _, other in self.flights:
                    other.resume()
        return out

    def kill(self, w: WorkerProcess) -> None:
        self.flights = [(t, x) for t, x in self.flights if x is not w]
        w.kill()

    def close(self) -> list[Any]:
        """Kill every job still running (Ctrl-C or a fault of the caller); returns their tags."""
        tags = []
        for tag, w in self.flights:
            if w.poll() is None:
                w.kill()
            tags.append(tag)
        self.flights, self._turn = [], None
        return tags


def run_job(job: WorkerJob | dict[str, Any], jobdir: Path, timeout: float, env: dict[str, str],
            server: ForkServer | None = None) -> dict[str, Any]:
    """Run one job in a fresh process (forked by ``server`` when given) and wait for it; always return a result dict."""
    j = WorkerProcess(job, jobdir, env, server=server)
    try:
        j.proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return j.collect(timed_out=timeout)
    except KeyboardInterrupt:
        j.kill()
        raise
    return j.collect()


def _forked(server: ForkServer, job_path: Path, log_path: Path, env: dict[str, str]):
    """A worker forked by ``server``, or None (then it is spawned) when the server cannot take it: it died, or
    the job's environment differs where libraries read it at import (said once per server)."""
    differ = server.differences(env)
    if differ:
        server.note_fallback(f"cannot take a job whose environment differs from the server's ({', '.join(differ[:5])})")
        return None
    try:
        return server.spawn(job_path, log_path, env)
    except ServerGone as e:
        server.note_fallback(str(e))
        return None


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    proc.wait()


def _failure(reason: FailReason, message: str, log_path: Path, t0: float) -> dict[str, Any]:
    tail = ""
    if log_path.is_file():
        tail = log_path.read_text(errors="replace")[-2000:]
    return {"status": "failed", "reason": reason.value, "message": message, "log_tail": tail, "wall_seconds": time.perf_counter() - t0}


