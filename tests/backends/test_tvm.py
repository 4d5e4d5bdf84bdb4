"""TVM backend with real TVM on a tiny MLP: correctness (torch and ONNX sources), MetaSchedule database
reuse, artifact reload in a fresh process, and clean failures."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tvm")

from planner.backends.tvm import TVM, parse_target, target_dirname  # noqa: E402
from planner.config import QuantConfig, TrialConfig, freeze_options  # noqa: E402
from planner.errors import CandidateFailed, FailReason  # noqa: E402
from planner.model import parse_model  # noqa: E402
from planner.source import ModelSource, export_onnx  # noqa: E402
from planner.target import Device, Target  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]

FACTORY = textwrap.dedent(
    """
    import torch

    def mlp():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10)).eval()

    def example_inputs(batch_size):
        return (torch.randn(batch_size, 64),)
    """
)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("models") / "tvm_models.py"
    p.write_text(FACTORY)
    return p


@pytest.fixture(scope="module")
def source(model_file, tmp_path_factory):
    return ModelSource(parse_model(f"{model_file}:mlp"), cache_dir=tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def target():
    return Target(name="cpu-test", device=Device(kind="cpu"), threads=2, precisions=["fp32", "fp16"], tvm_target="llvm -num-cores=2")


def _cfg(batch=2, scheme="none", **opts):
    return TrialConfig(backend="tvm", batch_size=batch, backend_options=freeze_options(opts), quant=QuantConfig(scheme))


def _reference(source, feed):
    import torch

    with torch.inference_mode():
        return source.base_module()(*[torch.from_numpy(v) for v in feed.values()]).numpy()


@pytest.fixture(scope="module")
def untuned(source, target, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("untuned")
    return TVM().compile(source, _cfg(2), target, workdir), workdir


def test_module_import_stays_light():
    code = "import sys, planner.backends.tvm; assert 'tvm' not in sys.modules, 'tvm imported at module level'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_untuned_build_matches_torch(untuned, source):
    build, workdir = untuned
    assert build.ok, build.error
    info = build.info
    assert info["tvm_version"] and '"kind":"llvm"' in info["tvm_target"]
    assert info["tuning_trials"] == 0 and info["tuning_seconds"] == 0.0
    assert info["compile_seconds"] > 0 and build.compile_seconds > 0
    assert {p.name for p in build.artifacts} == {"model.so", "tvm_meta.json"}
    feed = source.example_inputs(2, seed=3)
    out = build.runtime.infer(feed)
    assert len(out) == 1 and out[0].shape == (2, 10)
    np.testing.assert_allclose(out[0], _reference(source, feed), rtol=1e-4, atol=1e-4)
    run = build.runtime.bind(feed)
    run()
    run()
    build.runtime.synchronize()


def test_artifact_loads_in_fresh_process(untuned, source, tmp_path):
    _, workdir = untuned
    feed = source.example_inputs(2, seed=4)
    np.save(tmp_path / "x.npy", feed["x"] if "x" in feed else next(iter(feed.values())))
    code = textwrap.dedent(
        f"""
        import sys, numpy as np
        from planner.backends.tvm import load_artifact
        rt = load_artifact({str(workdir)!r})
        out = rt.infer({{"x": np.load({str(tmp_path / 'x.npy')!r})}})
        rt.bind({{"x": np.load({str(tmp_path / 'x.npy')!r})}})()
        np.save({str(tmp_path / 'y.npy')!r}, out[0])
        """
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), _reference(source, feed), rtol=1e-4, atol=1e-4)
    meta = json.loads((workdir / "tvm_meta.json").read_text())
    assert meta["batch_size"] == 2 and meta["inputs"][0]["shape"] == [2, 64] and meta["device"] == "cpu"


def test_onnx_source_matches(source, target, tmp_path):
    onnx_file = tmp_path / "mlp.onnx"
    export_onnx(source.base_module(), source.example_inputs(2), onnx_file)
    osrc = ModelSource(parse_model(str(onnx_file)), cache_dir=tmp_path / "cache")
    assert osrc.format == "onnx"
    cfg = _cfg(3)
    assert TVM.check(cfg, target, "onnx") is None
    build = TVM().compile(osrc, cfg, target, tmp_path / "w")
    assert build.ok, build.error
    feed = osrc.example_inputs(3, seed=5)
    out = build.runtime.infer(feed)
    np.testing.assert_allclose(out[0], _reference(source, feed), rtol=1e-4, atol=1e-4)


def test_tuning_database_is_written_then_reused(model_file, target, tmp_path):
    src = ModelSource(parse_model(f"{model_file}:mlp"), cache_dir=tmp_path / "cache")
    cfg = _cfg(2, tuning_trials=4)
    first = TVM().compile(src, cfg, target, tmp_path / "a")
    assert first.ok, first.error
    i1 = first.info
    assert i1["tuning_trials_done"] >= 1 and i1["reused_records"] == 0 and i1["tuning_records"] >= 1
    assert i1["tuning_seconds"] > 0 and i1["compile_seconds"] > 0
    db = Path(i1["tuning_database"])
    assert db.is_relative_to(tmp_path / "cache" / "tvm") and (db / "database_tuning_record.json").stat().st_size > 0
    feed = src.example_inputs(2, seed=6)
    ref = _reference(src, feed)
    np.testing.assert_allclose(first.runtime.infer(feed)[0], ref, rtol=1e-4, atol=1e-4)

    second = TVM().compile(src, cfg, target, tmp_path / "b")
    assert second.ok, second.error
    i2 = second.info
    assert i2["tuning_trials_done"] == 0 and i2["reused_records"] >= 1 and i2["tuning_database"] == str(db)
    assert i2["tuning_seconds"] < i1["tuning_seconds"] / 3
    np.testing.assert_allclose(second.runtime.infer(feed)[0], ref, rtol=1e-4, atol=1e-4)

    # a larger budget tunes only the difference, keeping the old records
    more = TVM().compile(src, _cfg(2, tuning_trials=6), target, tmp_path / "c")
    assert more.ok, more.error
    assert more.info["reused_records"] == i1["tuning_records"]
    assert more.info["tuning_trials_done"] >= 1 and more.info["tuning_trials_done"] <= 6 - i1["tuning_trials_done"]


def test_tuning_time_cap_stops_early(model_file, target, tmp_path):
    src = ModelSource(parse_model(f"{model_file}:mlp"), cache_dir=tmp_path / "cache")
    build = TVM().compile(src, _cfg(2, tuning_trials=200, max_tuning_seconds=0.5), target, tmp_path / "w")
    assert build.ok, build.error
    assert build.info["tuning_stopped_by_cap"] is True
    assert build.info["tuning_trials_done"] < 200
    feed = src.example_inputs(2, seed=8)
    np.testing.assert_allclose(build.runtime.infer(feed)[0], _reference(src, feed), rtol=1e-4, atol=1e-4)


def test_fp16_mixed_precision(source, target, tmp_path):
    cfg = _cfg(2, scheme="fp16")
    assert TVM.check(cfg, target, "torch") is None
    build = TVM().compile(source, cfg, target, tmp_path)
    assert build.ok, build.error
    assert build.info["mixed_precision"] == "float16"
    feed = source.example_inputs(2, seed=7)
    np.testing.assert_allclose(build.runtime.infer(feed)[0], _reference(source, feed), rtol=2e-2, atol=2e-2)


def test_check_rejects_what_tvm_cannot_do(target):
    assert "bf16" in TVM.check(_cfg(scheme="bf16"), target, "torch")
    fp32_only = target.model_copy(update={"precisions": ["fp32"]})
    assert "fp16" in TVM.check(_cfg(scheme="fp16"), fp32_only, "torch")
    assert "unknown; valid" in TVM.check(_cfg(tuning_trails=3), target, "torch")
    assert TVM.check(_cfg(tuning_trials=8, threads=1), target, "onnx") is None


def test_bad_tvm_target_fails_the_candidate_not_the_process(source, target, tmp_path):
    broken = target.model_copy(update={"tvm_target": "llvmx -mcpu=nonsense"})
    with pytest.raises(CandidateFailed) as e:
        TVM().compile(source, _cfg(2), broken, tmp_path)
    assert e.value.reason == FailReason.COMPILE and "llvmx" in e.value.message


def test_target_strings_become_typed_dicts():
    d = parse_target("llvm -mcpu=haswell -num-cores=4 -mattr=+avx2,+fma", "cpu", threads=2)
    assert d == {"kind": "llvm", "mcpu": "haswell", "num-cores": 2, "mattr": ["+avx2", "+fma"]}
    assert parse_target("cuda -arch=sm_80", "cuda") == {"kind": "cuda", "arch": "sm_80"}
    assert parse_target(None, "cuda", gpu_cc="8.9") == {"kind": "cuda", "arch": "sm_89"}
    assert parse_target('{"kind": "llvm"}', "cpu", threads=3) == {"kind": "llvm", "num-cores": 3}
    assert target_dirname(d) == "llvm_mattr=+avx2,+fma_mcpu=haswell_num-cores=2"
