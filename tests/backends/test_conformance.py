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
        assert cls.install_hint in avail.detail
        pytest.skip(f"{name} not installed here: {avail.detail}")
    if name == "tvm":
        pytest.skip("covered by tests/backends/test_tvm.py")
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
    fn = build.runtime.bind(feed)
    fn()
    build.runtime.synchronize()


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
