"""The torch backends' shared pieces: the exported artifact follows the module's device, and the
``memory_format`` option reaches the module and its inputs (real torch, tiny models)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from support import DATA

from planner.backends import registry
from planner.backends._torch_runtime import module_device, save_exported_program
from planner.config import TrialConfig, freeze_options
from planner.model import InputSpec, parse_model
from planner.source import ModelSource


class _SameDevice(torch.nn.Module):
    """Fails to trace unless its input is where its weights are (as CUDA kernels do)."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 2)

    def forward(self, x):
        if x.device != self.fc.weight.device:
            raise RuntimeError(f"input on {x.device}, weights on {self.fc.weight.device}")
        return self.fc(x)


def test_exported_program_takes_its_inputs_where_the_module_is(tmp_path):
    """GPU trials had no artifact: the module was on CUDA and the export's example inputs on the host.
    A module on the `meta` device stands in for one off the host."""
    module = _SameDevice().to("meta")
    assert module_device(module) == "meta"
    example = {"x": np.ones((2, 4), np.float32)}
    note = save_exported_program(module, example, tmp_path / "model.pt2")
    assert note is None and (tmp_path / "model.pt2").is_file()
    ep = torch.export.load(str(tmp_path / "model.pt2"))
    assert {str(a.device) for a in ep.example_inputs[0]} == {"meta"}


@pytest.fixture
def conv_source(tmp_path):
    """A fresh source per test: a worker builds one config, and the backends convert its module in place."""
    spec = parse_model(f"{DATA / 'models.py'}:tiny_conv", inputs=(InputSpec("x", (3, 8, 8), "float32", 0, 2),))
    return ModelSource(spec, tmp_path / "cache")


@pytest.mark.parametrize("backend", ["torch", "torch_compile"])
@pytest.mark.parametrize("fmt", ["channels_last", "contiguous"])
def test_memory_format_option_reaches_the_module_and_its_inputs(conv_source, fast_target, tmp_path, backend, fmt):
    cls = registry.get(backend)
    opts = {"memory_format": fmt} if backend == "torch" else {"memory_format": fmt, "mode": "default"}
    cfg = TrialConfig(backend, 2, backend_options=freeze_options(opts))
    assert cls.check(cfg, fast_target, "torch") is None
    build = cls().compile(conv_source, cfg, fast_target, tmp_path)
    assert build.ok, build.error
    rt = build.runtime
    module = getattr(rt.module, "_orig_mod", rt.module)  # torch.compile wraps the module it was given
    weight = module.conv.weight
    channels_last = fmt == "channels_last"
    assert weight.is_contiguous(memory_format=torch.channels_last) == channels_last
    assert weight.is_contiguous() != channels_last
    assert build.info["memory_format"] == fmt
    feed = conv_source.example_inputs(2, seed=1)
    (x,) = rt._tensors(feed)
    assert x.is_contiguous(memory_format=torch.channels_last) == channels_last
    with torch.inference_mode():
        ref = ModelSource(conv_source.spec, tmp_path / "cache").base_module()(torch.from_numpy(feed["x"])).numpy()
    np.testing.assert_allclose(rt.infer(feed)[0], ref, rtol=1e-4, atol=1e-5)
    assert [Path(p).name for p in build.artifacts] == ["model.pt2"]  # the exported program, in either layout


@pytest.fixture
def mlp_source(tmp_path):
    return ModelSource(parse_model(f"{DATA / 'models.py'}:tiny"), tmp_path / "cache")


@pytest.mark.parametrize("backend", ["torch", "torch_compile"])
def test_dynamic_int8_leaves_a_torchscript_engine_that_loads_and_matches(mlp_source, fast_target, tmp_path, backend):
    """torch.export cannot hold torch's dynamic int8 Linear (its weights are a packed object): the backend saves
    the module as TorchScript (`fallback_engine`), which `load_artifact` runs with the same outputs, at the built
    batch and another one; an fp32 trial still leaves a torch.export program."""
    from planner.config import QuantConfig

    cls = registry.get(backend)
    opts = {} if backend == "torch" else {"mode": "default"}
    quant = QuantConfig("int8_dynamic", freeze_options({"per_channel": True, "reduce_range": False}))
    cfg = TrialConfig(backend, 2, quant=quant, backend_options=freeze_options(opts))
    (tmp_path / "q").mkdir(), (tmp_path / "f").mkdir()  # a trial's work dir exists before it builds
    build = cls().compile(mlp_source, cfg, fast_target, tmp_path / "q")
    assert build.ok, build.error
    assert [Path(p).name for p in build.artifacts] == [cls.fallback_engine] == ["model.ts"]
    assert "torch.export failed" in build.info["artifact_note"] and "TorchScript" in build.info["artifact_note"]
    loaded = cls.load_artifact(tmp_path / "q", 2, "cpu")
    assert loaded.dynamic_batch is True
    for b in (2, 5):
        feed = mlp_source.example_inputs(b, seed=3)
        np.testing.assert_allclose(loaded.infer(feed)[0], build.runtime.infer(feed)[0], rtol=1e-5, atol=1e-6)
    fp32 = cls().compile(mlp_source, TrialConfig(backend, 2, backend_options=freeze_options(opts)), fast_target,
                         tmp_path / "f")
    assert [Path(p).name for p in fp32.artifacts] == ["model.pt2"] and "artifact_note" not in fp32.info
    assert registry.by_engine_file("model.ts") is registry.get("torch")
