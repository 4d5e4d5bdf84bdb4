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
def test_backend_conformance(name, fast_target, tmp_path):
    """`planner.backends.conformance.run_conformance`: what a plugin package runs on its own backend too."""
    from planner.backends.conformance import run_conformance

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
    run_conformance(cls, tmp_path, fast_target)


def test_conformance_fails_a_backend_whose_reloaded_engine_differs(tmp_path, fast_target):
    """The suite can fail: a backend whose `load_artifact` gives other outputs than its build is caught."""
    from planner.backends.conformance import run_conformance
    from planner.backends.onnxruntime import OnnxRuntime

    class Drifting(OnnxRuntime):
        name = "drifting"

        @classmethod
        def load_artifact(cls, engine_dir, batch, device):
            rt = OnnxRuntime.load_artifact(engine_dir, batch, device)
            infer = rt.infer
            rt.infer = lambda feed: [o + 1.0 for o in infer(feed)]
            return rt

    with pytest.raises(AssertionError, match="reloaded by load_artifact"):
        run_conformance(Drifting, tmp_path, fast_target)


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
