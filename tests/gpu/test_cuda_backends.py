"""One tiny-mlp trial per CUDA backend, built and measured by the worker job path, checked against fp32.

`pytest -m gpu tests/gpu`.  Backends whose CUDA support is not installed here (onnxruntime
without its CUDA/TensorRT execution providers, TVM without CUDA, TensorRT) skip with the reason.
"""

import importlib.util
from pathlib import Path

import pytest
from gpu_support import gpu_marks

from planner.config import PruneConfig, QuantConfig, TrialConfig, freeze_options

pytestmark = gpu_marks()

FP32_LOSS = 1e-3   # TensorRT and cuDNN may use TF32 for fp32 layers
FP16_LOSS = 2e-2


def _ort_providers() -> list[str]:
    if importlib.util.find_spec("onnxruntime") is None:
        return []
    import onnxruntime as ort

    return ort.get_available_providers()


def _tvm_cuda_reason() -> str | None:
    if importlib.util.find_spec("tvm") is None:
        return "TVM is not installed (pip install 'planner[tvm]')"
    import tvm

    if not tvm.runtime.enabled("cuda"):
        return "this TVM build has no CUDA runtime (the apache-tvm wheel is CPU-only; build TVM with USE_CUDA=ON)"
    if not tvm.cuda(0).exist:
        return "TVM cannot see a CUDA device"
    return None


def _need(backend: str, option: dict):
    if backend == "onnxruntime":
        ep = {"cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}[option["execution_provider"]]
        if ep not in _ort_providers():
            pytest.skip(f"onnxruntime has no {ep} here (has {_ort_providers()}): install onnxruntime-gpu")
    if backend == "tvm":
        why = _tvm_cuda_reason()
        if why:
            pytest.skip(why)
    if backend == "tensorrt" and importlib.util.find_spec("tensorrt") is None:
        pytest.skip("TensorRT is not installed: pip install 'planner[tensorrt]'")


def cfg(backend, batch=8, scheme="none", prune="none", **opts):
    return TrialConfig(backend, batch, backend_options=freeze_options(opts), prune=PruneConfig(prune),
                       quant=QuantConfig(scheme))


CASES = [
    ("torch-fp32", cfg("torch"), FP32_LOSS),
    ("torch-fp16", cfg("torch", scheme="fp16"), FP16_LOSS),
    ("compile-default", cfg("torch_compile", mode="default"), FP32_LOSS),
    ("compile-reduce-overhead", cfg("torch_compile", mode="reduce-overhead"), FP32_LOSS),
    ("ort-cuda", cfg("onnxruntime", execution_provider="cuda"), FP32_LOSS),
    ("ort-cuda-fp16", cfg("onnxruntime", scheme="fp16", execution_provider="cuda"), FP16_LOSS),
    ("ort-tensorrt-ep", cfg("onnxruntime", execution_provider="tensorrt"), FP32_LOSS),
    ("tvm-cuda-untuned", cfg("tvm", tuning_trials=0), FP32_LOSS),
    ("trt-fp32", cfg("tensorrt", optimization_level=3), FP32_LOSS),
    ("trt-fp16-cudagraph", cfg("tensorrt", scheme="fp16", optimization_level=3, cuda_graph=True), FP16_LOSS),
]


def _explain(res: dict, workdir: Path) -> str:
    log = workdir / "worker.log"
    tail = log.read_text(errors="replace")[-3000:] if log.is_file() else "(no worker.log)"
    return f"{res}\n--- worker.log (tail) ---\n{tail}"


@pytest.mark.parametrize("name,config,max_loss", CASES, ids=[c[0] for c in CASES])
def test_backend_builds_measures_and_matches_fp32(run_trial, gpu_target, name, config, max_loss):
    _need(config.backend, config.options())
    if config.precision not in gpu_target.precisions:
        pytest.skip(f"{gpu_target.device.gpu.name} has no {config.precision}")
    res, workdir = run_trial(config, name)
    assert res["status"] == "ok", _explain(res, workdir)
    assert res["device"] == "cuda"
    q = res["quality"]
    assert q["quality_loss"] <= max_loss, q
    assert res["latency"]["n"] >= gpu_target.measurement.min_repeats
    assert res["latency"]["p50_ms"] > 0
    assert res["artifacts"] and all((workdir / a).is_file() or Path(a).is_file() for a in res["artifacts"])
    # torch and TensorRT queue on a stream the timer records CUDA events on; ONNX Runtime's call returns
    # when its device work is done (host clock).  Copies are timed apart, from host arrays to host outputs.
    assert res["timing"] == ("host_clock" if config.backend in ("onnxruntime", "tvm") else "cuda_events")
    assert res["copies_included"] is False and res["latency_with_copies"]["p50_ms"] > 0
    assert res["device_info"]["compute_capability"] == gpu_target.device.gpu.compute_capability


def test_tensorrt_applies_its_plan_and_reuses_the_timing_cache(run_trial, gpu_target, tmp_path):
    _need("tensorrt", {})
    import tensorrt as trt
    import torch

    from planner.backends.tensorrt import plan_build, timing_cache_path
    from planner.model import InputSpec

    cache = tmp_path / "cache"
    first, w1 = run_trial(cfg("tensorrt", optimization_level=2), "trt-cache-1", cache_dir=cache)
    assert first["status"] == "ok", _explain(first, w1)
    info = first["build_info"]
    expected = plan_build(cfg("tensorrt", optimization_level=2), gpu_target, trt.__version__,
                          [InputSpec("x", (1,))], (1, 8), cache_dir=cache, gpu_name=torch.cuda.get_device_name())
    assert info["tensorrt_version"] == trt.__version__
    assert info["strongly_typed"] == expected.strongly_typed
    assert info["builder_flags"] == list(expected.builder_flags)
    assert info["optimization_level"] == 2
    assert info["timing_cache"] == str(timing_cache_path(cache, torch.cuda.get_device_name(), trt.__version__))
    assert info["timing_cache_status"] == "new"
    assert Path(info["timing_cache"]).is_file()

    second, w2 = run_trial(cfg("tensorrt", batch=1, optimization_level=2), "trt-cache-2", cache_dir=cache)
    assert second["status"] == "ok", _explain(second, w2)
    assert second["build_info"]["timing_cache_status"] == "loaded"

    Path(info["timing_cache"]).write_bytes(b"not a timing cache")
    third, w3 = run_trial(cfg("tensorrt", batch=2, optimization_level=2), "trt-cache-3", cache_dir=cache)
    assert third["status"] == "ok", _explain(third, w3)  # a corrupt cache never fails a build
    assert third["build_info"]["timing_cache_status"] in ("corrupt", "mismatch", "loaded")  # TensorRT may take junk as empty


def test_tensorrt_int8_static_builds_or_names_the_graph_problem(run_trial, gpu_target):
    """int8 needs symmetric, signed Q/DQ; until the ONNX transform writes that, the trial fails as
    `unsupported` with the reason, never as a parser crash."""
    _need("tensorrt", {})
    res, workdir = run_trial(cfg("tensorrt", scheme="int8_static"), "trt-int8")
    if res["status"] == "ok":
        assert res["quality"]["quality_loss"] <= 0.05, res["quality"]
    else:
        assert res.get("reason") == "unsupported" and "Q/DQ" in res.get("message", ""), _explain(res, workdir)


def test_probe_describes_this_gpu(gpu_target):
    import torch

    major, minor = torch.cuda.get_device_capability(0)
    assert gpu_target.device.kind == "cuda"
    assert gpu_target.device.gpu.compute_capability == f"{major}.{minor}"
    assert ("fp8" in gpu_target.precisions) == ((major, minor) >= (8, 9))
    assert ("bf16" in gpu_target.precisions) == (major >= 8)
