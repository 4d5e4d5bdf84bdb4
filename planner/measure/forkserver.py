"""A fork server for workers: the heavy imports once per study, still one job per process.

A fresh ``python -m planner.measure.worker`` pays the interpreter's start and the imports of numpy and torch
(about 2.5 s on a 2-core host) before it reads its job.  The fork server is one long-lived process, started
with the study's worker environment, that imports those libraries once (`preload`) and then forks one child per
job.  Each child is what a spawned worker is: its own session and process group (so the parent's SIGSTOP,
SIGCONT and SIGKILL of the group reach it and its own subprocesses), SIGKILLed when the server dies (as the
server is when the planner dies), default signal handlers, its own log file as stdout and stderr, the job's
environment, and it runs exactly the spawned worker's code (`planner.measure.worker.run_file`) before it exits
without running the server's clean-up.  The server reaps every child and reports its exit status, so a child
SIGKILLed by the kernel's OOM killer still reads as an OOM and a segfault as a crash.

Only imports run in the server: no torch op, no thread pool, no CUDA, no engine object (a fork copies the
calling thread alone, so a library that starts a thread on import is left out: a backend says so with
``preload = False``; see `preload_for`).

The protocol is JSON lines.  Parent to server (stdin): ``{"job": PATH, "log": PATH, "env": {...}}``.  Server to
parent (the stdout it was started with; its own prints go to its log): ``{"ready": ...}`` once the imports are
done, then ``{"pid": N}`` (or ``{"error": TEXT}``) answering each request in order, and ``{"exit": N, "rc":
R}`` whenever a child ends (``R`` as `subprocess.Popen.returncode`: negative for a signal).  EOF on stdin tells
the server to kill its remaining children and exit.

Parent side: `ForkServer` (start, `spawn` a job, `close`) and `ForkedProcess` (``pid``, ``poll``, ``wait``,
``kill``, ``returncode``: what `planner.measure.runner.WorkerProcess` uses of a `subprocess.Popen`).
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from planner.measure.gate import die_with_parent

# the environment variables a job may set differently from the server's: read when a job runs, never at import
PER_JOB_ENV = frozenset({"PLANNER_TUNING_SECONDS_LEFT"})
# imported by every server: the libraries and planner modules each job needs
BASE_PRELOAD = ("numpy", "torch", "planner.measure.jobs", "planner.measure.worker", "planner.source",
                "planner.measure.quality", "planner.measure.timer", "planner.backends.base")
# the ONNX export (torch.export to ONNX) of backends that take ONNX: torch._dynamo, onnx, onnxscript
EXPORT_PRELOAD = ("torch._dynamo", "torch.onnx", "onnx", "onnxscript")
READY_TIMEOUT_S = 300.0  # the server's imports (torch, TVM) on a loaded host; then the parent spawns instead


# ====================================================================== server side

def _threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 1


def _preload(modules: list[str]) -> tuple[list[str], dict[str, str]]:
    """Import ``modules`` (the ones that fail to import are skipped, with why)."""
    import importlib

    loaded, failed = [], {}
    for m in modules:
        try:
            importlib.import_module(m)
            loaded.append(m)
        except BaseException as e:  # a broken optional library: its jobs import it themselves, and fail there
            failed[m] = f"{type(e).__name__}: {e}"[:300]
    return loaded, failed


def serve(preload: list[str]) -> int:
    """The server's main loop (``python -m planner.measure.forkserver MODULE...``)."""
    proto_in, proto_out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)  # anything a library prints goes to the server's log, never into the protocol
    parent = int(os.environ.get("PLANNER_PARENT_PID", "0") or 0)
    die_with_parent(parent)  # (exits at once when the planner died before prctl took effect)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the planner's to handle (it closes the server)

    def send(msg: dict[str, Any]) -> None:
        data = (json.dumps(msg) + "\n").encode()
        while data:
            data = data[os.write(proto_out, data):]

    t0 = time.perf_counter()
    loaded, failed = _preload(preload)
    send({"ready": True, "preloaded": loaded, "failed": failed, "threads": _threads(),
          "seconds": time.perf_counter() - t0, "pid": os.getpid()})

    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so SIGCHLD writes to the wake-up pipe
    children: set[int] = set()

    def reap() -> None:
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            children.discard(pid)
            send({"exit": pid, "rc": os.waitstatus_to_exitcode(status)})

    buf = b""
    closing = False
    while not closing:
        try:
            ready, _, _ = select.select([proto_in, wake_r], [], [], 1.0)
        except InterruptedError:
            ready = []
        if wake_r in ready:
            try:
                while os.read(wake_r, 4096):
                    pass
            except BlockingIOError:
                pass
        reap()
        if proto_in in ready:
            chunk = os.read(proto_in, 1 << 16)
            if not chunk:
                closing = True
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                try:
                    req = json.loads(line)
                    pid = _fork_job(req, (proto_in, proto_out, wake_r, wake_w))
                except Exception as e:  # a request it cannot serve: the parent spawns that job instead
                    send({"error": f"{type(e).__name__}: {e}"})
                    continue
                children.add(pid)
                send({"pid": pid})
    for pid in list(children):  # the study is over: no child outlives it
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    deadline = time.monotonic() + 10
    while children and time.monotonic() < deadline:
        reap()
        time.sleep(0.01)
    return 0


def _fork_job(req: dict[str, Any], server_fds: tuple[int, ...]) -> int:
    """Fork one worker for ``req``; return its pid once it has its own session (so signals to its group work)."""
    job, log, env = str(req["job"]), str(req["log"]), dict(req["env"])
    sys.stdout.flush()
    sys.stderr.flush()
    ready_r, ready_w = os.pipe()
    server = os.getpid()
    pid = os.fork()
    if pid == 0:  # the child: runs the job, never returns
        try:
            os.close(ready_r)
            os.setsid()
            die_with_parent(server)
            signal.set_wakeup_fd(-1)
            for fd in server_fds:
                os.close(fd)
            for sig in (signal.SIGCHLD, signal.SIGTERM):
                signal.signal(sig, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(out, 1)
            os.dup2(out, 2)
            os.close(out)
            os.environ.clear()
            os.environ.update(env)
            os.write(ready_w, b"1")
            os.close(ready_w)
        except BaseException:
            traceback.print_exc()
            os._exit(1)
        from planner.measure import worker

        worker.STARTED = "fork"
        code = 1
        try:
            code = worker.run_file(job)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except BaseException:
            traceback.print_exc()
        finally:  # what a normal exit runs (atexit: e.g. Inductor's compile pool), not the interpreter's slow teardown
            try:
                import atexit

                atexit._run_exitfuncs()
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)
    os.close(ready_w)
    try:
        os.read(ready_r, 1)  # b"" when the child died first; its exit status is reported all the same
    finally:
        os.close(ready_r)
    return pid


# ====================================================================== parent side

class ServerGone(RuntimeError):
    """The fork server cannot take the job (not started, dead, or it refused): spawn the worker instead."""


class ForkedProcess:
    """A worker forked by the server, with the parts of `subprocess.Popen` the runner uses."""

    def __init__(self, server: "ForkServer", pid: int):
        self.server, self.pid = server, pid
        self.returncode: int | None = None
        self.lost = False  # the server died: the child was SIGKILLed with it, its real exit status is unknown

    def poll(self) -> int | None:
        if self.returncode is None:
            rc = self.server._exit_status(self.pid)
            if rc is not None:
                self.returncode = rc
            elif self.server.dead and not _alive(self.pid):
                self.returncode, self.lost = -signal.SIGKILL, True
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired(f"forked worker {self.pid}", timeout)
            self.server._wait_event(0.2 if left is None else min(0.2, left))
        return self.returncode  # type: ignore[return-value]

    def kill(self) -> None:
        if self.poll() is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


class ForkServer:
    """The parent's handle on one fork server (one per study): `spawn` jobs, `close` at the end."""

    def __init__(self, env: dict[str, str], preload: list[str] | tuple[str, ...]):
        self.env = dict(env)
        self.dead = False
        self.broken: str | None = None  # why it takes no more jobs (it died, or stopped answering)
        self._noted = False
        self.info: dict[str, Any] = {}
        self._exits: dict[int, int] = {}
        self._replies: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._lock = threading.Lock()  # one request at a time
        self._logdir = tempfile.mkdtemp(prefix="planner-forkserver-")
        self.log_path = Path(self._logdir) / "server.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "planner.measure.forkserver", *preload],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=self.env, start_new_session=True,
            )
        self._reader = threading.Thread(target=self._read, name="planner-forkserver", daemon=True)
        self._reader.start()

    # ---- the reader thread: answers, exit statuses, EOF
    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                msg = json.loads(line)
            except json.JSONDecodeError:
                continue
            with self._cond:
                if "exit" in msg:
                    self._exits[int(msg["exit"])] = int(msg["rc"])
                elif "ready" in msg:
                    self.info = msg
                else:
                    self._replies.append(msg)
                self._cond.notify_all()
        with self._cond:
            self.dead = True
            self._cond.notify_all()

    def _exit_status(self, pid: int) -> int | None:
        with self._cond:
            return self._exits.get(pid)

    def _wait_event(self, seconds: float) -> None:
        with self._cond:
            self._cond.wait(seconds)

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> dict[str, Any]:
        """The server's ``ready`` message (what it imported, its thread count); `ServerGone` if it never came."""
        with self._cond:
            if not self._cond.wait_for(lambda: self.info or self.dead, timeout):
                raise ServerGone(f"not ready after {timeout:.0f} s")
            if not self.info:
                raise ServerGone(f"exited while importing ({self.log_tail()})")
            return self.info

    def differences(self, env: dict[str, str]) -> list[str]:
        """The variables where a job's environment differs from the server's, but for `PER_JOB_ENV`: a job can
        be forked only when there are none (thread counts and the like are read when a library loads, which
        happened in the server)."""
        keys = (set(env) | set(self.env)) - PER_JOB_ENV
        return sorted(k for k in keys if env.get(k) != self.env.get(k))

    def spawn(self, job_path: Path, log_path: Path, env: dict[str, str]) -> ForkedProcess:
        """Fork a worker for the job file; `ServerGone` when the server cannot (it then takes no more jobs)."""
        if self.broken:
            raise ServerGone(self.broken)
        try:
            return self._spawn(job_path, log_path, env)
        except ServerGone as e:
            if not str(e).startswith("refused"):
                self.broken = str(e)
            raise

    def _spawn(self, job_path: Path, log_path: Path, env: dict[str, str]) -> ForkedProcess:
        self.wait_ready()
        with self._lock:
            with self._cond:
                if self.dead:
                    raise ServerGone(f"exited ({self.log_tail()})")
            assert self.proc.stdin is not None
            try:
                self.proc.stdin.write((json.dumps({"job": str(job_path), "log": str(log_path), "env": env}) + "\n").encode())
                self.proc.stdin.flush()
            except (BrokenPipeError, OSError, ValueError) as e:
                raise ServerGone(f"cannot be reached ({e})") from None
            with self._cond:
                if not self._cond.wait_for(lambda: self._replies or self.dead, 60):
                    raise ServerGone("did not answer a request within 60 s")
                if not self._replies:
                    raise ServerGone(f"exited ({self.log_tail()})")
                reply = self._replies.pop(0)
        if "pid" not in reply:
            raise ServerGone(f"refused a job: {reply.get('error', reply)}")
        return ForkedProcess(self, int(reply["pid"]))

    def note_fallback(self, why: str) -> None:
        """Say once, on stderr, that a worker is spawned instead of forked, and why."""
        if not self._noted:
            self._noted = True
            print(f"note: the worker fork server {why}; such workers start as new processes", file=sys.stderr)

    def log_tail(self) -> str:
        try:
            return " | ".join(self.log_path.read_text(errors="replace").strip().splitlines()[-3:]) or "no output"
        except OSError:
            return "no log"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def close(self, timeout: float = 15.0) -> None:
        """Stop the server; it SIGKILLs every child still running (their process groups) first."""
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=5)
        import shutil

        shutil.rmtree(self._logdir, ignore_errors=True)

    def __enter__(self) -> "ForkServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def preload_for(backends: list[str] | tuple[str, ...]) -> list[str]:
    """What a server for a study over ``backends`` imports: `BASE_PRELOAD`, the ONNX export's modules when a
    backend takes ONNX, and each backend's planner module and `modules` unless it declares ``preload = False``
    (importing them starts a thread).  Modules not installed here are left out."""
    import importlib.util

    from planner.backends import registry

    out = list(BASE_PRELOAD)
    for name in backends:
        cls = registry.get(name)
        if cls.input_format == "onnx":
            out += [m for m in EXPORT_PRELOAD if m not in out]
        out.append(cls.__module__)
        if getattr(cls, "preload", True):
            out += [m for m in cls.modules if m not in out]

    def installed(m: str) -> bool:  # by its top-level package: finding ``torch.onnx`` would import torch here,
        try:                          # in the planner process (2 s); a submodule that fails is the server's note
            return importlib.util.find_spec(m.partition(".")[0]) is not None
        except (ImportError, ValueError):
            return False

    return [m for m in dict.fromkeys(out) if installed(m)]


if __name__ == "__main__":
    sys.exit(serve(sys.argv[1:]))
