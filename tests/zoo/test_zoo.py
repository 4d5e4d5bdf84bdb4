"""The built-in model zoo: contract (build/INPUTS/OUTPUT_KIND), determinism, shapes, exportability."""

from __future__ import annotations

import importlib
import warnings

import numpy as np
import pytest
import torch

from planner.model import InputSpec
from planner.zoo import ZOO

BATCH = 2


def _inputs(mod, batch: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for s in mod.INPUTS:
        if s.dtype.startswith("int"):
            out.append(torch.randint(s.low, s.high, (batch, *s.shape), generator=g, dtype=getattr(torch, s.dtype)))
        else:
            out.append(torch.randn((batch, *s.shape), generator=g, dtype=getattr(torch, s.dtype)))
    return tuple(out)


_built: dict[str, tuple] = {}


def _get(name: str):
    """(module, model built with seed 0), cached across tests."""
    if name not in _built:
        mod = importlib.import_module(ZOO[name])
        _built[name] = (mod, mod.build(0))
    return _built[name]


def _n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


EXPECTED = {
    "tiny-mlp": ("logits", (BATCH, 10)),
    "resnet18": ("logits", (BATCH, 1000)),
    "bert-mini": ("embedding", (BATCH, 384)),
    "gpt-mini": ("logits", (BATCH, 32000)),
}
TESTED_ELSEWHERE = {"digits-cnn", "minilm", "smollm2-135m"}  # real weights: test_trained_zoo.py, test_smollm2.py


def test_registry_covers_zoo():
    assert set(ZOO) == set(EXPECTED) | TESTED_ELSEWHERE


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_contract_shape_and_eval_mode(name):
    mod, model = _get(name)
    kind, shape = EXPECTED[name]
    assert mod.OUTPUT_KIND == kind
    assert isinstance(mod.INPUTS, tuple) and mod.INPUTS and all(isinstance(s, InputSpec) for s in mod.INPUTS)
    assert not model.training and not any(m.training for m in model.modules())
    with torch.no_grad():
        y = model(*_inputs(mod, BATCH))
    assert isinstance(y, torch.Tensor) and tuple(y.shape) == shape and y.dtype == torch.float32
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_deterministic_per_seed(name):
    mod, model = _get(name)
    state = torch.random.get_rng_state()
    again = mod.build(0)
    assert torch.equal(state, torch.random.get_rng_state()), "build() must not consume the global RNG"
    assert _same_state(model, again)  # same weights and buffers => same function
    assert not _same_state(model, mod.build(1))


def test_param_counts():
    assert _n_params(_get("tiny-mlp")[1]) == 64 * 128 + 128 + 128 * 128 + 128 + 128 * 10 + 10
    assert _n_params(_get("resnet18")[1]) == 11_689_512
    assert 22_000_000 <= _n_params(_get("bert-mini")[1]) <= 23_000_000


def test_resnet18_layout_and_nontrivial_bn():
    _, model = _get("resnet18")
    names = dict(model.named_modules())
    for n in ("conv1", "bn1", "layer1.0.conv1", "layer2.0.downsample.0", "layer4.1.bn2", "fc"):
        assert n in names
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == 20
    for bn in bns:  # folding BN must not be a no-op
        assert not torch.allclose(bn.weight, torch.ones_like(bn.weight))
        assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))
        assert (bn.running_var > 0).all()


def test_resnet18_is_input_sensitive():
    mod, model = _get("resnet18")
    with torch.no_grad():
        top = model(*_inputs(mod, 16, seed=1)).argmax(1)
    same = torch.bincount(top).max().item() / 16
    assert same < 0.9, f"{same:.0%} of N(0,1) inputs share one argmax"


def test_bert_structure_for_pruners():
    _, model = _get("bert-mini")
    assert len(model.encoder.layers) == 6
    for layer in model.encoder.layers:
        attn, ffn = layer.attn, layer.ffn
        assert (attn.num_heads, attn.head_dim) == (12, 32)
        for lin in (attn.q, attn.k, attn.v):
            assert isinstance(lin, torch.nn.Linear) and (lin.in_features, lin.out_features) == (384, 384)
        assert (attn.o.in_features, attn.o.out_features) == (384, 384)
        assert (ffn.fc1.in_features, ffn.fc1.out_features, ffn.fc2.out_features) == (384, 1536, 384)


def test_bert_head_reslicing_keeps_it_running():
    """A pruner drops heads by reslicing q/k/v rows and o columns and updating num_heads."""
    mod, _ = _get("bert-mini")
    model = mod.build(0)
    keep = torch.cat([torch.arange(h * 32, (h + 1) * 32) for h in range(8)])  # first 8 of 12 heads
    with torch.no_grad():
        for layer in model.encoder.layers:
            a = layer.attn
            for n in ("q", "k", "v"):
                old = getattr(a, n)
                new = torch.nn.Linear(384, keep.numel())
                new.weight.copy_(old.weight[keep]); new.bias.copy_(old.bias[keep])
                setattr(a, n, new)
            o = torch.nn.Linear(keep.numel(), 384)
            o.weight.copy_(a.o.weight[:, keep]); o.bias.copy_(a.o.bias)
            a.o, a.num_heads = o, 8
        y = model.eval()(*_inputs(mod, BATCH))
    assert y.shape == (BATCH, 384) and torch.isfinite(y).all()


def test_bert_embedding_depends_on_input_ids_and_mask():
    mod, model = _get("bert-mini")
    ids, mask = _inputs(mod, BATCH)
    assert (mask == 1).all() and ids.min() >= 0 and ids.max() < 30522
    with torch.no_grad():
        y = model(ids, mask)
        assert not torch.allclose(y[0], y[1], atol=1e-3)
        # padded positions (mask 0) neither attend nor are pooled: their ids do not matter
        m2 = mask.clone(); m2[:, 64:] = 0
        ids2 = ids.clone(); ids2[0, 64:] = 0; ids2[1, 64:] = 7
        ids2[1, :64] = ids2[0, :64]
        y2 = model(ids2, m2)
    torch.testing.assert_close(y2[0], y2[1], atol=1e-5, rtol=0)
    assert not torch.allclose(y2[0], y[0], atol=1e-3)


def _onnx_roundtrip(name: str, tmp_path, check_batch: int = 3, atol: float = 1e-4):
    import onnxruntime as ort
    from torch.export import Dim

    mod, model = _get(name)
    batch = Dim("batch", min=1, max=4096)
    names = [s.name for s in mod.INPUTS]
    with warnings.catch_warnings():  # "axis name batch will not be used": shared Dim, harmless
        warnings.simplefilter("ignore", UserWarning)
        prog = torch.onnx.export(model, _inputs(mod, BATCH), input_names=names, dynamo=True,
                                 dynamic_shapes={n: {0: batch} for n in names}, verbose=False)
    path = tmp_path / f"{name}.onnx"
    prog.save(str(path))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == names
    for b in (1, check_batch):  # a batch size other than the one exported with
        x = _inputs(mod, b, seed=5)
        with torch.no_grad():
            ref = model(*x).numpy()
        got = sess.run(None, {n: t.numpy() for n, t in zip(names, x)})[0]
        assert got.shape == ref.shape
        np.testing.assert_allclose(got, ref, atol=atol, rtol=0)


def test_tiny_mlp_onnx_export(tmp_path):
    _onnx_roundtrip("tiny-mlp", tmp_path)


def test_bert_mini_onnx_export(tmp_path):
    _onnx_roundtrip("bert-mini", tmp_path)


def test_resnet18_torch_export():
    from torch.export import Dim

    mod, model = _get("resnet18")
    x = _inputs(mod, BATCH)
    ep = torch.export.export(model, x, dynamic_shapes={"x": {0: Dim("batch", min=1, max=4096)}})
    x1 = _inputs(mod, 1, seed=2)  # a batch size other than the one exported with
    with torch.no_grad():
        torch.testing.assert_close(ep.module()(*x1), model(*x1), atol=1e-4, rtol=0)
