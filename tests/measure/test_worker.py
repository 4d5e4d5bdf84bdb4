"""The isolated worker turns crashes, hangs and kills into failed results (real subprocesses), whether it was
spawned as a fresh process or forked by the study's fork server (every test runs under both)."""

from pathlib import Path

import pytest
from support import DATA

from planner.config import TrialConfig
from planner.measure.runner import run_job, worker_env
from planner.model import parse_model


@pytest.fixture(scope="module", params=["spawn", "fork"])
def workers(request, tmp_path_factory):
    """(env, server): the worker environment and, for "fork", a fork server started with it (None: spawn)."""
    from planner.measure.forkserver import ForkServer, preload_for
    from planner.target import load_target

    env = worker_env(load_target(DATA / "fast-cpu.yaml"), tmp_path_factory.mktemp("cache"))
    if request.param == "spawn":
        yield env, None
        return
    server = ForkServer(env, preload_for(["torch", "onnxruntime"]))
    yield env, server
    server.close()


def _run(workers, job, jobdir, timeout=300):
    env, server = workers
    res = run_job(job, jobdir, timeout, env, server=server)
    assert res.get("worker_start", "spawn" if server is None else "fork") == ("spawn" if server is None else "fork"), res
    return res


def _job(fast_target, tmp_path, ref, batch=1, backend="torch"):
    spec = parse_model(ref)
    return {
        "kind": "trial", "spec": spec.to_dict(), "target": fast_target.model_dump(mode="json"),
        "config": TrialConfig(backend, batch).to_dict(), "cache_dir": str(tmp_path / "cache"),
        "workdir": str(tmp_path / "w"), "reference": str(tmp_path / "ref.npz"),
    }


def _prepare(fast_target, tmp_path, ref, workers=None):
    job = {"kind": "prepare", "spec": parse_model(ref).to_dict(), "target": fast_target.model_dump(mode="json"),
           "cache_dir": str(tmp_path / "cache"), "reference": str(tmp_path / "ref.npz"), "eval_samples": 6}
    if workers is not None:
        return _run(workers, job, tmp_path / "prep")
    return run_job(job, tmp_path / "prep", 300, worker_env(fast_target, tmp_path / "cache"))


def test_prepare_and_trial_ok(fast_target, tmp_path, workers):
    ref = f"{DATA / 'models.py'}:tiny"
    prep = _prepare(fast_target, tmp_path, ref, workers)
    assert prep["status"] == "ok" and prep["inputs"][0]["shape"] == [16] and prep["output_shape"] == [4]
    res = _run(workers, _job(fast_target, tmp_path, ref), tmp_path / "w", 300)
    assert res["status"] == "ok", res
    assert res["quality"]["quality_loss"] < 1e-9
    assert res["latency"]["n"] >= fast_target.measurement.min_repeats
    assert (Path(tmp_path / "w") / "model.pt2").is_file()


def test_a_trials_wall_time_is_split_by_phase(fast_target, tmp_path, workers):
    """The split sums to the parent's wall time, and the named phases (not the 'other' rest) account for the work."""
    from planner.record.metrics import TIME_PHASES, time_split

    ref = f"{DATA / 'models.py'}:tiny"
    assert _prepare(fast_target, tmp_path, ref, workers)["status"] == "ok"
    job = {**_job(fast_target, tmp_path, ref), "config": TrialConfig("onnxruntime", 2).to_dict()}
    res = _run(workers, job, tmp_path / "w", 300)
    assert res["status"] == "ok", res
    split = time_split(res)
    assert list(split) == list(TIME_PHASES) and all(v >= 0 for v in split.values())
    assert abs(sum(split.values()) - res["wall_seconds"]) < 0.01 * res["wall_seconds"]
    assert split["startup"] > 0 and split["imports"] > 0 and split["export"] > 0 and split["timing"] > 0
    assert split["other"] < 0.25 * res["worker_seconds"], split


def test_segfault_becomes_crash(fast_target, tmp_path, workers):
    ref = f"{DATA / 'models.py'}:segfault_on_batch4"
    assert _prepare(fast_target, tmp_path, ref, workers)["status"] == "ok"  # batch 6 in prepare is fine
    res = _run(workers, _job(fast_target, tmp_path, ref, batch=4), tmp_path / "w", 300)
    assert res["status"] == "failed" and res["reason"] == "crash" and "SIGSEGV" in res["message"]


def test_timeout_kills_the_worker(fast_target, tmp_path, workers):
    ref = f"{DATA / 'models.py'}:tiny"
    res = _run(workers, _job(fast_target, tmp_path, ref), tmp_path / "w", 0.5)
    assert res["status"] == "failed" and res["reason"] == "timeout"


def test_factory_that_raises_is_a_config_error(fast_target, tmp_path, workers):
    res = _prepare(fast_target, tmp_path, f"{DATA / 'models.py'}:raises", workers)
    assert res["status"] == "config_error" and "weights file is corrupt" in res["message"]


def test_thread_pinning_env(fast_target, tmp_path):
    env = worker_env(fast_target, tmp_path)
    assert env["OMP_NUM_THREADS"] == "1" and env["TORCHINDUCTOR_CACHE_DIR"].startswith(str(tmp_path))


def test_sigkill_becomes_oom(fast_target, tmp_path, workers):
    ref = f"{DATA / 'models.py'}:killed_on_batch4"
    assert _prepare(fast_target, tmp_path, ref, workers)["status"] == "ok"
    res = _run(workers, _job(fast_target, tmp_path, ref, batch=4), tmp_path / "w", 300)
    assert res["status"] == "failed" and res["reason"] == "oom" and "out of memory" in res["message"]


def test_memory_error_in_the_candidate_is_oom(fast_target, tmp_path, workers):
    model = tmp_path / "greedy.py"
    model.write_text((DATA / "models.py").read_text() + "\n\nclass Greedy(Tiny):\n    def forward(self, x):\n"
                     "        if x.shape[0] == 4:\n            raise MemoryError('cannot allocate 64 GiB')\n"
                     "        return self.fc(x)\n\n\ndef greedy():\n    return Greedy().eval()\n")
    ref = f"{model}:greedy"
    assert _prepare(fast_target, tmp_path, ref, workers)["status"] == "ok"
    res = _run(workers, _job(fast_target, tmp_path, ref, batch=4), tmp_path / "w", 300)
    assert res["status"] == "failed" and res["reason"] == "oom", res


@pytest.mark.parametrize("mode", ["spawn", "fork"])
def test_worker_dies_with_the_planner_process(fast_target, tmp_path, mode):
    """kill -9 of the planner must not leave its measuring worker (it may be hung), nor its fork server, running."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    ref = f"{DATA / 'models.py'}:hang_on_batch4"
    assert _prepare(fast_target, tmp_path, ref)["status"] == "ok"
    job = _job(fast_target, tmp_path, ref, batch=4)
    code = ("import json, sys, time\nfrom pathlib import Path\nfrom planner.measure.runner import WorkerProcess as Job, worker_env\n"
            "from planner.measure.forkserver import ForkServer, preload_for\n"
            "from planner.target import Target\n"
            f"job = json.loads({json.dumps(json.dumps(job))})\n"
            "t = Target.model_validate(job['target'])\n"
            f"env = worker_env(t, Path({str(tmp_path)!r}))\n"
            f"server = ForkServer(env, preload_for(['torch'])) if {mode!r} == 'fork' else None\n"
            f"j = Job(job, Path({str(tmp_path / 'w')!r}), env, server=server)\n"
            "print(j.proc.pid, server.pid if server else j.proc.pid, flush=True)\ntime.sleep(600)\n")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    child, server = map(int, parent.stdout.readline().split())
    assert (child != server) == (mode == "fork")
    time.sleep(8)  # the worker is now inside the hung forward
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 10
    alive = {child, server}
    while alive and time.time() < deadline:
        for pid in list(alive):
            if not _alive(pid):
                alive.discard(pid)
        time.sleep(0.1)
    for pid in alive:
        os.kill(pid, signal.SIGKILL)
    assert not alive, f"{alive} outlived the planner process"


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, reaped later by init, is dead)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False
