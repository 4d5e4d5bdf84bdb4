"""Distillation recovery after real pruning, on tiny real models."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from planner.config import DistillConfig, PruneConfig, QuantConfig
from planner.errors import ConfigError
from planner.transforms.distill import distill
from planner.transforms.prune import prune
from planner.transforms.quantize import quantize_torch


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models: one intra-op thread (2 threads on a loaded 2-core box is ~70x slower)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x):
        return F.relu(x + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))


class TinyResNet(nn.Module):
    def __init__(self, c=32):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU())
        self.blocks = nn.Sequential(Block(c), Block(c))
        self.drop = nn.Dropout(0.1)
        self.fc = nn.Linear(c, 10)

    def forward(self, x):
        return self.fc(self.drop(self.blocks(self.stem(x)).mean((2, 3))))


class Attention(nn.Module):
    def __init__(self, d=32, heads=4):
        super().__init__()
        self.num_heads, self.head_dim = heads, d // heads
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))

    def forward(self, x):
        B, T, _ = x.shape

        def split(t):
            return t.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)

        y = F.scaled_dot_product_attention(split(self.q(x)), split(self.k(x)), split(self.v(x)))
        return self.o(y.transpose(1, 2).reshape(B, T, self.num_heads * self.head_dim))


class FFN(nn.Module):
    def __init__(self, d=32, hidden=64):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d, hidden), nn.Linear(hidden, d)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class TinyBert(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(50, 32)
        self.attn, self.ffn, self.ln1, self.ln2 = Attention(), FFN(), nn.LayerNorm(32), nn.LayerNorm(32)

    def forward(self, ids):
        x = self.emb(ids)
        x = self.ln1(x + self.attn(x))
        return self.ln2(x + self.ffn(x))  # an embedding-style output (B, T, 32)


def _calib(shape, n=64, seed=0):
    return {"x": np.random.default_rng(seed).standard_normal((n, *shape)).astype(np.float32)}


def test_distill_after_half_pruning_lowers_loss_and_keeps_bn_stats():
    torch.manual_seed(0)
    teacher = TinyResNet().eval()
    calib = _calib((3, 12, 12))
    student = prune(copy.deepcopy(teacher), PruneConfig("l1", 0.5), (torch.randn(2, 3, 12, 12),))
    student.requires_grad_(False)
    bn_before = {k: v.clone() for k, v in student.state_dict().items() if "running" in k}
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}

    res = distill(student, teacher, DistillConfig(steps=40, lr=3e-3), calib, ["x"])

    assert res["distill_steps"] == 40 and "skipped" not in res
    assert res["distill_loss_after"] < 0.8 * res["distill_loss_before"], res
    assert not student.training and not any(m.training for m in student.modules())
    assert not any(p.requires_grad for p in student.parameters())  # flags restored
    for k, v in student.state_dict().items():
        if "running" in k:
            assert torch.equal(v, bn_before[k]), k  # BN statistics untouched
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, teacher_before[k]), k  # teacher untouched


def test_distill_head_pruned_transformer_with_int_inputs():
    torch.manual_seed(0)
    teacher = TinyBert().eval()
    ids = torch.randint(0, 50, (2, 6))
    student = prune(copy.deepcopy(teacher), PruneConfig("l2", 0.5), (ids,))
    assert student.attn.num_heads == 2
    calib = {"ids": np.random.default_rng(0).integers(0, 50, (48, 6)).astype(np.int64)}
    res = distill(student, teacher, DistillConfig(steps=30, lr=3e-3), calib, ["ids"])
    assert res["distill_loss_after"] < res["distill_loss_before"], res


def test_quantized_student_is_skipped_untouched():
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)).eval()
    student = quantize_torch(copy.deepcopy(teacher), QuantConfig("int8_dynamic"), (torch.randn(2, 16),))
    x = torch.randn(3, 16)
    ref = student(x)
    res = distill(student, teacher, DistillConfig(steps=5, lr=1e-2), _calib((16,)), ["x"])
    assert "quantized" in res["skipped"] and res["distill_steps"] == 0
    assert res["distill_loss_before"] == res["distill_loss_after"]
    torch.testing.assert_close(student(x), ref)


def test_zero_steps_and_bad_inputs():
    teacher = nn.Linear(16, 4).eval()
    student = copy.deepcopy(teacher)
    res = distill(student, teacher, DistillConfig(steps=0), _calib((16,)), ["x"])
    assert res["skipped"] == "steps=0" and res["distill_loss_before"] == pytest.approx(0.0)
    with pytest.raises(ConfigError):
        distill(student, teacher, DistillConfig(steps=3), _calib((16,)), ["ids"])
    with pytest.raises(ConfigError, match="batch"):
        distill(student, teacher, DistillConfig(steps=3, batch=0), _calib((16,)), ["x"])


def test_time_cap_stops_training_and_records_the_steps_done():
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 4)).eval()
    student = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4))
    res = distill(student, teacher, DistillConfig(steps=10**7, lr=1e-3, batch=8, max_seconds=0.3), _calib((16,)), ["x"])
    assert res["distill_stopped"] == "max_seconds"
    assert 0 < res["distill_steps"] < 10**7
    assert res["distill_loss_after"] < res["distill_loss_before"]
    uncapped = distill(copy.deepcopy(student), teacher, DistillConfig(steps=5, lr=1e-3, batch=8, max_seconds=60), _calib((16,)), ["x"])
    assert uncapped["distill_steps"] == 5 and "distill_stopped" not in uncapped


class MaskedEncoder(nn.Module):
    """Token ids + attention mask -> mean of the attended positions' states (B, 32), like MiniLM."""

    def __init__(self, pool_padding: bool = False):
        super().__init__()
        self.emb, self.ffn, self.pool_padding = nn.Embedding(50, 32), FFN(), pool_padding
        self.widths: list[int] = []

    def forward(self, ids, attention_mask):
        self.widths.append(ids.shape[1])
        x = self.emb(ids)
        x = x + self.ffn(x)
        if self.pool_padding:  # the padding columns count: cutting them changes the output
            return x.mean(1)
        m = attention_mask.unsqueeze(-1).float()
        return (x * m).sum(1) / m.sum(1).clamp(min=1)


def _padded(n=48, width=24, seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, 9, n)  # every sample ends well before the padded width
    ids = np.zeros((n, width), np.int64)
    mask = np.zeros((n, width), np.int64)
    for i, t in enumerate(lengths):
        ids[i, :t] = rng.integers(1, 50, t)
        mask[i, :t] = 1
    return {"ids": ids, "attention_mask": mask}


def test_padded_token_batches_are_cut_to_their_longest_sample():
    torch.manual_seed(0)
    teacher = MaskedEncoder().eval()
    student = prune(copy.deepcopy(teacher), PruneConfig("l2", 0.5), (torch.ones(2, 24, dtype=torch.int64),) * 2)
    student.widths.clear()
    res = distill(student, teacher, DistillConfig(steps=20, lr=3e-3, batch=8), _padded(), ["ids", "attention_mask"])
    assert res["distill_loss_after"] < res["distill_loss_before"], res
    assert max(student.widths) <= 8 and 0 < res["distill_seq_trim"] <= 8 / 24, (set(student.widths), res)


def test_padding_is_kept_where_the_output_depends_on_it():
    torch.manual_seed(0)
    teacher = MaskedEncoder(pool_padding=True).eval()
    student = copy.deepcopy(teacher)
    student.widths.clear()
    res = distill(student, teacher, DistillConfig(steps=5, lr=1e-3, batch=8), _padded(), ["ids", "attention_mask"])
    assert res["distill_seq_trim"] == 1.0 and set(student.widths) == {24}, res


def test_the_learning_rate_is_annealed_over_each_call():
    """Each call anneals ``cfg.lr`` to 0 on a half cosine (the default schedule); "constant" keeps it."""
    from planner.transforms.distill import SCHEDULE, lr_at

    assert SCHEDULE == "cosine"
    assert lr_at(0, 100, 3e-3) == pytest.approx(3e-3)
    assert lr_at(50, 100, 3e-3) == pytest.approx(1.5e-3)
    assert lr_at(99, 100, 3e-3) < 1e-6
    assert all(lr_at(i + 1, 100, 1.0) <= lr_at(i, 100, 1.0) for i in range(99))
    assert lr_at(99, 100, 3e-3, "constant") == 3e-3


def test_each_step_runs_at_the_scheduled_learning_rate():
    """The optimizer's learning rate at every step of a call is `lr_at`'s (observed through torch's global
    optimizer hook, in the real training loop); an unknown schedule is a one-line error naming the valid ones.
    (Whether annealing makes better students is a benchmark's question: experiments/student_stages.py.)"""
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    from planner.transforms.distill import lr_at

    torch.manual_seed(0)
    teacher = TinyResNet().eval()
    calib = _calib((3, 12, 12), n=16)
    pruned = prune(copy.deepcopy(teacher), PruneConfig("l1", 0.5), (torch.randn(2, 3, 12, 12),))
    cfg = DistillConfig(steps=12, lr=1e-2, batch=4)
    for schedule in ("cosine", "constant"):
        seen: list[float] = []
        handle = register_optimizer_step_pre_hook(lambda opt, args, kwargs: seen.append(opt.param_groups[0]["lr"]))
        try:
            res = distill(copy.deepcopy(pruned), teacher, cfg, calib, ["x"], schedule=schedule)
        finally:
            handle.remove()
        assert res["distill_schedule"] == schedule and res["distill_steps"] == 12
        assert seen == pytest.approx([lr_at(i, 12, 1e-2, schedule) for i in range(12)])
    assert seen[-1] == 1e-2 and 0 < [lr_at(i, 12, 1e-2) for i in range(12)][-1] < 1e-3
    with pytest.raises(ConfigError, match="valid: cosine, constant"):
        distill(copy.deepcopy(pruned), teacher, cfg, calib, ["x"], schedule="linear")
