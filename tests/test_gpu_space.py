"""search_spaces/gpu.yaml: loads, and sampling filters precisions by the target's GPU (real Optuna samplers).

Sampling needs no GPU: it reads the target YAML and the backends' declared capabilities.
TensorRT is not installed on CPU machines, so where a test needs it offered, its
availability is stubbed (nothing is built here).
"""

import dataclasses

import optuna
import pytest
from support import ROOT

from planner.backends import registry
from planner.backends.base import Availability
from planner.backends.tensorrt import TensorRT, supported_schemes
from planner.config import PruneConfig
from planner.space import load_space, rebuild, sample
from planner.target import load_target

FP8_TRANSFORMS = ("none", "fp16", "int8_dynamic", "int8_static", "fp8")  # what the ONNX transforms write


@pytest.fixture(scope="module")
def space():
    return load_space("gpu")


def _target(name):
    return load_target(ROOT / "targets" / f"{name}.yaml")


@pytest.fixture
def tensorrt_here(monkeypatch):
    """TensorRT offered as if installed (availability only; sampling never imports it)."""
    monkeypatch.setattr(TensorRT, "availability", classmethod(lambda cls: Availability(True, "tensorrt (stub)")))


def _draw(space, target, n, seed=0, sampler=None):
    study = optuna.create_study(sampler=sampler or optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        t = study.ask()
        cfg = sample(t, space, target, "torch")
        assert rebuild(t.params, space, target, "torch") == cfg  # FixedTrial rebuilds the same config
        out.append(cfg)
        study.tell(t, 1.0)
    return out


def test_gpu_space_loads_with_every_cuda_backend(space):
    assert set(space.backends) == {"torch", "torch_compile", "onnxruntime", "tensorrt", "tvm"}
    assert "fp8" in space.quantize.schemes and "max-autotune" in space.backends["torch_compile"]["mode"].choices
    assert space.backends["onnxruntime"]["execution_provider"].choices == ["cuda", "tensorrt"]
    assert space.batch_size.values() == [1, 8, 32]


@pytest.mark.parametrize("name", ["a100", "h100", "l4"])
def test_sampled_precisions_are_the_targets(space, tensorrt_here, name):
    target = _target(name)
    for cfg in _draw(space, target, 150, seed=1):
        assert cfg.precision in target.precisions, cfg.describe()
        assert cfg.quant.scheme in registry.get(cfg.backend).quant_schemes
        assert cfg.batch_size in (1, 8, 32)


def test_a100_never_gets_fp8_even_where_a_backend_builds_it(space, tensorrt_here, monkeypatch):
    monkeypatch.setattr(TensorRT, "quant_schemes", supported_schemes("11.0", FP8_TRANSFORMS))
    a100 = _target("a100")
    for sampler in (optuna.samplers.RandomSampler(seed=3), optuna.samplers.TPESampler(seed=3)):
        cfgs = _draw(space, a100, 200, sampler=sampler)
        assert all(c.quant.scheme != "fp8" for c in cfgs)
        assert any(c.backend == "tensorrt" and c.quant.scheme == "fp16" for c in cfgs)  # the filter is not "everything off"
    # an fp8 trial of an H100 study cannot be rebuilt for an A100
    h100 = _target("h100")
    fp8 = next(c for c in _draw(space, h100, 300, seed=4) if c.quant.scheme == "fp8")
    params = {"backend": "tensorrt", "tensorrt.optimization_level": 3, "tensorrt.cuda_graph": False,
              "batch_size": fp8.batch_size, "tensorrt.quant": "fp8", "prune.method": "none"}
    assert rebuild(params, space, h100, "torch").quant.scheme == "fp8"
    with pytest.raises(ValueError, match="fp8"):
        rebuild(params, space, a100, "torch")


@pytest.mark.parametrize("name", ["h100", "l4"])
def test_sm89_targets_may_get_fp8_where_a_backend_builds_it(space, tensorrt_here, monkeypatch, name):
    monkeypatch.setattr(TensorRT, "quant_schemes", supported_schemes("11.0", FP8_TRANSFORMS))
    cfgs = _draw(space, _target(name), 200, seed=5)
    fp8 = [c for c in cfgs if c.quant.scheme == "fp8"]
    assert fp8 and all(c.backend == "tensorrt" for c in fp8)


def test_fp8_is_offered_only_by_backends_that_implement_it(space, tensorrt_here):
    """With the real capability declarations: fp8 on an H100 iff some backend of the space builds it
    (today none does: TensorRT needs FP8 Q/DQ in the ONNX graph, which no transform writes yet)."""
    builds_fp8 = any("fp8" in registry.get(b).quant_schemes for b in space.backends)
    seen = {c.quant.scheme for c in _draw(space, _target("h100"), 300, seed=6)}
    assert ("fp8" in seen) == builds_fp8
    assert {"none", "fp16"} <= seen


def test_bf16_follows_the_gpu(space, tensorrt_here):
    t4ish = _target("a100").model_copy(update={"precisions": ["fp32", "fp16", "int8"]})
    assert all(c.quant.scheme != "bf16" for c in _draw(space, t4ish, 150, seed=7))
    assert any(c.quant.scheme == "bf16" for c in _draw(space, _target("a100"), 150, seed=7))


def test_int4_on_a_gpu_comes_only_from_onnxruntime(space, tensorrt_here):
    """int4 weight-only is ONNX Runtime's MatMulNBits on CUDA; torch's int4 kernel is CPU-only
    (`Backend.scheme_devices`), so the capability matrix never offers torch/torch_compile int4 on a GPU."""
    from planner.space import schemes_for

    a100 = _target("a100")
    assert "int4_weight_only" in schemes_for("onnxruntime", space, a100)
    for b in ("torch", "torch_compile"):
        assert "int4_weight_only" not in schemes_for(b, space, a100)
    cfgs = _draw(space, a100, 300, seed=8)
    int4 = [c for c in cfgs if c.quant.scheme == "int4_weight_only"]
    assert int4 and {c.backend for c in int4} == {"onnxruntime"}
    # a config that slipped through (e.g. rebuilt by hand) is refused before compiling, naming where it runs
    torch_int4 = dataclasses.replace(int4[0], backend="torch", backend_options=(), prune=PruneConfig())
    why = registry.get("torch").check(torch_int4, a100, "torch")
    assert why and "cpu" in why and "cuda" in why
    assert registry.get("torch").check(torch_int4, load_target(ROOT / "targets" / "cpu.yaml"), "torch") is None


def test_channels_last_is_searched_for_the_torch_backends_on_cuda(space):
    for backend in ("torch", "torch_compile"):
        assert space.backends[backend]["memory_format"].choices == ["contiguous", "channels_last"]
    drawn = _draw(space, _target("h100"), 60, seed=3)
    formats = {c.options().get("memory_format") for c in drawn if c.backend in ("torch", "torch_compile")}
    assert formats == {"contiguous", "channels_last"}  # reaches the config the backends build from


def test_run_gpu_short_space_seeds_run_on_a_gpu_target():
    """experiments/run_gpu.sh's space: every seed is a config an H100-class target can run."""
    from planner.space import seed_params, usable_backends

    short = load_space(str(ROOT / "experiments" / "configs" / "gpu-short.yaml"))
    target = _target("h100")
    backends, _ = usable_backends(short, target, "torch")
    assert set(backends) == {"torch", "torch_compile"}
    for i, seed in enumerate(short.seeds):
        params, why = seed_params(seed, short, target, "torch", backends)
        assert params is not None, f"seeds[{i}]: {why}"
    assert rebuild(seed_params(short.seeds[0], short, target, "torch", backends)[0], short, target, "torch").options() == {
        "mode": "reduce-overhead", "freezing": False, "memory_format": "channels_last"}
