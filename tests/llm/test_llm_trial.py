"""Worker jobs: prepare the teacher-forced reference, run one trial, same result shape as do_trial."""

from __future__ import annotations

import json

import pytest

from llm_helpers import cfg
from planner.llm.measure import llm_constraints, llm_metrics
from planner.measure import worker
from planner.measure.jobs import job_from_dict
from planner.llm.workload import Workload


def run(job: dict) -> dict:
    """A job dict through the worker's own typing and dispatch (in this process)."""
    return worker.run(job_from_dict(job))

WORKLOAD = Workload(prompt_lengths=[16, 40], generation_length=8, batch_sizes=[2],
                    slo={"ttft_ms": 1e4, "tpot_ms": 1e4, "percentile": "p50"}, quality={"max_disagreement": 0.05},
                    eval={"sequences": 4, "forced_tokens": 6})


@pytest.fixture(scope="module")
def prepared(tiny_spec, cpu_target, llm_cache, tmp_path_factory):
    d = tmp_path_factory.mktemp("llm-study")
    job = {"kind": "llm_prepare", "spec": tiny_spec.to_dict(), "target": cpu_target.model_dump(mode="json"),
           "cache_dir": str(llm_cache), "reference": str(d / "reference.npz"), "workload": WORKLOAD.to_dict()}
    res = run(job)
    assert res["status"] == "ok", res
    return job, res


def _trial(prepared, tmp_path, c, workload=WORKLOAD):
    job, _ = prepared
    return run({**job, "kind": "llm_trial", "config": c.to_dict(), "workdir": str(tmp_path / "trial"),
                "workload": workload.to_dict(), "abort_above_ms": None})


def test_prepare_result(prepared):
    _, res = prepared
    assert res["output_kind"] == "logits" and res["output_shape"] == [7, 512]  # forced 6 + 1 positions
    assert res["llm"]["eval_prompt_length"] == 16 and res["llm"]["heads"] == 4
    assert res["param_count"] > 0 and len(res["model_hash"]) == 16


def test_eager_trial_result_shape(prepared, tmp_path):
    res = _trial(prepared, tmp_path, cfg("torch", batch=2))
    assert res["status"] == "ok", res
    lat = res["latency"]  # the timer's dict of the worst TTFT, as do_trial's "latency"
    assert {"n", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "cv", "windows", "unstable"} <= set(lat)
    assert res["tpot_latency"]["n"] >= 20
    assert res["quality"]["quality_loss"] == 0.0 and res["quality"]["agreement"] == 1.0
    llm = res["llm"]
    for k in ("ttft_p50_ms", "ttft_p99_ms", "tpot_p50_ms", "tpot_p99_ms", "tokens_per_s"):
        assert llm[k] > 0
    assert [m["prompt_length"] for m in llm["by_prompt"]] == [16, 40]
    worst = max(llm["by_prompt"], key=lambda m: m["ttft_p50_ms"])  # usually the longer prompt; on a loaded host not always
    assert llm["batch"] == 2 and llm["prompt_length"] == worst["prompt_length"] and lat["p50_ms"] == llm["ttft_p50_ms"]
    assert res["artifacts"] == ["decoder.json"] and (tmp_path / "trial" / "decoder.json").is_file()
    assert res["compile_seconds"] >= 0 and res["peak_rss_mb"] > 0 and res["device"] == "cpu"
    json.dumps(res)  # serialisable as the worker writes it
    assert all(v <= 0 for v in llm_constraints(llm_metrics(res), WORKLOAD).values())
    tight = WORKLOAD.model_copy(update={"slo": WORKLOAD.slo.model_copy(update={"ttft_ms": 1e-6})})
    assert llm_constraints(llm_metrics(res), tight)["ttft_slo"] > 0


def test_pruned_int8_trial_reports_quality_loss(prepared, tmp_path):
    res = _trial(prepared, tmp_path, cfg("torch", "int8_dynamic", batch=2, prune=0.25))
    assert res["status"] == "ok", res
    assert 0.0 < res["quality"]["quality_loss"] < 1.0
    assert res["transform_info"]["prune_seconds"] >= 0


def test_failures_are_results(prepared, tmp_path):
    res = _trial(prepared, tmp_path, cfg("tvm", batch=2))
    assert res["status"] == "failed" and res["reason"] == "unsupported" and "TVM" in res["message"]
    too_long = WORKLOAD.model_copy(update={"prompt_lengths": [250]})
    res = _trial(prepared, tmp_path, cfg("torch", batch=2), too_long)
    assert res["status"] == "config_error" and "exceeds the model's 256 positions" in res["message"]


def test_main_writes_result_json(prepared, tmp_path):
    job, _ = prepared
    path = tmp_path / "job.json"
    path.write_text(json.dumps({**job, "kind": "llm_prepare", "result": str(tmp_path / "result.json"),
                                "reference": str(tmp_path / "ref.npz")}))
    import subprocess
    import sys

    subprocess.run([sys.executable, "-m", "planner.measure.worker", str(path)], check=True, timeout=600)
    assert json.loads((tmp_path / "result.json").read_text())["status"] == "ok"


def test_a_non_decoder_model_is_a_config_error(prepared):
    from planner.model import ModelSpec

    job, _ = prepared
    res = run({**job, "spec": ModelSpec("tiny-mlp", "zoo", "tiny-mlp").to_dict()})
    assert res["status"] == "config_error" and "not a KV-cache decoder" in res["message"]


def test_engine_trials_serve_without_the_torch_module(prepared, tiny_spec, llm_cache, tmp_path):
    import weakref

    from planner.source import ModelSource

    res = _trial(prepared, tmp_path, cfg("onnxruntime", batch=2))
    assert res["status"] == "ok", res
    assert res["serving_rss_mb"] > 0  # resident memory while serving, recorded beside the peak (which counts the build)
    src = ModelSource(tiny_spec, llm_cache)  # what the trial does once the engine is built: no module is kept
    base, pruned = src.base_module(), src.torch_module(cfg("torch", batch=2, prune=0.25))
    refs = [weakref.ref(base), weakref.ref(pruned)]
    del base, pruned
    assert all(r() is not None for r in refs)  # the source holds them ...
    src.release_modules()
    assert all(r() is None for r in refs)  # ... until it lets them go
