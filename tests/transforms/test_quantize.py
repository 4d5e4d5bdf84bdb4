"""Quantization of real torch modules and real ONNX files (ORT), on tiny models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from planner.config import QuantConfig, freeze_options
from planner.errors import CandidateFailed, ConfigError, FailReason
from planner.transforms import quantize as Q
from planner.schemes import SCHEMES


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models: one intra-op thread (2 threads on a loaded 2-core box is ~70x slower)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(64, 128), nn.Linear(128, 128), nn.Linear(128, 10)

    def forward(self, x):
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32)
        self.c2, self.b2 = nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32)
        self.c3 = nn.Conv2d(32, 64, 3, stride=2, padding=1)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        y = F.relu(self.b1(self.c1(x)))
        y = F.relu(y + self.b2(self.c2(y)))
        return self.fc(F.relu(self.c3(y)).mean((2, 3)))


def _cos(a, b) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _q(scheme: str, **opts) -> QuantConfig:
    return QuantConfig(scheme, freeze_options(opts))


def _session(path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


# --------------------------------------------------------------------------- options table


def test_scheme_options_table_is_consistent():
    assert set(Q.TORCH_SCHEMES) <= set(SCHEMES) and set(Q.ONNX_SCHEMES) <= set(SCHEMES)
    assert set(Q.TORCH_SCHEMES) == {n for n, s in SCHEMES.items() if "torch" in s.formats}
    for scheme in SCHEMES.values():
        for values in scheme.options.values():
            assert isinstance(values, tuple) and values
    assert Q.resolve_options(_q("int8_dynamic"))["op_types"] == "matmul"  # first value is the default
    assert Q.resolve_options(_q("int8_static", calibrate_method="entropy"))["calibrate_method"] == "entropy"


def test_bad_options_raise_config_error_naming_choices():
    with pytest.raises(ConfigError) as e:
        Q.validate(_q("int8_static", calibrate_metod="entropy"))
    assert "calibrate_method" in str(e.value)
    with pytest.raises(ConfigError) as e:
        Q.validate(_q("int8_static", calibrate_method="kl"))
    assert "entropy" in str(e.value) and "minmax" in str(e.value)
    with pytest.raises(ConfigError) as e:
        Q.validate(_q("int8_dynamic", per_channel="yes"))
    assert "True" in str(e.value)
    with pytest.raises(ConfigError):
        Q.validate(_q("fp16", op_types="all"))
    with pytest.raises(ConfigError) as e:
        Q.validate(_q("int9"))
    assert "int8_dynamic" in str(e.value)


# --------------------------------------------------------------------------- torch


def test_torch_int8_dynamic_close_to_fp32():
    torch.manual_seed(0)
    model = MLP().eval()
    x = torch.randn(32, 64)
    with torch.no_grad():
        ref = model(x)
        qm = Q.quantize_torch(model, _q("int8_dynamic"), (x,))
        got = qm(x)
    assert any("quantized" in type(m).__module__ for m in qm.modules())
    assert _cos(ref, got) > 0.99


def test_torch_int8_dynamic_per_channel_option_reaches_the_weights():
    torch.manual_seed(0)
    x = torch.randn(8, 64)
    for per_channel, qscheme in ((False, torch.per_tensor_affine), (True, torch.per_channel_affine)):
        qm = Q.quantize_torch(MLP().eval(), _q("int8_dynamic", per_channel=per_channel), (x,))
        linears = [m for m in qm.modules() if "quantized" in type(m).__module__ and hasattr(m, "weight")]
        assert linears and {m.weight().qscheme() for m in linears} == {qscheme}


def test_torch_int8_dynamic_reduce_range_narrows_the_weights():
    """planner's reduce_range on torch narrows the weights to 7 bits (as ONNX Runtime's does) and keeps 8-bit
    activations (torch's own guard narrows the activations, 3x the loss on MiniLM-L6); auto: 7 only where u8*s8
    kernels saturate; quant_info says which."""
    import copy

    torch.manual_seed(0)
    x = torch.randn(64, 64) * 3
    model = MLP().eval()
    with torch.no_grad():
        want = model(x)
        outs = {}
        for rr, bits in ((True, 7), (False, 8)):
            for per_channel in (True, False):
                qm = Q.quantize_torch(copy.deepcopy(model), _q("int8_dynamic", reduce_range=rr,
                                                               per_channel=per_channel), (x,))
                info = Q.quant_info(qm)
                assert (info["weight_bits"], info["activation_bits"], info["layers_quantized"]) == (bits, 8, 3)
                linears = [m for m in qm.modules() if "quantized.dynamic" in type(m).__module__ and hasattr(m, "weight")]
                assert {m.version for m in linears} == {3}  # torch's forward without its 7-bit activations
                ints = torch.cat([m.weight().int_repr().flatten() for m in linears])
                assert ints.min() >= -(2 ** (bits - 1)) and ints.max() <= 2 ** (bits - 1) - 1
                assert ints.min() < -(2 ** (bits - 2)) or ints.max() >= 2 ** (bits - 2)  # the whole range is used
            outs[bits] = qm(x)
        auto = Q.quantize_torch(copy.deepcopy(model), _q("int8_dynamic"), (x,))
        assert Q.quant_info(auto)["weight_bits"] == (7 if Q.int8_saturates() else 8)
    assert not torch.equal(outs[7], outs[8])
    if not Q.int8_saturates():  # 8-bit weights are the finer grid where the kernels do not saturate
        err = {b: (o - want).pow(2).mean().item() for b, o in outs.items()}
        assert err[8] < err[7]


def test_torch_fp16_bf16_cast_module_and_report_input_dtype():
    torch.manual_seed(0)
    x = torch.randn(8, 64)
    for scheme, dt in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
        model = MLP().eval()
        with torch.no_grad():
            ref = model(x)
            qm = Q.quantize_torch(model, _q(scheme), (x,))
            assert Q.input_dtype(_q(scheme)) == dt
            assert all(p.dtype == dt for p in qm.parameters())
            assert _cos(ref, qm(x.to(dt)).float()) > 0.99
    assert Q.input_dtype(_q("none")) is None and Q.input_dtype(_q("int8_dynamic")) is None


def test_torch_int8_weight_only_torchao():
    torch.manual_seed(0)
    model = MLP().eval()
    x = torch.randn(8, 64)
    with torch.no_grad():
        ref = model(x)
        try:
            qm = Q.quantize_torch(model, _q("int8_weight_only"), (x,))
        except CandidateFailed as e:  # allowed outcome, but it must say so clearly
            assert e.reason is FailReason.UNSUPPORTED and "int8_weight_only" in e.message
            return
        assert _cos(ref, qm(x)) > 0.99
    assert type(qm.fc1.weight.data) is not torch.Tensor  # weights became a quantized tensor subclass


def test_torch_rejects_onnx_only_scheme_and_none_is_identity():
    model = MLP().eval()
    x = torch.randn(2, 64)
    assert Q.quantize_torch(model, _q("none"), (x,)) is model
    with pytest.raises(CandidateFailed) as e:
        Q.quantize_torch(model, _q("int8_static"), (x,))
    assert e.value.reason is FailReason.UNSUPPORTED


def test_torch_int8_of_a_model_without_linear_layers_is_unsupported_not_a_silent_no_op():
    conv = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()).eval()
    x = torch.randn(2, 3, 8, 8)
    for scheme in ("int8_dynamic", "int8_weight_only"):
        with pytest.raises(CandidateFailed, match=f"{scheme} quantizes nn.Linear layers and Sequential has none") as e:
            Q.quantize_torch(conv, _q(scheme), (x,))
        assert e.value.reason is FailReason.UNSUPPORTED


# --------------------------------------------------------------------------- ONNX


@pytest.fixture(scope="module")
def onnx_models(tmp_path_factory):
    """{name: (path, calib, eval_inputs, fp32 reference outputs)} exported with the dynamo exporter."""
    d = tmp_path_factory.mktemp("onnx")
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    out = {}
    for name, model, shape in (("mlp", MLP(), (64,)), ("conv", ConvNet(), (3, 16, 16))):
        model.eval()
        path = d / f"{name}.onnx"
        torch.onnx.export(model, (torch.randn(2, *shape),), str(path), dynamo=True, input_names=["x"],
                          verbose=False, dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
        calib = {"x": rng.standard_normal((32, *shape)).astype(np.float32)}
        xs = rng.standard_normal((5, *shape)).astype(np.float32)  # batch not a multiple of the calib batch
        ref = _session(path).run(None, {"x": xs})[0]
        out[name] = (path, calib, xs, ref)
    return out


CASES = [
    ("mlp", "int8_dynamic", {}),
    ("conv", "int8_dynamic", {"op_types": "all"}),
    ("mlp", "int8_static", {"calibrate_method": "minmax"}),
    ("mlp", "int8_static", {"calibrate_method": "entropy"}),
    ("mlp", "int8_static", {"calibrate_method": "percentile", "per_channel": True}),
    ("conv", "int8_static", {"calibrate_method": "minmax"}),
    ("conv", "int8_static", {"calibrate_method": "entropy", "activation_type": "u8"}),
    ("conv", "int8_static", {"calibrate_method": "percentile", "per_channel": True}),
]


@pytest.mark.parametrize("name,scheme,opts", CASES, ids=[f"{c[0]}-{c[1]}-{'-'.join(map(str, c[2].values()))}" for c in CASES])
def test_onnx_int8_valid_close_and_smaller(onnx_models, tmp_path, name, scheme, opts):
    import onnx

    src, calib, xs, ref = onnx_models[name]
    dst = tmp_path / "q.onnx"
    info = Q.quantize_onnx(src, dst, _q(scheme, **opts), calib if scheme == "int8_static" else None)
    onnx.checker.check_model(str(dst))
    ops = {n.op_type for n in onnx.load(str(dst)).graph.node}
    if scheme == "int8_static":
        assert {"QuantizeLinear", "DequantizeLinear"} <= ops
        assert info["calib_samples"] == 32
    else:
        assert ops & {"DynamicQuantizeLinear", "MatMulInteger", "ConvInteger"}
    got = _session(dst).run(None, {"x": xs})[0]
    assert got.shape == ref.shape
    assert _cos(ref, got) > 0.98
    assert info["reduce_range"] == Q.int8_saturates()  # "auto"
    assert info["dst_bytes"] < info["src_bytes"] == Q.onnx_bytes(src)
    assert info["dst_bytes"] == Q.onnx_bytes(dst)
    assert info["preprocessed"] is True


def test_onnx_entropy_is_not_minmax(onnx_models, tmp_path):
    """ORT's entropy calibration through quantize_static degenerates to minmax (128 bins);
    ours uses more bins, so at least one activation range must differ."""
    import onnx
    from onnx import numpy_helper

    src, calib, _, _ = onnx_models["conv"]
    scales = {}
    for method in ("minmax", "entropy"):
        dst = tmp_path / f"{method}.onnx"
        Q.quantize_onnx(src, dst, _q("int8_static", calibrate_method=method), calib)
        scales[method] = {i.name: float(numpy_helper.to_array(i).ravel()[0])
                          for i in onnx.load(str(dst)).graph.initializer if i.name.endswith("_scale")}
    common = set(scales["minmax"]) & set(scales["entropy"])
    assert common
    assert any(abs(scales["minmax"][k] - scales["entropy"][k]) > 1e-6 for k in common)


def test_onnx_fp16_and_none(onnx_models, tmp_path):
    import onnx

    src, _, xs, ref = onnx_models["conv"]
    dst = tmp_path / "h.onnx"
    info = Q.quantize_onnx(src, dst, _q("fp16"), None)
    onnx.checker.check_model(str(dst))
    got = _session(dst).run(None, {"x": xs})[0]
    assert got.dtype == np.float32  # float I/O kept
    assert _cos(ref, got) > 0.999
    assert info["dst_bytes"] < 0.7 * info["src_bytes"]
    info = Q.quantize_onnx(src, tmp_path / "n.onnx", _q("none"), None)
    np.testing.assert_allclose(_session(tmp_path / "n.onnx").run(None, {"x": xs})[0], ref, rtol=1e-5, atol=1e-6)


def test_onnx_static_with_fixed_batch(tmp_path):
    """A model whose batch axis is fixed (3) gets calibration batches of exactly 3."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((16, 32)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((32, 4)).astype(np.float32), "w2")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("MatMul", ["r", "w2"], ["y"])],
        "fixed", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 4])], [w1, w2])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    src = tmp_path / "fixed.onnx"
    onnx.save(model, str(src))
    calib = {"x": rng.standard_normal((10, 16)), "label": np.zeros(10)}  # float64, extra key: both fine
    info = Q.quantize_onnx(src, tmp_path / "q.onnx", _q("int8_static"), calib)
    assert info["calib_samples"] == 9  # 3 batches of 3
    xs = rng.standard_normal((3, 16)).astype(np.float32)
    assert _cos(_session(src).run(None, {"x": xs})[0], _session(tmp_path / "q.onnx").run(None, {"x": xs})[0]) > 0.98
    with pytest.raises(ConfigError):
        Q.quantize_onnx(src, tmp_path / "q2.onnx", _q("int8_static"), {"y": calib["x"]})
    with pytest.raises(ConfigError):
        Q.quantize_onnx(src, tmp_path / "q3.onnx", _q("int8_static"), None)


def test_onnx_explicit_reduce_range_and_unsupported_type_combination(onnx_models, tmp_path):
    src, calib, xs, ref = onnx_models["mlp"]
    info = Q.quantize_onnx(src, tmp_path / "q.onnx", _q("int8_dynamic", reduce_range=False), None)
    assert info["reduce_range"] is False
    info = Q.quantize_onnx(src, tmp_path / "q.onnx", _q("int8_static", weight_type="u8", activation_type="u8",
                                                        reduce_range=True), calib)
    assert info["reduce_range"] is True
    assert _cos(ref, _session(tmp_path / "q.onnx").run(None, {"x": xs})[0]) > 0.98
    bad = _q("int8_static", activation_type="s8", weight_type="u8")
    assert Q.unsupported_combination(bad)
    with pytest.raises(CandidateFailed) as e:
        Q.quantize_onnx(src, tmp_path / "q2.onnx", bad, calib)
    assert e.value.reason is FailReason.UNSUPPORTED


def test_onnx_quantizer_failure_is_a_compile_failure(tmp_path):
    src = tmp_path / "broken.onnx"
    src.write_bytes(b"this is not an onnx model")
    with pytest.raises(CandidateFailed) as e:
        Q.quantize_onnx(src, tmp_path / "q.onnx", _q("int8_dynamic"), None)
    assert e.value.reason is FailReason.COMPILE


def test_onnx_rejects_torch_only_scheme(onnx_models, tmp_path):
    src = onnx_models["mlp"][0]
    with pytest.raises(CandidateFailed) as e:
        Q.quantize_onnx(src, tmp_path / "q.onnx", _q("bf16"), None)
    assert e.value.reason is FailReason.UNSUPPORTED


def test_onnx_sensitive_layer_fallback_keeps_the_worst_layers_in_fp32(onnx_models, tmp_path):
    """fallback_layers=k: rank layers by weight SQNR after a first pass, re-quantize with the k worst excluded:
    those nodes read float weights (no DequantizeLinear feeding them), every other Conv still does."""
    import onnx

    src, calib, xs, ref = onnx_models["conv"]
    full = tmp_path / "full.onnx"
    Q.quantize_onnx(src, full, _q("int8_static", calibrate_method="minmax"), calib)
    pre = tmp_path / "pre"
    pre.mkdir()
    model_in, _, _ = Q._preprocess(src, pre, False)
    ranked = Q.sensitive_nodes(model_in, full)
    assert len(ranked) >= 2 and [v for _, v in ranked] == sorted(v for _, v in ranked)

    dst = tmp_path / "fb.onnx"
    info = Q.quantize_onnx(src, dst, _q("int8_static", calibrate_method="minmax", fallback_layers=1), calib)
    assert info["fallback_nodes"] == [ranked[0][0]] and len(info["fallback_sqnr_db"]) == 1
    g = onnx.load(str(dst)).graph
    produced_by = {o: n for n in g.node for o in n.output}
    convs = [n for n in g.node if n.op_type == "Conv"]

    def dequantized_weight(n):
        p = produced_by.get(n.input[1])
        return p is not None and p.op_type == "DequantizeLinear"

    assert [n.name for n in convs if not dequantized_weight(n)] == info["fallback_nodes"]
    assert _cos(ref, _session(dst).run(None, {"x": xs})[0]) > 0.98


class OutlierMLP(nn.Module):
    """fc2 reads an activation with one huge channel (x1000) that its weights ignore: per-tensor int8 of that
    input wipes out the channels fc2 does use.  fc2's *weights* are as benign as the others'."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(16, 32), nn.Linear(32, 32), nn.Linear(32, 4)
        scale = torch.ones(32)
        scale[0] = 1000.0
        self.register_buffer("scale", scale)
        with torch.no_grad():
            self.fc2.weight[:, 0] = 0.0

    def forward(self, x):
        return self.fc3(F.relu(self.fc2(self.fc1(x) * self.scale)))


def test_activation_ranked_fallback_finds_the_layer_weights_cannot_show(tmp_path):
    """fallback_rank=activation runs the float and the int8 model on calibration data and ranks layers by the
    fidelity they lose: it names fc2 first, and keeping it in fp32 restores the outputs."""
    import onnx

    torch.manual_seed(0)
    model = OutlierMLP().eval()
    src = tmp_path / "outlier.onnx"
    torch.onnx.export(model, (torch.randn(2, 16),), str(src), dynamo=True, input_names=["x"], verbose=False,
                      dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
    rng = np.random.default_rng(0)
    calib = {"x": rng.standard_normal((32, 16)).astype(np.float32)}
    xs = rng.standard_normal((64, 16)).astype(np.float32)
    ref = _session(src).run(None, {"x": xs})[0]
    g = onnx.load(str(src)).graph
    fc2 = next(n.name for n in g.node if n.op_type in ("Gemm", "MatMul") and any("fc2" in i for i in n.input))

    # op_types=matmul: only the Gemms are quantized, so leaving fc2 in fp32 also leaves its input unquantized
    # (with op_types=all the Mul before it would still quantize that input: fallback works per node)
    full = tmp_path / "full.onnx"
    Q.quantize_onnx(src, full, _q("int8_static", op_types="matmul", calibrate_method="minmax"), calib)
    fb = tmp_path / "fb.onnx"
    info = Q.quantize_onnx(src, fb, _q("int8_static", op_types="matmul", calibrate_method="minmax", fallback_layers=1,
                                       fallback_rank="activation"), calib)
    assert info["fallback_rank"] == "activation" and info["fallback_nodes"] == [fc2], info
    assert info["fallback_sqnr_drop_db"][0] > 10
    centered = lambda out: _cos(ref - ref.mean(0), out - ref.mean(0))  # noqa: E731
    worse = centered(_session(full).run(None, {"x": xs})[0])
    better = centered(_session(fb).run(None, {"x": xs})[0])
    assert better > worse + 0.05 and better > 0.98, (worse, better)


def test_fp8_writes_float8_qdq_that_tensorrt_accepts(onnx_models, tmp_path):
    """fp8 (TensorRT's, sm_89+): float8 E4M3 Q/DQ with zero points 0, calibrated; checked here on the CPU with
    ONNX Runtime's fusions off (they mangle float8 Q/DQ), as no GPU is at hand."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    from planner.backends.tensorrt import qdq_problems

    src, calib, xs, ref = onnx_models["mlp"]
    dst = tmp_path / "fp8.onnx"
    info = Q.quantize_onnx(src, dst, _q("fp8"), calib)
    assert info["calib_samples"] == 32
    g = onnx.load(str(dst)).graph
    assert sum(n.op_type == "QuantizeLinear" for n in g.node) >= 3
    zps = [i for i in g.initializer if i.name.endswith("zero_point")]
    assert zps and all(z.data_type == onnx.TensorProto.FLOAT8E4M3FN for z in zps)
    assert not any(numpy_helper.to_array(z).astype(np.float32).any() for z in zps)
    assert qdq_problems(dst) == []
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    out = ort.InferenceSession(str(dst), so, providers=["CPUExecutionProvider"]).run(None, {"x": xs})[0]
    assert _cos(ref, out) > 0.98
    with pytest.raises(ConfigError, match="calibration"):
        Q.quantize_onnx(src, tmp_path / "nocalib.onnx", _q("fp8"), None)


def test_onnx_int4_weight_only_writes_matmulnbits_close_and_smaller(tmp_path):
    """Linear layers on 3-D activations (a transformer's shape) export as MatMul: each becomes an int4 MatMulNBits."""
    import onnx

    torch.manual_seed(0)
    model = MLP().eval()
    path = tmp_path / "mlp3.onnx"
    torch.onnx.export(model, (torch.randn(2, 7, 64),), str(path), dynamo=True, input_names=["x"], verbose=False,
                      dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
    xs = np.random.default_rng(0).standard_normal((3, 7, 64)).astype(np.float32)
    ref = _session(path).run(None, {"x": xs})[0]
    for gs in (32, 128):
        dst = tmp_path / f"q{gs}.onnx"
        info = Q.quantize_onnx(path, dst, _q("int4_weight_only", group_size=gs), None)
        ops = [n.op_type for n in onnx.load(str(dst)).graph.node]
        assert ops.count("MatMulNBits") == 3 and "MatMul" not in ops, ops
        assert info["layers_quantized"] == 3 and info["layers_kept_float"] == 0 and info["group_size"] == gs
        assert info["dst_bytes"] < 0.3 * info["src_bytes"]  # 4-bit weights (+ scales) of a float32 model
        got = _session(dst).run(None, {"x": xs})[0]
        assert got.shape == ref.shape and _cos(ref, got) > 0.98


def test_onnx_int4_of_a_model_without_matmul_is_unsupported(onnx_models, tmp_path):
    """The conv net's only float GEMM is a Gemm, which MatMulNBits does not cover: unsupported, not a silent no-op."""
    src = onnx_models["conv"][0]
    with pytest.raises(CandidateFailed) as e:
        Q.quantize_onnx(src, tmp_path / "q.onnx", _q("int4_weight_only"), None)
    assert e.value.reason == FailReason.UNSUPPORTED and "MatMul" in str(e.value)
    assert not (tmp_path / "q.onnx").exists()


class TinyAttention(nn.Module):
    """One self-attention block: a graph with a Softmax, as a transformer's."""

    def __init__(self, d: int = 16):
        super().__init__()
        self.qkv, self.out = nn.Linear(d, 3 * d), nn.Linear(d, d)

    def forward(self, x):
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        a = torch.softmax(q @ k.transpose(-1, -2) / 4.0, dim=-1)
        return self.out(a @ v)


def test_int8_static_op_types_auto_quantizes_only_matmuls_on_a_transformer(onnx_models, tmp_path):
    """op_types `auto` (the default): a graph with attention gets only its MatMul/Gemm quantized (all of them wrecked
    MiniLM), a CNN everything ORT quantizes; an explicit value is taken as given."""
    import onnx

    assert Q.resolve_options(_q("int8_static"))["op_types"] == "auto"
    torch.manual_seed(0)
    path = tmp_path / "attn.onnx"
    torch.onnx.export(TinyAttention().eval(), (torch.randn(2, 6, 16),), str(path), dynamo=True, input_names=["x"],
                      verbose=False, dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
    calib = {"x": np.random.default_rng(0).standard_normal((16, 6, 16)).astype(np.float32)}
    info = Q.quantize_onnx(path, tmp_path / "a.onnx", _q("int8_static", calibrate_method="minmax"), calib)
    assert info["op_types_auto"] == "matmul" and info["op_types"] == ["MatMul", "Gemm"]
    quantized = {n.op_type for n in onnx.load(str(tmp_path / "a.onnx")).graph.node
                 if any(i.endswith("DequantizeLinear_Output") for i in n.input)}
    assert "Softmax" not in quantized
    src, conv_calib, _, _ = onnx_models["conv"]
    info = Q.quantize_onnx(src, tmp_path / "c.onnx", _q("int8_static", calibrate_method="minmax"), conv_calib)
    assert info["op_types_auto"] == "all" and info["op_types"] == "all"
    info = Q.quantize_onnx(path, tmp_path / "e.onnx", _q("int8_static", op_types="all", calibrate_method="minmax"), calib)
    assert "op_types_auto" not in info and info["op_types"] == "all"


def test_onnx_int8_of_a_dynamic_length_model_writes_nothing_in_the_working_directory(tmp_path, monkeypatch):
    """A text model exported with a dynamic length axis (served traffic at own lengths): ONNX Runtime's symbolic
    shape inference in `quant_pre_process` cannot finish it and saves what it has (weights included) as
    ``sym_shape_infer_temp.onnx`` in the working directory; planner runs it in its own temporary folder."""
    import sys

    from support import DATA

    from planner.source import export_onnx

    sys.path.insert(0, str(DATA))
    from text_models import dataset, tiny_encoder

    d = {k: v[:8] for k, v in dataset().items()}
    src = tmp_path / "m.onnx"
    export_onnx(tiny_encoder(), d, src, length_axes={"input_ids": 1, "attention_mask": 1})
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    info = Q.quantize_onnx(src, tmp_path / "q.onnx", QuantConfig("int8_static"), d)
    assert (tmp_path / "q.onnx").is_file() and "preprocessed" in info
    assert list(cwd.iterdir()) == []
