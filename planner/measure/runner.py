"""The parent side of the worker protocol: start a worker process for one job, pause and resume it, collect its
result, and turn a crash, hang or OOM into a failed result with its reason.

The child side (what runs inside the process) is `planner.measure.worker`; the jobs themselves are the typed
records of `planner.measure.jobs`.
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

from planner.errors import FailReason
from planner.measure.jobs import WorkerJob, job_from_dict

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

    def __init__(self, job: WorkerJob | dict[str, Any], jobdir: Path, env: dict[str, str], gated: bool = False):
        job = job if isinstance(job, WorkerJob) else job_from_dict(job)
        jobdir.mkdir(parents=True, exist_ok=True)
        self.dir = jobdir
        self.result_path, self.log_path = jobdir / "result.json", jobdir / "worker.log"
        self.gate = jobdir / ".gate" if gated else None
        if self.result_path.exists():
            self.result_path.unlink()
        if self.gate:  # a fresh gate: no "ready"/"go"/round files from an earlier job in this folder
            import shutil

            shutil.rmtree(self.gate, ignore_errors=True)
            self.gate.mkdir()
        job = replace(job, result=str(self.result_path), gate=str(self.gate) if self.gate else None)
        self.job = job
        (jobdir / "job.json").write_text(json.dumps(job.to_dict(), indent=2, default=str))
        self.t0 = time.perf_counter()
        self.paused_total, self._paused_at = 0.0, None
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "planner.measure.worker", str(jobdir / "job.json")],
                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            )

    # ---- gate: the worker compiles, says "ready", and measures only after "go"
    @property
    def ready(self) -> bool:
        return self.gate is not None and (self.gate / "ready").exists()

    def go(self) -> None:
        if self.gate is not None:
            (self.gate / "go").touch()

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
        if rc < 0:
            sig = signal.Signals(-rc).name if -rc in signal.Signals._value2member_map_ else str(-rc)
            if -rc == signal.SIGKILL:
                return _failure(FailReason.OOM, "worker was killed (SIGKILL): most likely out of memory", self.log_path, self.t0)
            return _failure(FailReason.CRASH, f"worker died from signal {sig}", self.log_path, self.t0)
        return _failure(FailReason.CRASH, f"worker exited with code {rc} without a result", self.log_path, self.t0)


def run_job(job: WorkerJob | dict[str, Any], jobdir: Path, timeout: float, env: dict[str, str]) -> dict[str, Any]:
    """Run one job in a fresh process and wait for it; always return a result dict."""
    j = WorkerProcess(job, jobdir, env)
    try:
        j.proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return j.collect(timed_out=timeout)
    except KeyboardInterrupt:
        j.kill()
        raise
    return j.collect()


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


