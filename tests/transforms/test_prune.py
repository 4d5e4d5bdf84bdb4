"""Pruning on tiny real models: a residual conv net with BN, an MLP and a BERT-like encoder."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from planner.config import PruneConfig
from planner.errors import CandidateFailed, ConfigError
from planner.transforms import prune as P


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models: one intra-op thread (2 threads on a loaded 2-core box is ~70x slower)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# --------------------------------------------------------------------------- tiny models


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        idt = x if self.down is None else self.down(x)
        return F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))) + idt)


class TinyResNet(nn.Module):
    def __init__(self, width: int = 32, classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.layer1 = nn.Sequential(Block(width, width), Block(width, width))
        self.layer2 = nn.Sequential(Block(width, 2 * width, 2), Block(2 * width, 2 * width))
        self.fc = nn.Linear(2 * width, classes)

    def forward(self, x):
        return self.fc(self.layer2(self.layer1(self.stem(x))).mean((2, 3)))


class Attention(nn.Module):
    def __init__(self, d: int, heads: int):
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
    def __init__(self, d: int, hidden: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d, hidden), nn.Linear(hidden, d)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class Layer(nn.Module):
    def __init__(self, d: int, heads: int, hidden: int):
        super().__init__()
        self.attn, self.ffn = Attention(d, heads), FFN(d, hidden)
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)

    def forward(self, x):
        x = self.ln1(x + self.attn(x))
        return self.ln2(x + self.ffn(x))


class Encoder(nn.Module):
    def __init__(self, d, heads, hidden, n):
        super().__init__()
        self.layers = nn.ModuleList(Layer(d, heads, hidden) for _ in range(n))

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


class TinyBert(nn.Module):
    def __init__(self, vocab=100, d=32, heads=4, hidden=64, n=2, classes=3):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.encoder = Encoder(d, heads, hidden, n)
        self.head = nn.Linear(d, classes)

    def forward(self, ids):
        return self.head(self.encoder(self.emb(ids))[:, 0])


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(64, 128), nn.Linear(128, 128), nn.Linear(128, 10)

    def forward(self, x):
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


def _resnet():
    torch.manual_seed(0)
    return TinyResNet().eval(), (torch.randn(2, 3, 16, 16),)


def _bert():
    torch.manual_seed(0)
    return TinyBert().eval(), (torch.randint(0, 100, (2, 8)),)


def _one_thread_ort():
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    return so


def _convs(m):
    return [x for x in m.modules() if isinstance(x, nn.Conv2d)]


# --------------------------------------------------------------------------- structured channels


def test_l1_halves_resnet_runs_and_exports_to_onnx(tmp_path):
    import onnxruntime as ort

    model, ex = _resnet()
    before = P.param_count(model)
    out = P.prune(model, PruneConfig("l1", 0.5), ex)
    after = P.param_count(out)
    assert after < 0.4 * before, (before, after)  # channels halve -> conv params ~quarter
    assert out.fc.out_features == 10  # classifier outputs never pruned
    assert out.fc.in_features == 32
    info = P.prune_info(out)
    assert info["params_before"] == before and info["params_after"] == after and not info["size_only"]
    # residual-coupled channels stay consistent
    for blk in list(out.layer1) + list(out.layer2):
        assert blk.conv2.out_channels == blk.bn2.num_features
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        ref = out(x).numpy()
    assert ref.shape == (3, 10)

    path = tmp_path / "pruned.onnx"
    torch.onnx.export(out, ex, str(path), dynamo=True, input_names=["x"], verbose=False,
                      dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
    got = ort.InferenceSession(str(path), _one_thread_ort(), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})[0]
    np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-4)


def test_l2_round_to_8_gives_multiples_of_8():
    model, ex = _resnet()
    out = P.prune(model, PruneConfig("l2", 0.3, round_to=8), ex)
    chans = [c.out_channels for c in _convs(out)]
    assert all(c % 8 == 0 for c in chans), chans
    assert max(chans) < 64  # something was pruned
    assert out.fc.in_features % 8 == 0
    assert out(torch.randn(1, 3, 16, 16)).shape == (1, 10)


@pytest.mark.parametrize("ratio,round_to", [(0.1, 16), (0.3, 8), (0.3, 16), (0.6, 16), (0.45, 1)])
def test_each_layer_keeps_its_channels_rounded_up_as_planner_declares(ratio, round_to):
    """Every pruned conv keeps `round_keep(n, ratio, round_to)` of its n channels (rounded up, what the space and
    the hopeless rule assume), not torch-pruning's own rounding (down: 0.1 at round_to 16 kept 16 of 32 channels,
    and 0.6 at 16 kept all 32 of a layer, where 13 round down to none)."""
    from planner.config import round_keep

    model, ex = _resnet()
    widths = {name: c.out_channels for name, c in model.named_modules() if isinstance(c, nn.Conv2d)}
    out = P.prune(model, PruneConfig("l1", ratio, round_to=round_to), ex)
    got = {name: c.out_channels for name, c in out.named_modules() if isinstance(c, nn.Conv2d)}
    assert got == {name: round_keep(n, ratio, round_to) for name, n in widths.items()}, (got, widths)
    assert out(torch.randn(1, 3, 16, 16)).shape == (1, 10)


def test_mlp_structured_keeps_io_width():
    torch.manual_seed(0)
    model = MLP().eval()
    x = torch.randn(4, 64)
    out = P.prune(model, PruneConfig("l1", 0.5), (x,))
    assert out.fc1.in_features == 64 and out.fc3.out_features == 10
    assert out.fc1.out_features == 64 and out.fc2.out_features == 64
    assert out(x).shape == (4, 10)


def test_structured_under_no_grad_with_frozen_params():
    model, ex = _resnet()
    model.requires_grad_(False)
    before = P.param_count(model)
    with torch.no_grad():
        out = P.prune(model, PruneConfig("l1", 0.5), ex)
    assert P.param_count(out) < 0.4 * before
    assert not any(p.requires_grad for p in out.parameters())
    assert not out.training


# --------------------------------------------------------------------------- transformer heads / FFN


def test_head_pruning_shrinks_heads_and_ffn_and_exports():
    model, ex = _bert()
    attn0 = model.encoder.layers[0].attn
    with torch.no_grad():  # make head 3 of layer 0 clearly the most important one
        for lin in (attn0.q, attn0.k, attn0.v):
            lin.weight[3 * 8:4 * 8] *= 10
        kept = attn0.q.weight[3 * 8:4 * 8].clone()
    before = P.param_count(model)
    out = P.prune(model, PruneConfig("l1", 0.5, round_to=8), ex)
    assert P.param_count(out) < 0.8 * before
    for layer in out.encoder.layers:
        assert layer.attn.num_heads == 2
        assert layer.attn.q.out_features == layer.attn.k.out_features == layer.attn.v.out_features == 16
        assert layer.attn.o.in_features == 16 and layer.attn.o.out_features == 32
        assert layer.ffn.fc1.out_features == 32 and layer.ffn.fc2.in_features == 32
        assert layer.ffn.fc1.out_features % 8 == 0
    # the high-norm head survived (kept heads stay in order, so it is the last one)
    assert torch.equal(out.encoder.layers[0].attn.q.weight[8:16], kept)
    info = P.prune_info(out)
    assert info["kind"] == "heads+ffn" and info["heads_before"] == 8 and info["heads_after"] == 4
    ids = torch.randint(0, 100, (3, 5))
    assert out(ids).shape == (3, 3)
    ep = torch.export.export(out, (ids,))
    torch.testing.assert_close(ep.module()(ids), out(ids))


def test_head_pruning_keeps_at_least_one_head_and_rounded_neurons():
    model, ex = _bert()
    out = P.prune(model, PruneConfig("heads", 0.95, round_to=8), ex)
    for layer in out.encoder.layers:
        assert layer.attn.num_heads == 1
        assert layer.ffn.fc1.out_features == 8
    assert out(ex[0]).shape == (2, 3)


def test_head_pruning_unsupported_attention_is_a_candidate_failure():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(16, 4, batch_first=True)  # fused in_proj: no q/k/v/o

        def forward(self, x):
            return self.attn(x, x, x)[0]

    with pytest.raises(CandidateFailed) as e:
        P.prune(Odd().eval(), PruneConfig("l1", 0.5), (torch.randn(1, 4, 16),))
    assert e.value.reason.value == "unsupported"


class GatedBlock(nn.Module):
    """A Llama-style block: attention with num_heads (left alone in the FFN scope) and a gated MLP."""

    planner_prune_scope = "ffn"

    def __init__(self):
        super().__init__()
        self.num_heads, self.head_dim = 2, 8
        self.q, self.k, self.v, self.o = (nn.Linear(16, 16) for _ in range(4))
        self.gate_proj, self.up_proj, self.down_proj = nn.Linear(16, 64), nn.Linear(16, 64), nn.Linear(64, 16)

    def forward(self, x):
        x = x + self.o(self.v(x))
        return x + self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


def test_ffn_scope_prunes_gated_mlps_and_leaves_attention():
    torch.manual_seed(0)
    m, x = GatedBlock().eval(), torch.randn(3, 16)
    with torch.no_grad():  # the kept neurons are the highest-scoring ones: gate row + up row + down column
        score = m.gate_proj.weight.abs().sum(1) + m.up_proj.weight.abs().sum(1) + m.down_proj.weight.abs().sum(0)
    kept = torch.sort(torch.topk(score, 32).indices).values
    ref_gate = m.gate_proj.weight[kept].clone()
    out = P.prune(m, PruneConfig("heads", 0.5, round_to=16), (x,))
    info = P.prune_info(out)
    assert info["kind"] == "ffn" and info["attention_modules"] == 0 and out.num_heads == 2
    assert (out.gate_proj.out_features, out.up_proj.out_features, out.down_proj.in_features) == (32, 32, 32)
    assert out.q.out_features == 16 and torch.equal(out.gate_proj.weight, ref_gate)
    assert out(x).shape == (3, 16)
    m2 = nn.Sequential(nn.Linear(4, 4))
    m2.planner_prune_scope = "ffn"
    with pytest.raises(CandidateFailed, match=r"no FFN \(Linear children \['fc1'\] -> 'fc2' or \['gate_proj', 'up_proj'\]"):
        P.prune(m2, PruneConfig("l1", 0.5), (torch.randn(1, 4),))


# --------------------------------------------------------------------------- sparsity patterns


def test_magnitude_zeroes_smallest_weights_dense():
    model, ex = _resnet()
    ref = copy.deepcopy(model)
    before = P.param_count(model)
    out = P.prune(model, PruneConfig("magnitude", 0.6), ex)
    assert P.param_count(out) == before  # dense storage
    for (name, m), (_, r) in zip(out.named_modules(), ref.named_modules()):
        if not isinstance(m, (nn.Conv2d, nn.Linear)):
            continue
        if m is out.fc:  # output layer untouched
            assert torch.equal(m.weight, r.weight)
            continue
        w, rw = m.weight.detach(), r.weight.detach()
        zeros = (w == 0)
        assert zeros.sum() == int(0.6 * w.numel()), name
        # every zeroed weight was no larger than every surviving one
        assert rw.abs()[zeros].max() <= rw.abs()[~zeros].min()
    info = P.prune_info(out)
    assert info["size_only"] and info["sparsity"] == pytest.approx(0.6, abs=0.01)
    assert out(ex[0]).shape == (2, 10)


def test_two_four_pattern():
    model, ex = _bert()
    out = P.prune(model, PruneConfig("2:4"), ex)
    layers = [m for m in out.modules() if isinstance(m, nn.Linear) and m is not out.head]
    assert layers
    for m in layers:
        groups = m.weight.detach().reshape(m.weight.shape[0], -1, 4)
        assert torch.all((groups == 0).sum(-1) == 2)
    assert not torch.any(out.head.weight == 0)
    assert P.prune_info(out)["size_only"]
    # conv: groups of 4 input channels at each (kh, kw) tap (the layout sparse tensor cores read);
    # a conv whose input channels are not a multiple of 4 (the RGB stem) is left dense
    model, ex = _resnet()
    ref = copy.deepcopy(model)
    out = P.prune(model, PruneConfig("2:4"), ex)
    checked = skipped = 0
    for c, r in zip(_convs(out), _convs(ref)):
        w = c.weight.detach()
        if c.in_channels % 4:
            assert torch.equal(w, r.weight.detach())
            skipped += 1
            continue
        groups = w.permute(0, 2, 3, 1).reshape(-1, 4)
        assert torch.all((groups == 0).sum(-1) == 2)
        kept = r.weight.detach().permute(0, 2, 3, 1).reshape(-1, 4).abs()
        # the two zeroed weights of each group were its two smallest
        assert torch.all(kept[groups == 0].reshape(-1, 2).max(-1).values <= kept[groups != 0].reshape(-1, 2).min(-1).values)
        checked += 1
    assert checked and skipped == 1
    assert P.prune_info(out)["layers_skipped"] == 1
    assert out(ex[0]).shape == (2, 10)


# --------------------------------------------------------------------------- config handling


def test_unknown_method_lists_valid_methods():
    model, ex = _resnet()
    with pytest.raises(ConfigError) as e:
        P.prune(model, PruneConfig("l3", 0.5), ex)
    assert "l1" in str(e.value) and "magnitude" in str(e.value)
    with pytest.raises(ConfigError):
        P.prune(model, PruneConfig("l1", 1.0), ex)


def test_inactive_configs_are_identity():
    model, ex = _resnet()
    before = P.param_count(model)
    assert P.prune(model, PruneConfig(), ex) is model
    assert P.prune(model, PruneConfig("l1", 0.0), ex) is model
    assert P.param_count(model) == before and P.prune_info(model) is None
    assert set(P.METHODS) >= {"l1", "l2", "magnitude", "2:4"}
