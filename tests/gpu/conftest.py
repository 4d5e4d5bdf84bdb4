"""Fixtures of the `gpu` suite: a target for this host's GPU, and tiny-mlp's fp32 reference.

Every test module here sets ``pytestmark = gpu_marks()`` (gpu_support.py): marked `gpu`
(deselected by default; run `pytest -m gpu tests/gpu`) and skipped with the reason where
`torch.cuda.is_available()` is false.
"""

import pytest

from planner.measure.runner import run_job, worker_env
from planner.model import parse_model


@pytest.fixture(scope="session")
def gpu_target():
    """This host's GPU as a Target (`planner probe`; from torch when nvidia-smi is missing),
    with a short measurement protocol: these tests check that builds run and match fp32, not speed."""
    import torch

    from planner.target import GPU, Device, Protocol, Target, gpu_precisions, probe_host

    target = probe_host()
    if not target.is_gpu:
        props = torch.cuda.get_device_properties(0)
        cc = f"{props.major}.{props.minor}"
        target = Target(name="torch-probed-gpu", device=Device(kind="cuda", gpu=GPU(
            name=props.name, compute_capability=cc, memory_gb=round(props.total_memory / 2**30, 1),
            sm_count=props.multi_processor_count)), precisions=gpu_precisions(cc), tvm_target=f"cuda -arch=sm_{props.major}{props.minor}")
    fast = Protocol(warmup_iters=5, warmup_seconds=0.0, min_repeats=20, min_seconds=0.05, max_seconds=3.0,
                    cv_threshold=10.0, max_remeasure=0)
    return target.model_copy(update={"measurement": fast})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, gpu_target):
    """tiny-mlp's fp32 eager reference outputs, computed by a prepare job in a worker process."""
    root = tmp_path_factory.mktemp("tiny")
    spec = parse_model("tiny-mlp")
    job = {"kind": "prepare", "spec": spec.to_dict(), "target": gpu_target.model_dump(mode="json"),
           "cache_dir": str(root / "cache"), "reference": str(root / "ref.npz"), "eval_samples": 32}
    res = run_job(job, root / "prep", 600, worker_env(gpu_target, root / "cache"))
    assert res["status"] == "ok", res
    return {"root": root, "spec": spec, "reference": root / "ref.npz", "output_kind": res["output_kind"]}


@pytest.fixture
def run_trial(tiny, gpu_target):
    """Build and measure one TrialConfig through the worker job path; returns (result dict, workdir)."""
    from pathlib import Path

    def run(cfg, name: str, cache_dir: Path | None = None):
        workdir = tiny["root"] / "trials" / name
        cache = cache_dir or tiny["root"] / "cache"
        job = {"kind": "trial", "spec": tiny["spec"].to_dict(), "target": gpu_target.model_dump(mode="json"),
               "config": cfg.to_dict(), "cache_dir": str(cache), "workdir": str(workdir),
               "reference": str(tiny["reference"]), "output_kind": tiny["output_kind"]}
        res = run_job(job, workdir, 900, worker_env(gpu_target, cache))
        return res, workdir

    return run
