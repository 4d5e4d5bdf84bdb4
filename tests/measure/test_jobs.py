"""The typed worker protocol: one frozen job type per kind, read back exactly as written, dispatched by table."""

import dataclasses
import importlib

import pytest

from planner.measure.jobs import HANDLERS, ConfirmJob, LlmTrialJob, PrepareJob, TrialJob, VerifyJob, job_from_dict

BASE = {"spec": {"ref": "tiny-mlp"}, "target": {"name": "t"}, "cache_dir": "/c"}


@pytest.mark.parametrize("job", [
    PrepareJob(**BASE, reference="/r.npz", reference_batch=1),
    TrialJob(**BASE, config={"backend": "torch"}, workdir="/w", reference="/r.npz", abort_above_ms=2.5, batch_sizes=[1, 8]),
    ConfirmJob(**BASE, config={"backend": "torch"}, workdir="/w", reference="/r.npz", rounds=3),
    LlmTrialJob(**BASE, config={"backend": "torch"}, workdir="/w", reference="/r.npz", workload={"name": "chat"}),
    VerifyJob(engine_dir="/e", engine_file="model.onnx", batch_size=4, compare={"atol": 1e-5, "rtol": 0.0}, latency=True),
])
def test_a_job_reads_back_as_written(job):
    d = job.to_dict()
    assert d["kind"] == job.kind and job_from_dict(d) == job
    with pytest.raises(dataclasses.FrozenInstanceError):
        job.result = "/elsewhere"


def test_what_does_not_fit_is_named():
    with pytest.raises(ValueError, match=r"unknown job kind 'bake' \(known: prepare, trial, confirm"):
        job_from_dict({"kind": "bake", **BASE})
    with pytest.raises(ValueError, match=r"trial job: unknown field\(s\) \['abort_above'\]"):
        job_from_dict({"kind": "trial", **BASE, "config": {}, "workdir": "/w", "reference": "/r", "abort_above": 1})
    with pytest.raises(ValueError, match="confirm job: .*rounds"):
        job_from_dict({"kind": "confirm", **BASE, "config": {}, "workdir": "/w", "reference": "/r"})


def test_every_kind_has_a_handler_that_takes_its_job():
    for kind, (cls, ref) in HANDLERS.items():
        module, _, name = ref.partition(":")
        assert cls.kind == kind and callable(getattr(importlib.import_module(module), name)), ref
