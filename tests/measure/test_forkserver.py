"""The workers' fork server (planner.measure.forkserver) with real processes: a forked job gives what a spawned
one gives, its faults read the same, pausing, resuming and killing reach it, and a study leaves no server or
worker behind, however it ends.  (Crashes, OOM kills and timeouts of forked workers: tests/measure/test_worker.py
runs each of its cases under both start modes.)"""

import json
import os
import signal
import time

import pytest
from support import DATA

from planner.config import TrialConfig
from planner.errors import ConfigError
from planner.measure.forkserver import ForkServer, preload_for
from planner.measure.runner import WorkerProcess, open_server, run_job, start_mode, worker_env
from planner.model import parse_model


def _state(pid: int) -> str | None:
    """The process state letter (R, S, T, Z …), None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0]
    except OSError:
        return None


def _gone(pid: int, within: float = 10.0) -> bool:
    deadline = time.time() + within
    while time.time() < deadline:
        if _state(pid) in (None, "Z"):
            return True
        time.sleep(0.05)
    return False


def _children(pid: int) -> set[int]:
    out = set()
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    if int(f.read().rpartition(")")[2].split()[1]) == pid:
                        out.add(int(d))
            except (OSError, ValueError, IndexError):
                pass
    return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A fork server with the fast target's worker env, and the tiny model's fp32 reference (computed spawned)."""
    from planner.target import load_target

    target = load_target(DATA / "fast-cpu.yaml")
    root = tmp_path_factory.mktemp("fs")
    env = worker_env(target, root / "cache")
    server = ForkServer(env, preload_for(["torch", "onnxruntime"]))
    yield target, root, env, server
    server.close()
    assert _gone(server.pid)


def _prepare(target, root, env, ref, name, server=None):
    job = {"kind": "prepare", "spec": parse_model(ref).to_dict(), "target": target.model_dump(mode="json"),
           "cache_dir": str(root / "cache"), "reference": str(root / f"{name}.npz"), "eval_samples": 6}
    res = run_job(job, root / f"prep-{name}", 300, env, server=server)
    assert res["status"] == "ok", res
    return res


def _trial(target, root, ref, name, backend="torch", batch=1):
    return {"kind": "trial", "spec": parse_model(ref).to_dict(), "target": target.model_dump(mode="json"),
            "config": TrialConfig(backend, batch).to_dict(), "cache_dir": str(root / "cache"),
            "workdir": str(root / name), "reference": str(root / "tiny.npz")}


def test_a_forked_job_gives_what_a_spawned_one_gives(setup):
    from planner.record.metrics import time_split

    target, root, env, server = setup
    ref = f"{DATA / 'models.py'}:tiny"
    forked_prep = _prepare(target, root, env, ref, "tiny", server)
    spawned_prep = _prepare(target, root, env, ref, "tiny-spawned")
    for k in ("model_hash", "inputs", "output_shape", "param_count", "format"):
        assert forked_prep[k] == spawned_prep[k], k
    got = {}
    for mode, srv in (("fork", server), ("spawn", None)):
        res = run_job(_trial(target, root, ref, f"w-{mode}", "onnxruntime", 2), root / f"w-{mode}", 300, env, server=srv)
        assert res["status"] == "ok", res
        assert res["worker_start"] == mode
        split = time_split(res)
        assert abs(sum(split.values()) - res["wall_seconds"]) < 0.01 * res["wall_seconds"]
        got[mode] = res
    # the forked worker found the heavy libraries imported (the point of the server); the spawned one did not
    assert got["fork"]["preimported"] == ["numpy", "torch"] and "torch" not in got["spawn"]["preimported"]
    assert got["fork"]["quality"] == got["spawn"]["quality"]
    assert got["fork"]["artifacts"] == got["spawn"]["artifacts"]


def test_a_cached_export_needs_no_model_build(setup):
    """Given the model hash (the study's prepare computed it), a trial whose ONNX export is cached does not build
    the fp32 module; without it, the worker builds the module to hash it."""
    target, root, env, server = setup
    ref = f"{DATA / 'models.py'}:tiny"
    prep = _prepare(target, root, env, ref, "tiny", server)
    job = _trial(target, root, ref, "w-ort", "onnxruntime", 2)
    first = run_job(job, root / "w-ort", 300, env, server=server)  # exports, or finds the export of an earlier test
    hashed = run_job({**job, "workdir": str(root / "w-ort-hash"), "model_hash": prep["model_hash"]}, root / "w-ort-hash",
                     300, env, server=server)
    unhashed = run_job({**job, "workdir": str(root / "w-ort-nohash")}, root / "w-ort-nohash", 300, env, server=server)
    assert first["status"] == hashed["status"] == unhashed["status"] == "ok"
    assert hashed["transform_info"]["onnx_export_cached"] == unhashed["transform_info"]["onnx_export_cached"] == 1
    assert hashed["time_split"]["model"] == 0 and unhashed["time_split"]["model"] > 0
    assert hashed["quality"] == first["quality"]


def test_abort_is_a_crash_with_its_signal(setup):
    target, root, env, server = setup
    ref = f"{DATA / 'models.py'}:abort_above_batch1"
    _prepare(target, root, env, f"{DATA / 'models.py'}:tiny", "tiny", server)  # its reference serves: same shapes
    res = run_job(_trial(target, root, ref, "w-abort", batch=4), root / "w-abort", 300, env, server=server)
    assert res["status"] == "failed" and res["reason"] == "crash" and "SIGABRT" in res["message"], res


def test_pause_resume_and_timeout_kill_reach_a_forked_worker(setup):
    target, root, env, server = setup
    _prepare(target, root, env, f"{DATA / 'models.py'}:tiny", "tiny", server)
    job = _trial(target, root, f"{DATA / 'models.py'}:hang_on_batch4", "w-hang", batch=4)
    w = WorkerProcess(job, root / "w-hang", env, server=server)
    pid = w.proc.pid
    assert os.getpgid(pid) == pid and os.getsid(pid) == pid  # its own session and group, as a spawned worker
    assert pid in _children(server.pid)
    time.sleep(1.0)
    w.pause()
    deadline = time.time() + 5
    while _state(pid) != "T" and time.time() < deadline:
        time.sleep(0.02)
    assert _state(pid) == "T"
    w.resume()
    deadline = time.time() + 5
    while _state(pid) == "T" and time.time() < deadline:
        time.sleep(0.02)
    assert _state(pid) in ("R", "S", "D")
    assert w.poll() is None
    res = w.collect(timed_out=1.0)
    assert res["status"] == "failed" and res["reason"] == "timeout"
    assert _gone(pid) and w.poll() == -signal.SIGKILL


def test_start_mode_switch(monkeypatch, tmp_path, fast_target):
    env = worker_env(fast_target, tmp_path)
    monkeypatch.setenv("PLANNER_WORKER_START", "spawn")
    assert start_mode("cpu") == "spawn" and open_server(env, ["torch"]) is None
    monkeypatch.setenv("PLANNER_WORKER_START", "forkserver")
    with pytest.raises(ConfigError, match="PLANNER_WORKER_START='forkserver': valid values: fork, spawn"):
        start_mode("cpu")
    monkeypatch.delenv("PLANNER_WORKER_START")
    assert start_mode("cpu") == "fork" and start_mode("cuda") == "spawn"  # (this suite runs on Linux)


def test_preloading_leaves_the_server_single_threaded(tmp_path, fast_target):
    """Every installed CPU backend's preloaded modules: importing them started no thread (a fork copies only the
    calling thread).  A library update that starts one fails here: set its backend's ``preload = False``."""
    from planner.backends import registry

    backends = [n for n in registry.names_for_device("cpu") if registry.get(n).availability().usable]
    with ForkServer(worker_env(fast_target, tmp_path), preload_for(backends)) as server:
        info = server.wait_ready()
        assert info["failed"] == {} and "torch" in info["preloaded"]
        assert info["threads"] == 1, info  # fast-cpu pins one thread: no OpenBLAS pool either
    assert "onnxruntime" not in info["preloaded"] and "openvino" not in info["preloaded"]


def test_a_job_with_another_environment_is_spawned(setup, capfd):
    target, root, env, server = setup
    _prepare(target, root, env, f"{DATA / 'models.py'}:tiny", "tiny", server)
    other = {**env, "OMP_NUM_THREADS": "2"}  # read when the OpenMP runtime loads: the server's is fixed
    res = run_job(_trial(target, root, f"{DATA / 'models.py'}:tiny", "w-env"), root / "w-env", 300, other, server=server)
    assert res["status"] == "ok" and res["worker_start"] == "spawn"
    assert "fork server cannot take a job whose environment differs from the server's (OMP_NUM_THREADS)" in capfd.readouterr().err
    tuned = {**env, "PLANNER_TUNING_SECONDS_LEFT": "3"}  # read when a job runs: still forked
    res = run_job(_trial(target, root, f"{DATA / 'models.py'}:tiny", "w-env"), root / "w-env", 300, tuned, server=server)
    assert res["worker_start"] == "fork"


def test_a_dead_server_falls_back_to_spawning(tmp_path, fast_target, capfd):
    env = worker_env(fast_target, tmp_path / "cache")
    server = ForkServer(env, ["numpy"])
    server.wait_ready()
    os.kill(server.pid, signal.SIGKILL)
    server.proc.wait()
    job = {"kind": "prepare", "spec": parse_model(f"{DATA / 'models.py'}:tiny").to_dict(),
           "target": fast_target.model_dump(mode="json"), "cache_dir": str(tmp_path / "cache"),
           "reference": str(tmp_path / "ref.npz"), "eval_samples": 6}
    res = run_job(job, tmp_path / "prep", 300, env, server=server)
    assert res["status"] == "ok" and res["worker_start"] == "spawn"
    assert "worker fork server" in capfd.readouterr().err
    server.close()


class _Watcher:
    """A reporter that notes the study's fork server and its workers as trials start, and can interrupt it."""

    def __init__(self, interrupt_at: int | None = None, mode: str = "fork"):
        self.opt, self.interrupt_at, self.servers, self.workers, self.started = None, interrupt_at, set(), set(), 0
        self.mode = mode

    def start(self, study_name, total, info): pass
    def trial_done(self, outcome): pass
    def confirming(self, message): pass
    def confirmed(self, summary, rows): pass
    def end(self, result): pass

    def trial_started(self, number, cfg):
        self.started += 1
        server = self.opt._server
        if self.mode == "spawn":
            assert server is None
        else:
            assert server is not None  # PLANNER_WORKER_START is fork by default on a Linux CPU target
            self.servers.add(server.pid)
            self.workers |= _children(server.pid)
        if self.started == self.interrupt_at:
            raise KeyboardInterrupt


@pytest.mark.parametrize("mode,interrupt", [("fork", False), ("fork", True), ("spawn", False)])
def test_no_server_or_worker_outlives_a_study(tmp_path, fast_target, monkeypatch, mode, interrupt):
    """A study forks every worker from one server and closes it at the end, finished or interrupted (Ctrl-C
    while a worker is in flight); with PLANNER_WORKER_START=spawn it starts no server and spawns them all."""
    from planner.paths import Home
    from planner.search.study import Optimizer, StudyOptions
    from planner.space import load_space

    space = tmp_path / "space.yaml"
    space.write_text("name: fs\nbatch_size: [1, 2]\nbackends:\n  torch: {}\n  onnxruntime: {}\n")
    if mode == "spawn":
        monkeypatch.setenv("PLANNER_WORKER_START", "spawn")
    watcher = _Watcher(interrupt_at=3 if interrupt else None, mode=mode)
    opts = StudyOptions(trials=4, sampler="grid", eval_samples=6, study_name="fs", compile_workers=2, confirm_top_k=1)
    opt = Optimizer(parse_model("tiny-mlp"), fast_target, load_space(space), Home(tmp_path / "home"), opts, watcher)
    watcher.opt = opt
    if interrupt:
        with pytest.raises(KeyboardInterrupt):
            opt.run()
    else:
        result = opt.run()
        assert any(o.status == "ok" for o in result.outcomes)
        starts = {json.loads(p.read_text()).get("worker_start") for p in (opt.study_dir / "trials").glob("*/result.json")}
        assert starts == {mode}
    if mode == "fork":
        assert len(watcher.servers) == 1 and watcher.workers  # one server for the whole study; it forked the workers
    assert opt._server is None
    for pid in watcher.servers | watcher.workers:
        assert _gone(pid), f"{pid} outlived the study"


def test_a_bad_worker_start_is_one_line_and_exit_2(tmp_path):
    from support import run_cli

    home = tmp_path / "home"
    r = run_cli("optimize", "--model", "tiny-mlp", "--target", DATA / "fast-cpu.yaml", "--trials", "1", "--home", home,
                env={"PLANNER_WORKER_START": "threads"})
    assert r.returncode == 2, r.stderr + r.stdout
    assert "PLANNER_WORKER_START='threads': valid values: fork, spawn" in r.stderr
    assert not (home / "optuna.db").exists()  # rejected before anything is written
