"""One conformance suite for every registered backend: build tiny-mlp, match the fp32 reference, run bound calls."""

import numpy as np
import pytest

from planner.backends import registry
from planner.config import TrialConfig
from planner.model import parse_model
from planner.source import ModelSource

NAMES = [n for n in registry.REGISTRY]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return ModelSource(parse_model("tiny-mlp"), tmp_path_factory.mktemp("cache"))


@pytest.mark.parametrize("name", NAMES)
def test_backend_conformance(name, source, fast_target, tmp_path):
    cls = registry.get(name)
    assert cls.name == name
    avail = cls.availability()
    if not avail.usable:
        assert cls.install_command() in avail.detail
        pytest.skip(f"{name} not installed here: {avail.detail}")
    if name == "tvm":
        pytest.skip("covered by tests/backends/test_tvm.py")
    if cls.decoder_only:
        pytest.skip(f"{name} builds LLM decoders only (tests/backends/test_{name}.py)")
    if fast_target.device.kind not in cls.devices:
        pytest.skip(f"{name} does not run on {fast_target.device.kind}")
    cfg = TrialConfig(name, 3)
    assert cls.check(cfg, fast_target, source.format) is None
    build = cls().compile(source, cfg, fast_target, tmp_path)
    assert build.ok, build.error
    assert build.artifacts and all(p.is_file() for p in build.artifacts)
    feed = source.example_inputs(3, seed=9)
    import torch

    with torch.inference_mode():
        ref = source.base_module()(*[torch.from_numpy(v) for v in feed.values()]).numpy()
    out = build.runtime.infer(feed)
    np.testing.assert_allclose(out[0], ref, rtol=1e-4, atol=1e-5)
    # the declared engine files are what it wrote, and its own loader runs them (what export and verify rely on)
    assert cls.engine_files and set(cls.engine_files) <= {p.name for p in build.artifacts}
    loaded = cls.load_artifact(tmp_path, batch=3, device="cpu")
    np.testing.assert_allclose(loaded.infer(feed)[0], ref, rtol=1e-4, atol=1e-5)
    fn = build.runtime.bind(feed)
    fn()
    build.runtime.synchronize()
    # a CPU engine has no host<->device copies to time apart, and is timed by the host clock
    assert build.runtime.bind_host(feed) is None and build.runtime.timing_stream() is None


def test_onnxruntime_io_binding_gives_the_session_outputs(source, fast_target, tmp_path):
    """The I/O-binding call (what is timed on CUDA: inputs placed once, outputs left on the device), on the CPU."""
    from planner.backends.onnxruntime import OrtRuntime, make_session

    build = registry.get("onnxruntime")().compile(source, TrialConfig("onnxruntime", 4), fast_target, tmp_path)
    feed = source.example_inputs(4, seed=3)
    bound = OrtRuntime(make_session(tmp_path / "model.onnx", {}, fast_target), "cpu", iobinding=True)
    bound.bind(feed)()
    np.testing.assert_allclose(bound.bound_outputs()[0], build.runtime.infer(feed)[0], rtol=1e-6, atol=1e-7)
    assert OrtRuntime(bound.session, "cuda").iobinding and not OrtRuntime(bound.session).iobinding


def test_only_profile_backends_are_given_the_searched_batch_sizes():
    from planner.measure.jobs import TrialJob
    from planner.measure.worker import compile_kwargs

    job = TrialJob(spec={}, target={}, cache_dir="", config={}, workdir="", reference="", batch_sizes=[1, 8, 32])
    assert compile_kwargs(registry.get("tensorrt"), job) == {"batch_sizes": [1, 8, 32]}
    assert compile_kwargs(registry.get("onnxruntime"), job) == {}
    assert compile_kwargs(registry.get("tensorrt"), TrialJob(spec={}, target={}, cache_dir="", config={}, workdir="",
                                                             reference="")) == {}


def test_check_rejects_infeasible_combinations(fast_target):
    cls = registry.get("torch")
    from planner.config import QuantConfig

    assert "scheme" in cls.check(TrialConfig("torch", 1, quant=QuantConfig("int8_static")), fast_target, "torch")
    fp32_only = fast_target.model_copy(update={"precisions": ["fp32"]})
    assert "precision int8" in cls.check(TrialConfig("torch", 1, quant=QuantConfig("int8_dynamic")), fp32_only, "torch")
    assert "ONNX" in cls.check(TrialConfig("torch", 1), fast_target, "onnx")
    ort = registry.get("onnxruntime")
    assert ort.check(TrialConfig("onnxruntime", 1), fast_target, "onnx") is None


def test_unknown_backend_lists_choices():
    from planner.errors import ConfigError

    with pytest.raises(ConfigError, match="did you mean 'onnxruntime'"):
        registry.get("onnxrt")
