"""int4 weight-only linears on torch's CPU int4 kernel (planner.transforms.int4), on tiny models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from planner.config import QuantConfig, freeze_options
from planner.errors import CandidateFailed, ConfigError, FailReason
from planner.transforms import quantize as Q
from planner.transforms.int4 import Int4WeightOnlyLinear, _quantize_groups, quantize_int4


def _q(**opts) -> QuantConfig:
    return QuantConfig("int4_weight_only", freeze_options(opts))


def _cos(a, b) -> float:
    a, b = a.detach().double().ravel(), b.detach().double().ravel()
    return float(a @ b / (a.norm() * b.norm()))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.up, self.down, self.head = nn.Linear(64, 256), nn.Linear(256, 64), nn.Linear(64, 10)  # head: 10 % 16 != 0

    def forward(self, x):
        return self.head(torch.relu(self.down(torch.relu(self.up(x)))))


def test_group_quantization_round_trips_within_half_a_step():
    w = torch.randn(32, 128)
    q, sz = _quantize_groups(w, 32)
    assert q.dtype == torch.int32 and int(q.min()) >= 0 and int(q.max()) <= 15 and sz.shape == (4, 32, 2)
    scale, zero = sz[..., 0].t().repeat_interleave(32, 1), sz[..., 1].t().repeat_interleave(32, 1)
    deq = (q.float() - 8) * scale + zero
    assert float((deq - w).abs().max()) <= float(scale.max()) / 2 + 1e-5


def test_fitting_linears_become_int4_and_the_rest_stay_float():
    torch.manual_seed(0)
    m = Net().eval()
    x = torch.randn(5, 3, 64)  # leading dims beyond the batch are kept
    ref = m(x)
    assert quantize_int4(m, 64) == (2, 1)
    assert isinstance(m.up, Int4WeightOnlyLinear) and isinstance(m.down, Int4WeightOnlyLinear)
    assert type(m.head) is nn.Linear  # 10 output features: not a multiple of 16
    assert m.up.packed.dtype == torch.uint8 and m.up.packed.numel() == 64 * 256 // 2  # 4 bits per weight
    assert m.up.nibbles.numel() == 64 * 256 // 2  # and the plain copy the prefill path dequantizes
    with torch.no_grad():
        got = m(x)
    assert got.shape == ref.shape and got.dtype == torch.float32
    assert _cos(ref, got) > 0.99


def test_prefill_sized_inputs_use_the_dequantized_weight_and_agree_with_the_kernel():
    from planner.transforms.int4 import KERNEL_MAX_ROWS

    torch.manual_seed(0)
    lin = nn.Linear(64, 32)
    layer = Int4WeightOnlyLinear(lin, 32)
    q, sz = _quantize_groups(lin.weight, 32)
    scale, zero = sz[..., 0].t().repeat_interleave(32, 1), sz[..., 1].t().repeat_interleave(32, 1)
    expect = (q.float() - 8) * scale.bfloat16().float() + zero.bfloat16().float()
    torch.testing.assert_close(layer.dequantized(), expect)  # nibbles unpack to the same codes
    x = torch.randn(KERNEL_MAX_ROWS * 3, 64)
    with torch.no_grad():
        big = layer(x)  # > KERNEL_MAX_ROWS rows: float GEMM on the dequantized weight
        small = torch.cat([layer(c) for c in x.split(KERNEL_MAX_ROWS)])  # int4 kernel, bf16
    assert big.dtype == torch.float32 and big.shape == (48, 32)
    assert _cos(big, small) > 0.9999 and float((big - small).abs().max()) < 0.05


def test_torch_compile_runs_the_int4_kernel_like_eager():
    torch.manual_seed(0)
    m = Net().eval()
    quantize_int4(m, 32)
    x = torch.randn(4, 64)
    with torch.no_grad():
        eager = m(x)
        compiled = torch.compile(m)(x)
    np.testing.assert_allclose(compiled.numpy(), eager.numpy(), rtol=0.02, atol=0.02)


def test_quantize_torch_records_what_it_did_and_refuses_a_no_op():
    torch.manual_seed(0)
    m = Q.quantize_torch(Net().eval(), _q(group_size=64), (torch.randn(2, 64),))
    assert Q.quant_info(m) == {"scheme": "int4_weight_only", "group_size": 64, "layers_quantized": 2,
                               "layers_kept_float": 1}
    info: dict = {}
    Q.record_quant_info(m, info)
    assert info == {"quant_group_size": 64, "quant_layers_quantized": 2, "quant_layers_kept_float": 1}
    odd = nn.Sequential(nn.Linear(48, 10)).eval()  # 48 % 32 != 0 and 10 % 16 != 0: nothing fits
    with pytest.raises(CandidateFailed, match="none of the 1 nn.Linear layers fits the int4 CPU kernel") as e:
        Q.quantize_torch(odd, _q(group_size=32), (torch.randn(2, 48),))
    assert e.value.reason is FailReason.UNSUPPORTED


def test_bad_group_size_is_a_config_error_naming_the_choices():
    with pytest.raises(ConfigError, match=r"quant.options.group_size=16 .*valid values: 128, 32, 64, 256"):
        Q.validate(_q(group_size=16))
    with pytest.raises(ValueError, match="group_size 16"):
        quantize_int4(Net(), 16)


def test_int4_is_a_cpu_scheme_sampled_only_where_the_target_lists_int4(fast_target, tmp_path):
    import optuna

    from planner.space import load_space, sample

    (tmp_path / "i4.yaml").write_text("name: i4\nbackends:\n  torch: {}\nquantize:\n  schemes: [none, int4_weight_only]\n"
                            "  options:\n    int4_weight_only:\n      group_size: [32, 64]\n")
    space = load_space(tmp_path / "i4.yaml")
    seen = set()
    for target, expect in ((fast_target, {"none"}), (fast_target.model_copy(update={"precisions": ["fp32", "int4"]}),
                                                      {"none", "int4_weight_only"})):
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        seen = set()
        for _ in range(20):
            t = study.ask()
            seen.add(sample(t, space, target, "torch").quant.scheme)
            study.tell(t, 0.0)
        assert seen == expect
