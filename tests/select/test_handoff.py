"""Hand-off to serving: registry versions + aliases, plots, export (bundle / Triton), verify, rebuild.

One real study (Optuna sqlite, MLflow sqlite, worker processes) per module, through the CLI; every
export/verify below runs the real `planner` CLI in a subprocess.
"""

import json
import re
import shutil
import types
from pathlib import Path

import numpy as np
import pytest
from support import DATA, run_cli, run_triton_python_model

from planner.paths import Home

STUDY = "handoff"


@pytest.fixture(scope="module")
def study_home(tmp_path_factory):
    root = tmp_path_factory.mktemp("handoff")
    home = Home(root / "home")
    space = root / "space.yaml"  # 2 configs, batch 4: torch (model.pt2) and onnxruntime at level basic (model.onnx)
    space.write_text("name: handoff\nbatch_size: [4]\nbackends:\n  torch: {}\n  onnxruntime:\n    graph_optimization_level: [basic]\n")
    r = run_cli("optimize", "--model", "tiny-mlp", "--target", DATA / "fast-cpu.yaml", "--space", space,
                "--trials", "2", "--sampler", "grid", "--eval-samples", "8", "--study", STUDY, "--home", home.root)
    assert r.returncode == 0, r.stderr + r.stdout
    assert "could not" not in r.stderr, r.stderr  # registry and plots did not warn
    return home


@pytest.fixture(scope="module")
def facts(study_home):
    import optuna
    from mlflow.tracking import MlflowClient

    from planner.select.pareto import pareto_front
    from planner.select.registry import registered_model_name

    study = optuna.load_study(study_name=STUDY, storage=study_home.optuna_url)
    client = MlflowClient(tracking_uri=study_home.tracking_uri)
    measured = [t for t in study.trials if t.user_attrs.get("metrics") and "duplicate_of" not in t.user_attrs]
    by_backend = {}
    for t in measured:
        by_backend.setdefault(t.user_attrs["config"]["backend"], t)
    return types.SimpleNamespace(study=study, client=client, front=pareto_front(study), by_backend=by_backend,
                                 name=registered_model_name("tiny-mlp", "fast-cpu"), home=study_home)


def _cli(home, *args, **kw):
    return run_cli(*args, "--home", home.root, **kw) if args[0] == "export" else run_cli(*args, **kw)


# ------------------------------------------------------------------ registry


def test_every_pareto_run_is_a_registered_version_with_tags(facts):
    assert facts.name == "planner-tiny-mlp-fast-cpu"
    versions = facts.client.search_model_versions(f"name = '{facts.name}'")
    by_run = {v.run_id: v for v in versions}
    assert facts.front and {p.run_id for p in facts.front} <= set(by_run)
    assert len(versions) == len(facts.front)
    for p in facts.front:
        v = by_run[p.run_id]
        assert v.source == f"runs:/{p.run_id}/engine"
        t = v.tags
        assert t["backend"] == p.config["backend"] and t["precision"] == "fp32" and t["prune_ratio"] == "0"
        assert t["batch_size"] == str(p.config["batch_size"]) and t["study"] == STUDY and t["trial"] == str(p.number)
        assert float(t["p50_ms"]) == pytest.approx(p.metrics["latency_p50_ms"], rel=1e-5)
        assert float(t["p99_ms"]) == pytest.approx(p.metrics["latency_p99_ms"], rel=1e-5)
        assert float(t["throughput"]) == pytest.approx(p.metrics["throughput"], rel=1e-5)
        assert float(t["quality_loss"]) == pytest.approx(p.quality_loss, rel=1e-5, abs=1e-12)
        assert len(t["config_key"]) == 16


def test_aliases_follow_the_policies_and_resolve_to_run_ids(facts):
    from planner.select.pareto import parse_policy
    from planner.select.registry import resolve

    aliases = facts.client.get_registered_model(facts.name).aliases
    assert set(aliases) == {"fastest", "most-accurate", "knee"}  # hyphens are valid MLflow alias characters
    for alias in aliases:
        pick = parse_policy(alias).select(facts.front)
        r = resolve(f"models:/{facts.name}@{alias}", facts.client)
        assert r.run_id == pick.run_id and r.alias == alias and r.version == str(aliases[alias])
        assert resolve(f"models:/{facts.name}/{r.version}", facts.client).run_id == pick.run_id
    assert resolve(pick.run_id, facts.client).run_id == pick.run_id
    assert resolve(f"runs:/{pick.run_id}/engine", facts.client).run_id == pick.run_id


def test_finishing_again_reuses_versions(facts):
    from planner.select.registry import register_front

    before = {v.run_id: v.version for v in facts.client.search_model_versions(f"name = '{facts.name}'")}
    for _ in range(2):
        out = register_front(facts.client, facts.front, model_name="tiny-mlp", target_name="fast-cpu", study_name=STUDY)
        assert out["created"] == [] and out["name"] == facts.name
    after = {v.run_id: v.version for v in facts.client.search_model_versions(f"name = '{facts.name}'")}
    assert after == before


def test_bad_references_list_what_exists(facts):
    from planner.errors import ConfigError
    from planner.select.registry import resolve

    with pytest.raises(ConfigError, match=r"has no alias 'nope'; aliases: fastest \(v\d+\), knee"):
        resolve(f"models:/{facts.name}@nope", facts.client)
    with pytest.raises(ConfigError, match=r"no registered model 'planner-x'; registered: .*models:/planner-tiny-mlp-fast-cpu@fastest"):
        resolve("models:/planner-x@fastest", facts.client)
    with pytest.raises(ConfigError, match=r"has no version '99'; versions: 1"):
        resolve(f"models:/{facts.name}/99", facts.client)
    with pytest.raises(ConfigError, match=r"run '0123456789abcdef0123456789abcdef': not found"):
        resolve("0123456789abcdef0123456789abcdef", facts.client)


def test_cli_bad_reference_exits_2_with_one_line(facts, tmp_path):
    r = _cli(facts.home, "export", f"models:/{facts.name}@slowest", "--out", tmp_path / "x")
    assert r.returncode == 2, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "aliases: fastest" in errors[0]
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------ plots


def test_plots_on_the_parent_run(facts, tmp_path):
    parent = facts.study.user_attrs["mlflow_parent_run_id"]
    names = {a.path for a in facts.client.list_artifacts(parent, "plots")}
    assert names == {"plots/pareto.png", "plots/pareto.html", "plots/parallel.png"}
    d = Path(facts.client.download_artifacts(parent, "plots", str(tmp_path)))
    for png in ("pareto.png", "parallel.png"):
        data = (d / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    page = (d / "pareto.html").read_text()
    assert "<svg" in page and "<script>" in page and "Pareto front" in page
    assert not re.search(r"<script[^>]+src=|<link[^>]+href=\"?https?:", page)  # self-contained, no CDN
    for p in facts.front:
        assert p.run_id in page
    assert page.count('class="pt"') == len([t for t in facts.study.trials if t.user_attrs.get("metrics")
                                             and "duplicate_of" not in t.user_attrs])


def test_plots_draw_slo_and_log_axis(tmp_path):
    from planner.config import TrialConfig
    from planner.record.trial import TrialRecord
    from planner.select.plots import write_study_plots

    pts = [TrialRecord(i, TrialConfig(b, 1 + i % 2).to_dict(), b, {"latency_ms": lat, "quality_loss": q, "throughput": 1 / lat},
                       None, feasible=q < 0.5, on_front=par)
           for i, (b, lat, q, par) in enumerate([("a", 0.1, 0.2, True), ("b", 5.0, 0.0, True), ("a", 3.0, 0.3, False),
                                                 ("b", 2.0, 0.9, False)])]
    target = types.SimpleNamespace(constraints=types.SimpleNamespace(latency_slo_ms=4.0, max_quality_loss=0.5))
    files = write_study_plots(pts, tmp_path, target, "t")
    assert {f.name for f in files} == {"pareto.html", "pareto.png", "parallel.png"}
    page = (tmp_path / "pareto.html").read_text()
    assert "SLO 4 ms" in page and "log scale" in page  # 0.1 .. 5 ms spans > 10x


# ------------------------------------------------------------------ export + verify


def _export(facts, ref, out, **kw):
    """In-process export (the CLI is exercised separately): one MLflow import for the whole module."""
    from planner.select.export import export

    return export(ref, out, home=facts.home.root, **kw)


def _verify(path):
    from planner.select.verify import verify

    return verify(path)


def _check_bundle(out: Path, engine: str, batch: int):
    from planner.cache import sha256_file

    m = json.loads((out / "manifest.json").read_text())
    assert engine in m["files"] and "samples.npz" in m["files"] and "README.md" in m["files"]
    for name, f in m["files"].items():
        assert sha256_file(out / name) == f["sha256"]
    e = m["export"]
    assert e["engine_file"] == engine and e["batch_size"] == batch and e["reference"] == "fp32"
    assert e["tolerance"]["atol"] == pytest.approx(1.5 * m["metrics"]["max_abs_error"] + 1e-5)
    assert e["rebuild_check"] == "ok"
    with np.load(out / "samples.npz") as z:
        assert z["in:x"].shape[0] % batch == 0 and z["in:x"].shape[1:] == (64,)
        assert z["ref"].shape == (z["in:x"].shape[0], 10)
    readme = (out / "README.md").read_text()
    assert "planner verify ." in readme
    return m, readme


def test_export_bundle_and_verify_onnxruntime_via_alias(facts, tmp_path):
    from planner.select.pareto import Fastest

    fastest = Fastest().select(facts.front)
    t = facts.by_backend["onnxruntime"]
    ref = f"models:/{facts.name}@fastest" if fastest.config["backend"] == "onnxruntime" else t.user_attrs["mlflow_run_id"]
    out = tmp_path / "ort"
    r = _cli(facts.home, "export", ref, "--out", out)  # the real CLI, end to end
    assert r.returncode == 0, r.stderr + r.stdout
    m, readme = _check_bundle(out, "model.onnx", json.loads((out / "manifest.json").read_text())["trial"]["config"]["batch_size"])
    assert "session.json" in m["files"] and "onnxruntime" in readme and "InferenceSession" in readme
    assert not (out / "worker.log").exists()
    v = run_cli("verify", out)
    assert v.returncode == 0, v.stderr + v.stdout
    assert "checksums: 4 files match" in v.stdout and "match the fp32 reference" in v.stdout
    assert re.search(r"latency: p50 [\d.e-]+ ms here vs [\d.e-]+ ms recorded \(ratio [\d.]+", v.stdout)


def test_export_bundle_and_verify_torch_export(facts, tmp_path):
    t = facts.by_backend["torch"]
    out = tmp_path / "torch"
    _export(facts, t.user_attrs["mlflow_run_id"], out)
    m, readme = _check_bundle(out, "model.pt2", t.user_attrs["config"]["batch_size"])
    assert "torch.export.load" in readme and m["trial"]["number"] == t.number
    v = _verify(out)
    assert v.ok, v.problems
    assert any("match the fp32 reference" in line for line in v.lines) and "latency_ratio" in v.result


def test_export_by_study_and_trial(facts, tmp_path):
    t = facts.by_backend["torch"]
    out = tmp_path / "st"
    _export(facts, None, out, study=STUDY, trial=t.number)
    assert json.loads((out / "manifest.json").read_text())["export"]["source"]["run_id"] == t.user_attrs["mlflow_run_id"]


def test_tampering_is_caught_and_named(facts, tmp_path):
    t = facts.by_backend["onnxruntime"]
    out = tmp_path / "b"
    _export(facts, t.user_attrs["mlflow_run_id"], out)
    bad = tmp_path / "tampered"
    shutil.copytree(out, bad)
    data = bytearray((bad / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01
    (bad / "model.onnx").write_bytes(bytes(data))
    v = run_cli("verify", bad)
    assert v.returncode == 1 and "model.onnx: sha256 mismatch" in v.stderr, v.stderr
    assert "outputs" not in v.stdout  # the engine is not loaded when a checksum fails
    (bad / "model.onnx").write_bytes(out.joinpath("model.onnx").read_bytes())
    (bad / "samples.npz").unlink()
    v = _verify(bad)
    assert not v.ok and v.problems == ["samples.npz: missing"] and not v.result


def test_wrong_outputs_fail_verify(facts, tmp_path):
    """A consistent bundle (checksums rewritten) whose reference outputs are off must fail on the comparison."""
    from planner.record.manifest import file_checksums

    t = facts.by_backend["onnxruntime"]
    out = tmp_path / "w"
    _export(facts, t.user_attrs["mlflow_run_id"], out)
    with np.load(out / "samples.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["ref"] = arrays["ref"] + 0.01
    np.savez(out / "samples.npz", **arrays)
    m = json.loads((out / "manifest.json").read_text())
    m["files"] = file_checksums(out, list(m["files"]))
    (out / "manifest.json").write_text(json.dumps(m))
    v = _verify(out)
    assert not v.ok and "differ from the reference beyond" in v.problems[0], v.problems


def test_non_empty_out_needs_force(facts, tmp_path):
    out = tmp_path / "full"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    ref = facts.front[0].run_id
    r = _cli(facts.home, "export", ref, "--out", out)
    assert r.returncode == 2 and "--force" in r.stderr
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    _export(facts, ref, out, force=True)
    assert not (out / "keep.txt").exists() and (out / "manifest.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["full"]  # no temp or backup folders left beside it


def test_triton_onnx_repository(facts, tmp_path):
    import onnx

    t = facts.by_backend["onnxruntime"]
    out = tmp_path / "repo"
    _export(facts, t.user_attrs["mlflow_run_id"], out, fmt="triton", name="mlp")
    model = out / "mlp"
    assert (model / "1" / "model.onnx").is_file() and (model / "config.pbtxt").is_file()
    cfg = (model / "config.pbtxt").read_text()
    g = onnx.load(str(model / "1" / "model.onnx")).graph
    assert 'name: "mlp"' in cfg and 'platform: "onnxruntime_onnx"' in cfg
    assert "max_batch_size: 16" in cfg  # dynamic-batch ONNX: the target's max_batch_size
    inp = re.search(r"input \[\s*\{\s*name: \"(\w+)\"\s*data_type: (\w+)\s*dims: \[ ([\d, -]+) \]", cfg)
    outp = re.search(r"output \[\s*\{\s*name: \"(\w+)\"\s*data_type: (\w+)\s*dims: \[ ([\d, -]+) \]", cfg)
    assert inp.groups() == (g.input[0].name, "TYPE_FP32", "64")
    assert outp.groups() == (g.output[0].name, "TYPE_FP32", "10")
    assert t.user_attrs["config"]["backend_options"]["graph_optimization_level"] == "basic"
    assert "optimization { graph: { level: -1 } }" in cfg  # Triton's code for ORT_ENABLE_BASIC
    assert 'key: "intra_op_thread_count" value: { string_value: "1" }' in cfg
    assert cfg.count("{") == cfg.count("}") and cfg.count("[") == cfg.count("]")
    m = json.loads((model / "manifest.json").read_text())
    assert {"config.pbtxt", "1/model.onnx", "1/session.json"} <= set(m["files"])
    v = _verify(out)
    assert v.ok, v.problems
    (model / "1" / "model.onnx").write_bytes(b"not a model")
    v = _verify(out)
    assert not v.ok and v.problems[0].startswith("1/model.onnx: sha256 mismatch")


def test_triton_torch_export_python_backend(facts, tmp_path, monkeypatch):
    t = facts.by_backend["torch"]
    out = tmp_path / "repo"
    _export(facts, t.user_attrs["mlflow_run_id"], out, fmt="triton", name="mlp_pt2")
    model = out / "mlp_pt2"
    cfg = (model / "config.pbtxt").read_text()
    assert 'backend: "python"' in cfg and "platform" not in cfg.replace("# written", "")
    assert "max_batch_size: 16" in cfg  # exported with a dynamic batch axis
    assert re.search(r'name: "x"\s*data_type: TYPE_FP32\s*dims: \[ 64 \]', cfg)
    assert re.search(r'name: "output0"\s*data_type: TYPE_FP32\s*dims: \[ 10 \]', cfg)
    assert (model / "1" / "model.pt2").is_file() and (model / "1" / "model.py").is_file()
    m = json.loads((model / "manifest.json").read_text())
    assert {"config.pbtxt", "1/model.pt2", "1/model.py"} <= set(m["files"]) and m["export"]["engine_dir"] == "1"

    # run the generated Triton model.py against a stand-in for triton_python_backend_utils
    with np.load(model / "samples.npz") as z:
        x, ref = z["in:x"], z["ref"]
    b = t.user_attrs["config"]["batch_size"]
    out = run_triton_python_model(model, {"x": x[:b]}, monkeypatch)
    np.testing.assert_allclose(out, ref[:b], atol=1e-5)


def test_without_the_study_reference_the_engine_is_its_own_reference(facts, tmp_path):
    t = facts.by_backend["onnxruntime"]
    out = tmp_path / "own"
    from planner.select.export import export

    export(t.user_attrs["mlflow_run_id"], out, tracking_uri=facts.home.tracking_uri, home=tmp_path / "elsewhere")
    e = json.loads((out / "manifest.json").read_text())["export"]
    assert e["reference"] == "engine" and e["rebuild_check"].startswith("skipped")
    assert "reference outputs are the engine's own" in (out / "README.md").read_text()
    assert _verify(out).ok


# ------------------------------------------------------------------ path safety


@pytest.mark.parametrize("bad", ["../x", "/abs", "a/../../x", "..", "a/..", "C:\\x", "a\\b", "", " x", "x\x00"])
def test_safe_relpath_rejects_escapes(bad):
    from planner.paths import UnsafePath, safe_relpath

    with pytest.raises(UnsafePath):
        safe_relpath(bad)


def test_safe_relpath_and_join_accept_inside(tmp_path):
    from planner.paths import UnsafePath, safe_join, safe_relpath

    assert safe_relpath("model.onnx") == "model.onnx"
    assert safe_relpath("./1/model.plan") == "1/model.plan"
    assert safe_join(tmp_path, "1/model.onnx") == tmp_path / "1" / "model.onnx"
    (tmp_path / "link").symlink_to("/")
    with pytest.raises(UnsafePath, match="resolves outside"):
        safe_join(tmp_path, "link/etc/passwd")


def test_a_manifest_naming_a_path_outside_is_refused(facts, tmp_path):
    """A run whose manifest lists '../evil' (as a hostile artifact store could) is not exported, and nothing is written."""
    run = facts.client.create_run(facts.client.get_run(facts.front[0].run_id).info.experiment_id, run_name="evil",
                                  tags={"planner.kind": "trial"})
    manifest = json.loads(Path(facts.client.download_artifacts(facts.front[0].run_id, "manifest.json", str(tmp_path))).read_text())
    manifest["files"] = {"../evil.onnx": {"sha256": "0" * 64, "bytes": 1}, **manifest["files"]}
    facts.client.log_text(run.info.run_id, json.dumps(manifest), "manifest.json")
    facts.client.set_terminated(run.info.run_id)
    parent = tmp_path / "dst"
    parent.mkdir()
    from planner.paths import UnsafePath

    with pytest.raises(UnsafePath, match="'..' would escape"):
        _export(facts, run.info.run_id, parent / "out")
    assert list(parent.iterdir()) == []
    facts.client.delete_run(run.info.run_id)


# ------------------------------------------------------------------ rebuild


def test_rebuild_config_equals_stored(facts):
    from planner.config import TrialConfig
    from planner.select.export import rebuild_config

    for t in facts.study.trials:
        if "config" in t.user_attrs:
            assert rebuild_config(facts.study, t.number) == TrialConfig.from_dict(t.user_attrs["config"])
    assert rebuild_config(STUDY, facts.by_backend["torch"].number, storage=facts.home.optuna_url).backend == "torch"


def test_rebuild_config_detects_a_changed_config(facts):
    from planner.errors import ConfigError, PlannerError
    from planner.select.export import rebuild_config

    t = facts.by_backend["onnxruntime"]
    cfg = json.loads(json.dumps(t.user_attrs["config"]))
    cfg["batch_size"] = 16
    fake_trial = types.SimpleNamespace(number=t.number, params=t.params, user_attrs={**t.user_attrs, "config": cfg})
    fake = types.SimpleNamespace(study_name=STUDY, user_attrs=facts.study.user_attrs, get_trials=lambda deepcopy=False: [fake_trial])
    with pytest.raises(PlannerError, match="differs from the stored one"):
        rebuild_config(fake, t.number)
    with pytest.raises(ConfigError, match="no trial 99"):
        rebuild_config(facts.study, 99)


def test_rebuilt_engine_gives_the_measured_outputs(facts, tmp_path):
    """The config rebuilt from the study (same `sample` code, FixedTrial) compiles to an engine whose outputs
    match the fp32 reference exactly as the measured one did."""
    from planner.measure.runner import run_job, worker_env
    from planner.model import ModelSpec
    from planner.select.export import rebuild_config
    from planner.target import Target

    t = facts.by_backend["onnxruntime"]
    cfg = rebuild_config(facts.study, t.number)
    target = Target.model_validate(facts.study.user_attrs["target_spec"])
    job = {"kind": "trial", "spec": ModelSpec.from_dict(facts.study.user_attrs["model_spec"]).to_dict(),
           "target": target.model_dump(mode="json"), "config": cfg.to_dict(), "cache_dir": str(tmp_path / "cache"),
           "workdir": str(tmp_path / "w"), "reference": str(facts.home.study_dir(STUDY) / "reference.npz")}
    res = run_job(job, tmp_path / "w", 300, worker_env(target, tmp_path / "cache"))
    assert res["status"] == "ok", res
    recorded = t.user_attrs["metrics"]["max_abs_error"]
    assert res["quality"]["max_abs_error"] <= 1.5 * recorded + 1e-6
    assert res["quality"]["quality_loss"] < 1e-6
