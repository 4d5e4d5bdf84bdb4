"""TensorRT build decisions, on any machine: `plan_build` and the timing-cache file helpers need no tensorrt.

Nothing here builds or runs an engine; tests/gpu/ does that on a GPU host.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from support import ROOT

from planner.backends import tensorrt as trt_backend
from planner.backends.tensorrt import (
    TensorRT,
    load_timing_cache,
    plan_build,
    qdq_problems,
    store_timing_cache,
    supported_schemes,
    timing_cache_path,
    validate_options,
)
from planner.config import PruneConfig, QuantConfig, TrialConfig, freeze_options
from planner.errors import CandidateFailed, ConfigError
from planner.model import InputSpec
from planner.target import load_target

IMAGE = [InputSpec("x", (3, 224, 224))]
TOKENS = [InputSpec("input_ids", (128,), "int64"), InputSpec("attention_mask", (128,), "int64")]
FP8_TRANSFORMS = ("none", "fp16", "int8_dynamic", "int8_static", "fp8")  # what the ONNX transforms write (fp8: float8 Q/DQ)


@pytest.fixture(scope="module")
def targets():
    t = {n: load_target(ROOT / "targets" / f"{n}.yaml") for n in ("a100", "h100", "l4", "cpu")}
    gpu = t["a100"].device.gpu
    t["t4"] = t["a100"].model_copy(update={  # a Turing card: no bf16, no sparse tensor cores
        "name": "t4", "precisions": ["fp32", "fp16", "int8"],
        "device": t["a100"].device.model_copy(update={"gpu": gpu.model_copy(update={
            "name": "NVIDIA T4", "compute_capability": "7.5", "memory_gb": 16})})})
    return t


def cfg(scheme="none", batch=8, prune="none", qopts=None, **opts):
    return TrialConfig("tensorrt", batch, backend_options=freeze_options(opts),
                       prune=PruneConfig(prune), quant=QuantConfig(scheme, freeze_options(qopts)))


def plan(c, target, version="10.12.0.36", inputs=IMAGE, sizes=(1, 8, 32), **kw):
    return plan_build(c, target, version, inputs, sizes, **kw)


# ----------------------------------------------------------------- precision: flags vs strongly typed


@pytest.mark.parametrize("scheme,flags,graph", [
    ("none", (), "none"),
    ("fp16", ("FP16",), "fp16"),
    ("bf16", ("BF16",), "none"),            # weak typing: the flag alone lets TensorRT pick bf16 kernels
    ("int8_static", ("INT8",), "int8_static"),  # explicit quantization: Q/DQ graph + INT8 flag
])
@pytest.mark.parametrize("version", ["10.0.1.6", "10.11.0.33"])
def test_weakly_typed_releases_take_precision_builder_flags(targets, scheme, flags, graph, version):
    p = plan(cfg(scheme), targets["h100"], version)
    assert not p.strongly_typed and p.network_flags == ()
    assert p.builder_flags == flags
    assert p.onnx_scheme == graph


@pytest.mark.parametrize("version", ["10.12.0.36", "10.13.3.9", "11.0.0.114", "11.4"])
@pytest.mark.parametrize("scheme", ["none", "fp16", "int8_static"])
def test_strongly_typed_releases_take_precision_from_the_graph(targets, scheme, version):
    p = plan(cfg(scheme), targets["h100"], version)
    assert p.strongly_typed and p.network_flags == ("STRONGLY_TYPED",)
    assert p.builder_flags == ()  # no FP16/INT8/BF16/FP8 flag: removed in 11, deprecated from 10.12
    assert p.onnx_scheme == scheme  # fp16 casts / int8 Q/DQ written into the ONNX graph


def test_bf16_on_strongly_typed_tensorrt_is_rejected_not_built_at_fp32(targets):
    with pytest.raises(CandidateFailed, match="strongly typed") as e:
        plan(cfg("bf16"), targets["a100"], "10.12.0.36")
    assert e.value.reason.value == "unsupported"
    with pytest.raises(CandidateFailed, match="strongly typed"):
        plan(cfg("bf16"), targets["a100"], "11.0")
    # once a bf16 graph transform exists, bf16 comes from the graph
    p = plan(cfg("bf16"), targets["a100"], "11.0", onnx_schemes=("none", "fp16", "bf16"))
    assert p.onnx_scheme == "bf16" and p.builder_flags == ()


def test_bf16_needs_ampere(targets):
    with pytest.raises(CandidateFailed, match=r">= 8\.0.*7\.5"):
        plan(cfg("bf16"), targets["t4"], "10.0.1")


@pytest.mark.parametrize("version", ["10.0.1", "10.12.0.36", "11.0"])
def test_fp8_below_sm89_is_rejected_whatever_the_version(targets, version):
    with pytest.raises(CandidateFailed, match=r">= 8\.9.*8\.0"):
        plan(cfg("fp8"), targets["a100"], version, onnx_schemes=FP8_TRANSFORMS)


def test_fp8_needs_fp8_qdq_in_the_graph(targets):
    with pytest.raises(CandidateFailed, match="FP8 Q/DQ"):  # ONNX transforms without the fp8 one
        plan(cfg("fp8"), targets["h100"], "10.0.1", onnx_schemes=("none", "fp16", "int8_dynamic", "int8_static"))
    weak = plan(cfg("fp8"), targets["h100"], "10.0.1")  # the planner's transforms write float8 Q/DQ
    assert weak.builder_flags == ("FP8",) and weak.onnx_scheme == "fp8"
    strong = plan(cfg("fp8"), targets["l4"], "11.0")  # sm_89 is enough
    assert strong.builder_flags == () and strong.onnx_scheme == "fp8" and strong.strongly_typed


def test_int8_static_needs_signed_int8(targets):
    with pytest.raises(CandidateFailed, match="activation_type=s8"):
        plan(cfg("int8_static", qopts={"activation_type": "u8"}), targets["a100"])
    with pytest.raises(CandidateFailed, match="weight_type=s8"):
        plan(cfg("int8_static", qopts={"weight_type": "u8", "activation_type": "u8"}), targets["a100"])
    p = plan(cfg("int8_static", qopts={"activation_type": "s8", "calibrate_method": "percentile"}), targets["a100"])
    assert p.onnx_scheme == "int8_static" and p.precision == "int8"


@pytest.mark.parametrize("scheme", ["int8_dynamic", "int8_weight_only", "int4_weight_only"])
def test_schemes_tensorrt_does_not_build_are_rejected(targets, scheme):
    with pytest.raises(CandidateFailed, match="does not implement"):
        plan(cfg(scheme), targets["h100"])


def test_old_or_garbled_versions_and_cpu_targets_are_rejected(targets):
    with pytest.raises(CandidateFailed, match="older than 10.0"):
        plan(cfg(), targets["a100"], "8.6.1")
    with pytest.raises(CandidateFailed, match="cannot read"):
        plan(cfg(), targets["a100"], "latest")
    with pytest.raises(CandidateFailed, match="NVIDIA GPUs only"):
        plan(cfg(), targets["cpu"])


def test_supported_schemes_follow_version_and_transforms():
    assert supported_schemes(None) == ("none", "fp16", "int8_static", "fp8")  # not installed: current (strongly typed) releases
    assert supported_schemes("10.12.0.36") == ("none", "fp16", "int8_static", "fp8")
    assert supported_schemes("10.0.1") == ("none", "fp16", "bf16", "int8_static", "fp8")
    assert "fp8" not in supported_schemes("11.0", ("none", "fp16", "int8_static"))
    assert TensorRT.quant_schemes == supported_schemes(trt_backend.installed_version())


# ----------------------------------------------------------------- sparsity


def test_2_4_pruning_sets_sparse_weights(targets):
    for version in ("10.0.1", "10.12.0.36", "11.0"):
        p = plan(cfg(prune="2:4"), targets["a100"], version)
        assert "SPARSE_WEIGHTS" in p.builder_flags
    assert plan(cfg(prune="2:4"), targets["a100"], "11.0").builder_flags == ("SPARSE_WEIGHTS",)
    assert plan(cfg("fp16", prune="2:4"), targets["a100"], "10.0.1").builder_flags == ("FP16", "SPARSE_WEIGHTS")
    assert "SPARSE_WEIGHTS" in plan(cfg(sparse_weights=True), targets["a100"]).builder_flags
    assert "SPARSE_WEIGHTS" not in plan(cfg(), targets["a100"]).builder_flags
    assert "SPARSE_WEIGHTS" not in plan(cfg(prune="l1"), targets["a100"]).builder_flags
    turing = plan(cfg(prune="2:4"), targets["t4"], "10.0.1")
    assert any("no effect" in n for n in turing.notes)


# ----------------------------------------------------------------- optimization profiles


@pytest.mark.parametrize("batch", [1, 8, 32])
def test_profile_covers_the_searched_batch_sizes(targets, batch):
    p = plan(cfg(batch=batch), targets["h100"], inputs=TOKENS, sizes=[1, 8, 32])
    assert [x.name for x in p.profiles] == ["input_ids", "attention_mask"]
    for x in p.profiles:
        assert x.min == (1, 128) and x.opt == (batch, 128) and x.max == (32, 128)
    img = plan(cfg(batch=batch), targets["h100"], inputs=IMAGE, sizes=[32, 1, 8]).profiles[0]
    assert (img.min, img.opt, img.max) == ((1, 3, 224, 224), (batch, 3, 224, 224), (32, 3, 224, 224))


def test_profile_always_contains_the_trial_batch(targets):
    p = plan(cfg(batch=64), targets["h100"], sizes=[8, 32]).profiles[0]
    assert (p.min[0], p.opt[0], p.max[0]) == (8, 64, 64)


def test_profile_errors(targets):
    with pytest.raises(ConfigError, match="no inputs"):
        plan(cfg(), targets["h100"], inputs=[])
    with pytest.raises(ConfigError, match=">= 1"):
        plan(cfg(), targets["h100"], sizes=[0, 8])


# ----------------------------------------------------------------- options


def test_option_defaults_and_values(targets):
    p = plan(cfg(), targets["h100"])
    assert (p.optimization_level, p.workspace_mb, p.cuda_graph) == (3, 4096, False)
    assert p.workspace_bytes == 4096 << 20
    p = plan(cfg(optimization_level=5, workspace_mb=1024, cuda_graph=True), targets["h100"])
    assert (p.optimization_level, p.workspace_mb, p.cuda_graph) == (5, 1024, True)
    assert plan(cfg(optimization_level=0), targets["h100"]).optimization_level == 0
    small = targets["t4"].model_copy(update={"device": targets["t4"].device.model_copy(update={
        "gpu": targets["t4"].device.gpu.model_copy(update={"memory_gb": 2})})})
    assert plan(cfg(), small).workspace_mb == 2048  # default capped at the GPU's memory


def test_option_errors_are_all_reported_at_once(targets):
    bad = {"optimization_level": 7, "workspace_mb": 0, "cuda_graph": "yes", "sparse_weights": 1, "tactics": 3}
    with pytest.raises(ConfigError) as e:
        validate_options(bad, targets["h100"])
    text = "\n".join(e.value.errors)
    assert len(e.value.errors) == 5
    for word in ("optimization_level=7", "int ≥ 0, ≤ 5", "workspace_mb=0", "cuda_graph='yes'", "sparse_weights=1", "tactics"):
        assert word in text


@pytest.mark.parametrize("opts,msg", [
    ({"optimization_level": -1}, "int ≥ 0, ≤ 5"),
    ({"optimization_level": True}, "int ≥ 0, ≤ 5"),
    ({"optimization_level": "3"}, "int ≥ 0, ≤ 5"),
    ({"workspace_mb": 1.5}, "int ≥ 1"),
    ({"workspace_mb": 100_000}, "GPU memory"),  # an 80 GB H100 has 81920 MiB
])
def test_bad_option_values(targets, opts, msg):
    with pytest.raises(ConfigError, match=msg):
        plan(cfg(**opts), targets["h100"])


def test_check_rejects_before_compiling(targets):
    assert "int ≥ 0, ≤ 5" in TensorRT.check(cfg(optimization_level=9), targets["h100"], "torch")
    assert "does not implement" in TensorRT.check(cfg("int8_dynamic"), targets["h100"], "torch")
    assert "does not run on cpu" in TensorRT.check(cfg(), targets["cpu"], "torch")
    assert TensorRT.check(cfg("fp16", optimization_level=5), targets["h100"], "torch") is None


def test_check_uses_the_installed_version(targets, monkeypatch):
    monkeypatch.setattr(TensorRT, "quant_schemes", supported_schemes("10.12.0.36") + ("bf16",))
    monkeypatch.setattr(trt_backend, "installed_version", lambda: "10.12.0.36")
    assert "strongly typed" in TensorRT.check(cfg("bf16"), targets["a100"], "torch")
    monkeypatch.setattr(trt_backend, "installed_version", lambda: "10.0.1")
    assert TensorRT.check(cfg("bf16"), targets["a100"], "torch") is None


# ----------------------------------------------------------------- timing cache


def test_timing_cache_keyed_by_gpu_and_version_and_shared_by_trials(targets, tmp_path):
    a = plan(cfg("fp16", batch=1), targets["h100"], "10.12.0.36", cache_dir=tmp_path, gpu_name="NVIDIA H100 80GB HBM3")
    b = plan(cfg("none", batch=32, optimization_level=5), targets["h100"], "10.12.0.36", cache_dir=tmp_path,
             gpu_name="NVIDIA H100 80GB HBM3")
    assert a.timing_cache == b.timing_cache == tmp_path / "tensorrt" / "timing-nvidia-h100-80gb-hbm3-trt10.12.0.36.cache"
    other_gpu = plan(cfg(), targets["h100"], "10.12.0.36", cache_dir=tmp_path, gpu_name="NVIDIA H200")
    other_trt = plan(cfg(), targets["h100"], "10.13.0.35", cache_dir=tmp_path, gpu_name="NVIDIA H100 80GB HBM3")
    assert len({a.timing_cache, other_gpu.timing_cache, other_trt.timing_cache}) == 3
    # without a device name, the target's GPU keys it; without a cache dir there is none
    assert plan(cfg(), targets["h100"], cache_dir=tmp_path).timing_cache.name == "timing-nvidia-h100-trt10.12.0.36.cache"
    assert plan(cfg(), targets["h100"]).timing_cache is None
    assert timing_cache_path(tmp_path, "A/B ../x", "10.0").parent == tmp_path / "tensorrt"  # no path escapes


class FakeCache:
    """Stands in for ITimingCache: a set of entries serialized as b'TC1' + JSON."""

    def __init__(self, entries=()):
        self.entries = set(entries)

    @classmethod
    def create(cls, blob: bytes):
        if not blob:
            return cls()
        if not blob.startswith(b"TC1"):
            raise RuntimeError("invalid timing cache header")
        return cls(json.loads(blob[3:]))

    def serialize(self) -> bytes:
        return b"TC1" + json.dumps(sorted(self.entries)).encode()


def test_timing_cache_new_loaded_and_reused(tmp_path):
    path = tmp_path / "tensorrt" / "timing.cache"
    cache, status = load_timing_cache(path, FakeCache.create)
    assert status == "new" and cache.entries == set()
    cache.entries.add("conv1:tactic7")
    assert store_timing_cache(path, cache.serialize, lambda blob: None) == "written"
    again, status = load_timing_cache(path, FakeCache.create)  # the next trial
    assert status == "loaded" and again.entries == {"conv1:tactic7"}
    assert load_timing_cache(None, FakeCache.create)[1] == "new"


@pytest.mark.parametrize("content", [b"\x00garbage\xff", b"TC1{not json", b""])
def test_corrupt_timing_cache_falls_back_to_an_empty_one(tmp_path, content):
    path = tmp_path / "timing.cache"
    path.write_bytes(content)
    cache, status = load_timing_cache(path, FakeCache.create)
    assert status == "corrupt" and cache.entries == set()
    assert not path.exists() and (tmp_path / "timing.cache.corrupt").read_bytes() == content  # set aside, not lost
    cache.entries.add("gemm:tactic3")
    store_timing_cache(path, cache.serialize)
    assert load_timing_cache(path, FakeCache.create)[1] == "loaded"


def test_a_cache_the_builder_returns_none_for_is_corrupt(tmp_path):
    path = tmp_path / "timing.cache"
    path.write_bytes(b"TC1[]")
    calls = []

    def create(blob):
        calls.append(blob)
        return None if blob else FakeCache()

    cache, status = load_timing_cache(path, create)
    assert status == "corrupt" and isinstance(cache, FakeCache) and calls == [b"TC1[]", b""]


def test_store_merges_what_other_workers_wrote(tmp_path):
    path = tmp_path / "timing.cache"
    mine, _ = load_timing_cache(path, FakeCache.create)
    theirs = FakeCache({"theirs:1"})
    store_timing_cache(path, theirs.serialize)  # another worker finished first
    mine.entries.add("mine:1")

    def merge(blob):
        mine.entries |= FakeCache.create(blob).entries
        return True

    assert store_timing_cache(path, mine.serialize, merge) == "merged"
    assert load_timing_cache(path, FakeCache.create)[0].entries == {"mine:1", "theirs:1"}
    path.write_bytes(b"junk")  # a corrupt file on disk is replaced, not merged
    assert store_timing_cache(path, mine.serialize, merge) == "written"
    assert load_timing_cache(path, FakeCache.create)[0].entries == {"mine:1", "theirs:1"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["timing.cache", "timing.cache.lock"]  # no temp files left


def test_plan_info_is_json(targets, tmp_path):
    p = plan(cfg("fp16", prune="2:4", cuda_graph=True), targets["h100"], "10.0.1", cache_dir=tmp_path)
    info = json.loads(json.dumps(p.info()))
    assert info["builder_flags"] == ["FP16", "SPARSE_WEIGHTS"] and info["cuda_graph"] is True
    assert info["profile"]["x"] == {"min": [1, 3, 224, 224], "opt": [8, 3, 224, 224], "max": [32, 3, 224, 224]}


def test_plan_needs_no_tensorrt():
    code = ("import sys\nfrom planner.backends.tensorrt import plan_build, TensorRT\nfrom planner.target import load_target\n"
            "from planner.config import TrialConfig\nfrom planner.model import InputSpec\n"
            f"t = load_target({str(ROOT / 'targets' / 'h100.yaml')!r})\n"
            "plan_build(TrialConfig('tensorrt', 8), t, '11.0', [InputSpec('x', (4,))], [1, 8])\n"
            "TensorRT.check(TrialConfig('tensorrt', 8), t, 'torch')\n"
            "print([m for m in ('tensorrt', 'torch', 'onnx', 'onnxruntime') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ----------------------------------------------------------------- the graph TensorRT parses


def test_qdq_check_rejects_asymmetric_and_int32_bias_graphs(tmp_path):
    """What onnxruntime's quantize_static writes today (asymmetric activations, int32 biases) is not a
    graph TensorRT parses: the build fails early with that reason instead of a parser error."""
    from planner.model import parse_model
    from planner.source import ModelSource
    from planner.transforms.quantize import quantize_onnx

    src = ModelSource(parse_model("tiny-mlp"), tmp_path / "cache")
    q = tmp_path / "q.onnx"
    quantize_onnx(src.onnx_path(TrialConfig("tensorrt", 1)), q, QuantConfig("int8_static"), src.calibration_inputs(16, seed=21))
    problems = qdq_problems(q)
    assert any("non-zero zero points" in p for p in problems)
    assert any("int32" in p for p in problems)


def test_symmetric_int8_static_writes_a_graph_tensorrt_parses(tmp_path):
    """The int8_static option `symmetric` (what the TensorRT backend forces): zero points 0, float biases;
    the quantized model still runs in ONNX Runtime and stays close to fp32."""
    import numpy as np
    import onnxruntime as ort

    from planner.config import freeze_options
    from planner.model import parse_model
    from planner.source import ModelSource
    from planner.transforms.quantize import quantize_onnx

    src = ModelSource(parse_model("tiny-mlp"), tmp_path / "cache")
    fp32 = src.onnx_path(TrialConfig("tensorrt", 1))
    q = tmp_path / "q.onnx"
    quantize_onnx(fp32, q, QuantConfig("int8_static", freeze_options({"symmetric": True})), src.calibration_inputs(16, seed=21))
    assert qdq_problems(q) == []
    x = src.sample_inputs(8, seed=3)
    ref = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"]).run(None, x)[0]
    got = ort.InferenceSession(str(q), providers=["CPUExecutionProvider"]).run(None, x)[0]
    assert np.corrcoef(ref.ravel(), got.ravel())[0, 1] > 0.95


def test_qdq_check_accepts_a_symmetric_int8_graph(tmp_path):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((4, 4), np.int8), "w_q")
    scale = numpy_helper.from_array(np.array(0.1, np.float32), "s")
    zp = numpy_helper.from_array(np.array(0, np.int8), "zp")
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["xq"], name="q_x"),
        helper.make_node("DequantizeLinear", ["xq", "s", "zp"], ["xd"], name="dq_x"),
        helper.make_node("DequantizeLinear", ["w_q", "s", "zp"], ["wd"], name="dq_w"),
        helper.make_node("MatMul", ["xd", "wd"], ["y"]),
    ]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 4])], [w, scale, zp])
    path = tmp_path / "sym.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    assert qdq_problems(path) == []
    zp.CopyFrom(numpy_helper.from_array(np.array(3, np.int8), "zp"))
    m = onnx.load(str(path))
    m.graph.initializer[2].CopyFrom(zp)
    onnx.save(m, str(path))
    assert "non-zero zero points" in qdq_problems(path)[0]


# ----------------------------------------------------------------- compile() applies the plan (wiring only)


class _Rec:
    """A recording stand-in for the `tensorrt` module.  It proves that `compile` applies the plan
    through the API names it uses; it says nothing about what real TensorRT accepts (tests/gpu/ does)."""

    def __init__(self, version):
        import types

        self.calls = []
        rec = self
        m = types.ModuleType("tensorrt")
        m.__version__ = version

        class Logger:
            WARNING = 2

            def __init__(self, level):
                pass

        class Cache:
            def __init__(self, blob=b""):
                self.blob = bytes(blob) or b"TC"

            def serialize(self):
                return self.blob + b"+built"

            def combine(self, other, ignore_mismatch):
                return True

        class Config:
            def __init__(self):
                self.cache = None

            def __setattr__(self, k, v):
                if k == "builder_optimization_level":
                    rec.calls.append(("optimization_level", v))
                object.__setattr__(self, k, v)

            def set_memory_pool_limit(self, pool, n):
                rec.calls.append(("pool", pool, n))

            def set_flag(self, f):
                rec.calls.append(("flag", f))

            def add_optimization_profile(self, p):
                rec.calls.append(("profile", dict(p.shapes)))

            def create_timing_cache(self, blob):
                rec.calls.append(("create_cache", bytes(blob)))
                if blob and not bytes(blob).startswith(b"TC"):
                    raise RuntimeError("bad timing cache")
                return Cache(blob)

            def set_timing_cache(self, c, ignore_mismatch):
                self.cache = c
                return True

            def get_timing_cache(self):
                return self.cache

        class Profile:
            def __init__(self):
                self.shapes = {}

            def set_shape(self, name, lo, opt, hi):
                self.shapes[name] = (tuple(lo), tuple(opt), tuple(hi))

        class Builder:
            def __init__(self, logger):
                pass

            def create_network(self, flags):
                rec.calls.append(("network_flags", flags))
                return object()

            def create_builder_config(self):
                return Config()

            def create_optimization_profile(self):
                return Profile()

            def build_serialized_network(self, network, config):
                return b"PLAN"

        class OnnxParser:
            num_errors = 0

            def __init__(self, network, logger):
                pass

            def parse_from_file(self, path):
                rec.calls.append(("parse", path))
                return True

        class Runtime:
            def __init__(self, logger):
                pass

            def deserialize_cuda_engine(self, blob):
                return object()

        m.Logger, m.Builder, m.OnnxParser, m.Runtime = Logger, Builder, OnnxParser, Runtime
        m.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=5)
        m.BuilderFlag = types.SimpleNamespace(FP16=0, INT8=1, SPARSE_WEIGHTS=7, FP8=15, BF16=17)
        m.MemoryPoolType = types.SimpleNamespace(WORKSPACE=0)
        self.module = m

    def of(self, kind):
        return [c[1:] for c in self.calls if c[0] == kind]


class _Source:
    def __init__(self, root):
        self.cache_dir = root / "cache"
        self.inputs = TOKENS
        self.calibration_source = "held-out"
        self.onnx = root / "model.onnx"
        self.onnx.write_bytes(b"onnx")

    def onnx_path(self, cfg):
        return self.onnx


@pytest.fixture
def fake_trt(monkeypatch, tmp_path):
    def install(version):
        rec = _Rec(version)
        monkeypatch.setitem(sys.modules, "tensorrt", rec.module)
        monkeypatch.setattr(trt_backend, "TrtRuntime", lambda engine, batch, graph: ("runtime", batch, graph))
        quantized = []

        def fake_quantize(src, dst, qcfg, calib):
            quantized.append(qcfg.scheme)
            dst.write_bytes(src.read_bytes())

        import planner.transforms.quantize as qmod

        monkeypatch.setattr(qmod, "quantize_onnx", fake_quantize)
        rec.quantized = quantized
        return rec

    return install


def test_compile_applies_a_weakly_typed_plan(fake_trt, targets, tmp_path):
    rec = fake_trt("10.0.1.6")
    src = _Source(tmp_path)
    c = cfg("fp16", batch=8, prune="2:4", optimization_level=5, workspace_mb=1024, cuda_graph=True)
    build = TensorRT().compile(src, c, targets["h100"], tmp_path / "w", batch_sizes=[1, 8, 32])
    assert rec.of("network_flags") == [(0,)]
    assert rec.of("flag") == [(0,), (7,)]  # FP16, SPARSE_WEIGHTS
    assert rec.quantized == ["fp16"] and rec.of("parse") == [(str(tmp_path / "w" / "model.fp16.onnx"),)]
    assert rec.of("optimization_level") == [(5,)] and rec.of("pool") == [(0, 1024 << 20)]
    assert rec.of("profile") == [({n: ((1, 128), (8, 128), (32, 128)) for n in ("input_ids", "attention_mask")},)]
    assert build.runtime == ("runtime", 8, True)  # the CUDA-graph launch is a runtime option
    assert (tmp_path / "w" / "model.plan").read_bytes() == b"PLAN"
    info = build.info
    assert info["timing_cache_status"] == "new" and Path(info["timing_cache"]).read_bytes() == b"TC+built"
    assert Path(info["timing_cache"]).parent == src.cache_dir / "tensorrt"


def test_compile_applies_a_strongly_typed_plan_and_reuses_the_cache(fake_trt, targets, tmp_path):
    rec = fake_trt("11.0.0.114")
    src = _Source(tmp_path)
    first = TensorRT().compile(src, cfg("fp16", batch=1), targets["h100"], tmp_path / "w1")
    assert rec.of("network_flags") == [(1 << 5,)] and rec.of("flag") == []  # STRONGLY_TYPED, no precision flag
    assert rec.quantized == ["fp16"]  # precision from the graph
    assert rec.of("profile")[0][0]["input_ids"] == ((1, 128), (1, 128), (1, 128))
    second = TensorRT().compile(src, cfg(batch=4), targets["h100"], tmp_path / "w2")
    assert first.info["timing_cache_status"] == "new" and second.info["timing_cache_status"] == "loaded"
    assert first.info["timing_cache"] == second.info["timing_cache"]
    assert rec.quantized == ["fp16"]  # an fp32 trial is built from the exported graph as is
    Path(second.info["timing_cache"]).write_bytes(b"\x00junk")
    third = TensorRT().compile(src, cfg(batch=2), targets["h100"], tmp_path / "w3")
    assert third.info["timing_cache_status"] == "corrupt"


def test_compile_rejects_before_building(fake_trt, targets, tmp_path):
    rec = fake_trt("10.12.0.36")
    with pytest.raises(CandidateFailed, match="strongly typed"):
        TensorRT().compile(_Source(tmp_path), cfg("bf16"), targets["h100"], tmp_path / "w")
    assert rec.calls == [] and rec.quantized == []


# ----------------------------------------------------------------- Triton hand-off of a plan


def test_triton_max_batch_size_is_the_profile_max(targets, tmp_path):
    from planner.select.export import triton_config

    p = plan(cfg(batch=8), targets["h100"], inputs=IMAGE, sizes=[1, 8, 32])
    manifest = {"target": targets["h100"].model_dump(mode="json"), "backend": {"name": "tensorrt", **p.info()},
                "model": {"inputs": [{"name": "x", "shape": [3, 224, 224], "dtype": "float32"}]}}
    io = {"io": [{"name": "x", "mode": "input", "dtype": "float32", "shape": [-1, 3, 224, 224]},
                 {"name": "logits", "mode": "output", "dtype": "float32", "shape": [-1, 10]}]}
    notes: list[str] = []
    text, declared = triton_config("m", 'platform: "tensorrt_plan"', tmp_path / "model.plan", manifest, 8, io, notes)
    assert declared["max_batch_size"] == 32 and "max_batch_size: 32" in text  # not the trial's batch 8
    assert 'platform: "tensorrt_plan"' in text and "KIND_GPU" in text and not notes
    manifest["backend"] = {"name": "tensorrt"}  # an older manifest without the profile
    _, declared = triton_config("m", 'platform: "tensorrt_plan"', tmp_path / "model.plan", manifest, 8, io, notes)
    assert declared["max_batch_size"] == 8 and "optimization profile" in notes[0]
