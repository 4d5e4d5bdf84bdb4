"""The isolated worker turns crashes, hangs and kills into failed results (real subprocesses)."""

from pathlib import Path

from support import DATA

from planner.config import TrialConfig
from planner.measure.runner import run_job, worker_env
from planner.model import parse_model


def _job(fast_target, tmp_path, ref, batch=1, backend="torch"):
    spec = parse_model(ref)
    return {
        "kind": "trial", "spec": spec.to_dict(), "target": fast_target.model_dump(mode="json"),
        "config": TrialConfig(backend, batch).to_dict(), "cache_dir": str(tmp_path / "cache"),
        "workdir": str(tmp_path / "w"), "reference": str(tmp_path / "ref.npz"),
    }


def _prepare(fast_target, tmp_path, ref):
    job = {"kind": "prepare", "spec": parse_model(ref).to_dict(), "target": fast_target.model_dump(mode="json"),
           "cache_dir": str(tmp_path / "cache"), "reference": str(tmp_path / "ref.npz"), "eval_samples": 6}
    return run_job(job, tmp_path / "prep", 300, worker_env(fast_target, tmp_path / "cache"))


def test_prepare_and_trial_ok(fast_target, tmp_path):
    ref = f"{DATA / 'models.py'}:tiny"
    prep = _prepare(fast_target, tmp_path, ref)
    assert prep["status"] == "ok" and prep["inputs"][0]["shape"] == [16] and prep["output_shape"] == [4]
    res = run_job(_job(fast_target, tmp_path, ref), tmp_path / "w", 300, worker_env(fast_target, tmp_path / "cache"))
    assert res["status"] == "ok", res
    assert res["quality"]["quality_loss"] < 1e-9
    assert res["latency"]["n"] >= fast_target.measurement.min_repeats
    assert (Path(tmp_path / "w") / "model.pt2").is_file()


def test_a_trials_wall_time_is_split_by_phase(fast_target, tmp_path):
    """The split sums to the parent's wall time, and the named phases (not the 'other' rest) account for the work."""
    from planner.record.metrics import TIME_PHASES, time_split

    ref = f"{DATA / 'models.py'}:tiny"
    assert _prepare(fast_target, tmp_path, ref)["status"] == "ok"
    job = {**_job(fast_target, tmp_path, ref), "config": TrialConfig("onnxruntime", 2).to_dict()}
    res = run_job(job, tmp_path / "w", 300, worker_env(fast_target, tmp_path / "cache"))
    assert res["status"] == "ok", res
    split = time_split(res)
    assert list(split) == list(TIME_PHASES) and all(v >= 0 for v in split.values())
    assert abs(sum(split.values()) - res["wall_seconds"]) < 0.01 * res["wall_seconds"]
    assert split["startup"] > 0 and split["imports"] > 0 and split["export"] > 0 and split["timing"] > 0
    assert split["other"] < 0.25 * res["worker_seconds"], split


def test_segfault_becomes_crash(fast_target, tmp_path):
    ref = f"{DATA / 'models.py'}:segfault_on_batch4"
    assert _prepare(fast_target, tmp_path, ref)["status"] == "ok"  # batch 6 in prepare is fine
    res = run_job(_job(fast_target, tmp_path, ref, batch=4), tmp_path / "w", 300, worker_env(fast_target, tmp_path / "cache"))
    assert res["status"] == "failed" and res["reason"] == "crash" and "SIGSEGV" in res["message"]


def test_timeout_kills_the_worker(fast_target, tmp_path):
    ref = f"{DATA / 'models.py'}:tiny"
    res = run_job(_job(fast_target, tmp_path, ref), tmp_path / "w", 0.5, worker_env(fast_target, tmp_path / "cache"))
    assert res["status"] == "failed" and res["reason"] == "timeout"


def test_factory_that_raises_is_a_config_error(fast_target, tmp_path):
    res = _prepare(fast_target, tmp_path, f"{DATA / 'models.py'}:raises")
    assert res["status"] == "config_error" and "weights file is corrupt" in res["message"]


def test_thread_pinning_env(fast_target, tmp_path):
    env = worker_env(fast_target, tmp_path)
    assert env["OMP_NUM_THREADS"] == "1" and env["TORCHINDUCTOR_CACHE_DIR"].startswith(str(tmp_path))


def test_sigkill_becomes_oom(fast_target, tmp_path):
    ref = f"{DATA / 'models.py'}:killed_on_batch4"
    assert _prepare(fast_target, tmp_path, ref)["status"] == "ok"
    res = run_job(_job(fast_target, tmp_path, ref, batch=4), tmp_path / "w", 300, worker_env(fast_target, tmp_path / "cache"))
    assert res["status"] == "failed" and res["reason"] == "oom" and "out of memory" in res["message"]


def test_memory_error_in_the_candidate_is_oom(fast_target, tmp_path):
    model = tmp_path / "greedy.py"
    model.write_text((DATA / "models.py").read_text() + "\n\nclass Greedy(Tiny):\n    def forward(self, x):\n"
                     "        if x.shape[0] == 4:\n            raise MemoryError('cannot allocate 64 GiB')\n"
                     "        return self.fc(x)\n\n\ndef greedy():\n    return Greedy().eval()\n")
    ref = f"{model}:greedy"
    assert _prepare(fast_target, tmp_path, ref)["status"] == "ok"
    res = run_job(_job(fast_target, tmp_path, ref, batch=4), tmp_path / "w", 300, worker_env(fast_target, tmp_path / "cache"))
    assert res["status"] == "failed" and res["reason"] == "oom", res


def test_worker_dies_with_the_planner_process(fast_target, tmp_path):
    """kill -9 of the planner must not leave its measuring worker running (it may be hung)."""
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
            "from planner.target import Target\n"
            f"job = json.loads({json.dumps(json.dumps(job))})\n"
            "t = Target.model_validate(job['target'])\n"
            f"j = Job(job, Path({str(tmp_path / 'w')!r}), worker_env(t, Path({str(tmp_path)!r})))\n"
            "print(j.proc.pid, flush=True)\ntime.sleep(600)\n")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    time.sleep(8)  # the worker is now inside the hung forward
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        with open(f"/proc/{child}/stat") as f:
            if f.read().split()[2] == "Z":  # reaped later by init; it is dead
                return
        time.sleep(0.1)
    os.kill(child, signal.SIGKILL)
    raise AssertionError("the worker outlived the planner process")
