"""The benchmarks' "OpenVINO default" column (experiments/openvino_default.py): convert + compile_model(model, "CPU")
with no options, reached through the backend registry's plugin hook as the bench workers reach it."""

import sys

import numpy as np
import pytest
from support import ROOT

pytest.importorskip("openvino")
sys.path.insert(0, str(ROOT / "experiments"))

import openvino_default as OD  # noqa: E402


def test_openvino_default_is_a_worker_plugin_that_matches_fp32_with_no_options(tmp_path, monkeypatch):
    import torch

    from planner.backends import registry
    from planner.config import TrialConfig
    from planner.model import parse_model
    from planner.source import ModelSource
    from planner.target import load_target

    env = OD.worker_env({"PYTHONPATH": "/elsewhere", "PLANNER_BACKENDS": "fake=fake_backend:Fake"})
    assert env["PLANNER_BACKENDS"] == f"fake=fake_backend:Fake,{OD.PLUGIN}"
    assert env["PYTHONPATH"].split(":")[0].endswith("experiments") and env["PYTHONPATH"].endswith("/elsewhere")
    monkeypatch.setenv("PLANNER_BACKENDS", OD.PLUGIN)
    cls = registry.get(OD.NAME)
    assert cls is OD.OpenVINODefault and OD.missing_reason() is None

    source = ModelSource(parse_model("tiny-mlp"), tmp_path / "cache")
    cfg = TrialConfig(OD.NAME, 3)
    target = load_target("cpu")
    assert cls.check(cfg, target, "torch") is None
    build = cls().compile(source, cfg, target, tmp_path / "w")
    assert build.ok and build.info["model"] == str(source.onnx_path(cfg))  # the same ONNX file ORT fp32 runs
    chosen = build.info["ov.INFERENCE_PRECISION_HINT"]  # what OpenVINO picked by itself: f32, or bf16 on AMX CPUs
    feed = source.example_inputs(3, seed=4)
    with torch.inference_mode():
        ref = source.base_module()(*[torch.from_numpy(v) for v in feed.values()]).numpy()
    tol = 1e-4 if chosen == "f32" else 5e-2
    np.testing.assert_allclose(build.runtime.infer(feed)[0], ref, rtol=tol, atol=tol)
    build.runtime.bind(feed)()
    assert build.runtime.infer(source.example_inputs(5, seed=1))[0].shape[0] == 5  # dynamic batch, as exported
    s = OD.session(source.onnx_path(cfg))
    np.testing.assert_allclose(s.run(None, feed)[0], ref, rtol=tol, atol=tol)
