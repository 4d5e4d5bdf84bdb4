"""ModelSource: inputs, data, transforms and the cached ONNX export (real torch/ONNX Runtime)."""

import numpy as np
import pytest
from support import DATA

from planner.config import PruneConfig, TrialConfig
from planner.errors import ConfigError
from planner.model import parse_model
from planner.source import ModelSource


def test_inputs_from_example_inputs_function(tmp_path):
    src = ModelSource(parse_model(f"{DATA / 'models.py'}:tiny"), tmp_path)
    assert [(i.name, i.shape, i.dtype) for i in src.inputs] == [("x", (16,), "float32")]
    a, b = src.sample_inputs(4, seed=1), src.sample_inputs(4, seed=1)
    assert np.array_equal(a["x"], b["x"]) and a["x"].shape == (4, 16)
    assert src.synthetic


def test_pruning_shrinks_params_and_flops_and_export_is_cached(tmp_path):
    src = ModelSource(parse_model("tiny-mlp"), tmp_path)
    cfg = TrialConfig("onnxruntime", 1, prune=PruneConfig("l1", 0.5, 8))
    m = src.torch_module(cfg)
    info = src.transform_info
    assert info["prune_params_after"] < 0.6 * info["prune_params_before"]
    assert info["flops_after"] < 0.6 * info["flops_before"]
    assert src.torch_module(cfg) is m  # transformed once per config
    p1 = src.onnx_path(cfg)
    assert src.transform_info["onnx_export_cached"] == 0
    again = ModelSource(parse_model("tiny-mlp"), tmp_path)
    assert again.onnx_path(cfg) == p1 and again.transform_info["onnx_export_cached"] == 1
    assert again.onnx_path(TrialConfig("onnxruntime", 1)) != p1


def test_data_from_npz_and_function(tmp_path):
    x = np.random.default_rng(0).standard_normal((10, 16)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, labels=np.arange(10) % 4)
    src = ModelSource(parse_model(f"{DATA / 'models.py'}:tiny", data=str(tmp_path / "d.npz")), tmp_path)
    got = src.sample_inputs(12)
    assert np.array_equal(got["x"][:10], x) and np.array_equal(got["x"][10:], x[:2]) and not src.synthetic
    fn = tmp_path / "data.py"
    fn.write_text("import numpy as np\ndef make():\n    return {'y': np.zeros((3, 16), np.float32)}\n")
    bad = ModelSource(parse_model(f"{DATA / 'models.py'}:tiny", data=f"{fn}:make"), tmp_path)
    with pytest.raises(ConfigError, match=r"missing arrays \['x'\]"):
        bad.data()


CALIB_MODEL = """
import numpy as np
import torch

class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(x)

def net():
    return Net()

def example_inputs(batch_size):
    return (torch.zeros(batch_size, 4),)

def dataset():
    return {"x": np.zeros((6, 4), np.float32)}

def calibration_dataset():
    return {"x": np.ones((3, 4), np.float32)}
"""


def test_calibration_inputs_come_from_the_held_out_set(tmp_path):
    f = tmp_path / "m.py"
    f.write_text(CALIB_MODEL)
    src = ModelSource(parse_model(f"{f}:net"), tmp_path)
    assert src.calibration_source == "held-out"
    got = src.calibration_inputs(5)["x"]
    assert got.shape == (5, 4) and np.all(got == 1)  # cycles over the 3 held-out rows, never the evaluation zeros
    assert np.all(src.sample_inputs(5)["x"] == 0)


def test_without_a_calibration_set_the_shared_source_is_named(tmp_path):
    f = tmp_path / "m.py"
    f.write_text(CALIB_MODEL.replace("def calibration_dataset", "def _unused"))
    src = ModelSource(parse_model(f"{f}:net"), tmp_path)
    assert src.calibration_source == "evaluation"
    assert np.all(src.calibration_inputs(2)["x"] == 0)
    assert ModelSource(parse_model(f"{DATA / 'models.py'}:tiny"), tmp_path).calibration_source == "synthetic"


def test_calibration_set_missing_an_input_is_a_config_error(tmp_path):
    f = tmp_path / "m.py"
    f.write_text(CALIB_MODEL.replace('return {"x": np.ones((3, 4), np.float32)}', 'return {"y": np.ones((3, 4))}'))
    with pytest.raises(ConfigError, match=r"calibration_dataset\(\) lacks arrays \['x'\]"):
        ModelSource(parse_model(f"{f}:net"), tmp_path).calibration_inputs(2)


def test_int8_static_records_its_calibration_source(tmp_path):
    from planner.backends.onnxruntime import quantized_onnx
    from planner.config import QuantConfig
    from planner.config import freeze_options

    f = tmp_path / "m.py"
    f.write_text(CALIB_MODEL)
    src = ModelSource(parse_model(f"{f}:net"), tmp_path / "cache")
    cfg = TrialConfig("onnxruntime", 1, quant=QuantConfig("int8_static", freeze_options({"calibrate_method": "minmax"})))
    info = quantized_onnx(src, cfg, src.onnx_path(), tmp_path / "q.onnx")
    assert info["calibration_data"] == "held-out" and info["calibration_held_out"] == 1.0
