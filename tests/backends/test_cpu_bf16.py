"""bf16 on the CPU through the torch backends (module cast; oneDNN picks AVX512-BF16/AMX kernels where the CPU has
them), and the error a hand-written bf16 config gets on a target without bf16."""

import numpy as np
import pytest

from planner.backends import registry
from planner.config import QuantConfig, TrialConfig
from planner.errors import CandidateFailed
from planner.model import parse_model
from planner.source import ModelSource
from planner.target import load_target


def _bf16_cpu():
    t = load_target("cpu")
    return t.model_copy(update={"name": "cpu-amx", "precisions": t.precisions + ["bf16"], "threads": 1})


def test_torch_bf16_builds_on_cpu_and_matches_fp32(tmp_path):
    import torch

    source = ModelSource(parse_model("tiny-mlp"), tmp_path / "cache")
    cfg = TrialConfig("torch", 4, quant=QuantConfig("bf16"))
    cls = registry.get("torch")
    assert cls.runs_scheme("bf16", "cpu") and registry.get("torch_compile").runs_scheme("bf16", "cpu")
    assert cls.check(cfg, _bf16_cpu(), source.format) is None
    build = cls().compile(source, cfg, _bf16_cpu(), tmp_path / "w")
    assert build.ok, build.error
    feed = source.example_inputs(4, seed=5)
    with torch.inference_mode():
        ref = source.base_module()(*[torch.from_numpy(v) for v in feed.values()]).numpy()
    out = build.runtime.infer(feed)[0]
    assert out.dtype == np.float32
    assert next(build.runtime.module.parameters()).dtype == torch.bfloat16  # it really ran in bf16 ...
    assert not np.array_equal(out, ref)
    np.testing.assert_allclose(out, ref, rtol=5e-2, atol=5e-2)  # ... within bf16's 8-bit mantissa


def test_hand_written_bf16_config_on_a_target_without_bf16_names_its_precisions():
    from planner.measure.worker import runnable_backend

    generic = load_target("cpu")
    cfg = TrialConfig("torch", 1, quant=QuantConfig("bf16"))
    want = "bf16 needs precision bf16, which target 'cpu' lacks (its precisions: fp32, int8, int4)"
    assert registry.get("torch").check(cfg, generic, "torch") == want
    with pytest.raises(CandidateFailed) as e:
        runnable_backend(cfg, generic, "torch")
    assert want in str(e.value)
