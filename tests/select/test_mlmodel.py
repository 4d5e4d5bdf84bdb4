"""Registered deployments are MLflow Models (issue 27): `mlflow.pyfunc.load_model("models:/…@knee")`,
`mlflow models serve`, the native onnx flavor, and the same engine files as `planner export`'s bundle.

One real study (Optuna sqlite, MLflow sqlite + file artifacts, worker processes) with an ONNX Runtime, an
OpenVINO and a torch.export deployment of tiny-mlp; its front is registered by the study itself, and every
measured trial is registered once more (through the same `register_front`) under a second name so that each
engine kind has a version to load.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import types
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from support import DATA, ROOT, run_cli, run_triton_python_model

from planner.paths import Home

STUDY = "mlmodel"
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
ALL = "tiny-mlp-all"  # model name under which every measured trial is registered


KINDS = ["onnxruntime", "openvino", "torch", "torch-int8"]  # the study's deployments: backend, -int8 for int8_dynamic


@pytest.fixture(scope="module")
def study_home(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlmodel")
    home = Home(root / "home")
    # 4 configs at batch 4: onnxruntime, openvino (fixed batch), torch (model.pt2), torch int8_dynamic (model.ts:
    # torch.export cannot hold its packed weights, so it is saved as TorchScript)
    space = root / "space.yaml"
    space.write_text("name: mlmodel\nbatch_size: [4]\nbackends:\n  torch: {}\n  onnxruntime:\n"
                     "    graph_optimization_level: [basic]\n  openvino: {}\nquantize:\n  schemes: [none, int8_dynamic]\n"
                     "seeds:\n  - {backend: onnxruntime, quant: none}\n  - {backend: openvino, quant: none}\n"
                     "  - {backend: torch, quant: none}\n  - {backend: torch, quant: int8_dynamic}\n")
    target = root / "target.yaml"
    target.write_text((DATA / "fast-cpu.yaml").read_text().replace("backends: [", "backends: [openvino, "))
    # every deployment measured in full: eager torch int8 at ~20x ONNX Runtime's time on tiny-mlp was cut by the
    # early exit when the other test worker loaded the host (a study without its torch-int8 point)
    r = run_cli("optimize", "--model", "tiny-mlp", "--target", target, "--space", space, "--trials", "4",
                "--eval-samples", "8", "--early-exit-factor", "0", "--study", STUDY, "--home", home.root)
    assert r.returncode == 0, r.stderr + r.stdout
    assert "could not" not in r.stderr, r.stderr  # the MLflow Model was logged without a warning
    return home


@pytest.fixture(scope="module")
def facts(study_home):
    import mlflow
    import optuna
    from mlflow.tracking import MlflowClient

    from planner.select.pareto import feasible_points, pareto_front
    from planner.select.registry import register_front, registered_model_name

    mlflow.set_tracking_uri(study_home.tracking_uri)
    study = optuna.load_study(study_name=STUDY, storage=study_home.optuna_url)
    client = MlflowClient(tracking_uri=study_home.tracking_uri)
    points = {p.config["backend"] + ("-int8" if p.config["quant"]["scheme"] != "none" else ""): p
              for p in feasible_points(study)}
    assert set(points) == set(KINDS)
    reg = register_front(client, list(points.values()), model_name=ALL, target_name="fast-cpu", study_name=STUDY)
    assert len(reg["created"]) == len(KINDS)
    return types.SimpleNamespace(study=study, client=client, front=pareto_front(study), points=points, home=study_home,
                                 name=registered_model_name("tiny-mlp", "fast-cpu"), all=reg["name"],
                                 version={b: reg["versions"][p.run_id] for b, p in points.items()})


def _uri(facts, backend):
    return f"models:/{facts.all}/{facts.version[backend]}"


@pytest.fixture(scope="module")
def bundles(facts, tmp_path_factory):
    """backend -> folder of `planner export` of its registered version (verified)."""
    from planner.select.export import export
    from planner.select.verify import verify

    root = tmp_path_factory.mktemp("bundles")
    out = {}
    for b in facts.points:
        export(_uri(facts, b), root / b, home=facts.home.root)
        rep = verify(root / b)
        assert rep.ok, rep.problems
        out[b] = root / b
    return out


def _samples(bundle: Path):
    with np.load(bundle / "samples.npz") as z:
        return z["in:x"], z["ref"]


def _within(out, ref, tol):
    bound = tol["atol"] + tol["rtol"] * np.abs(ref)
    return np.abs(out.astype(np.float64) - ref) <= bound


# ------------------------------------------------------------------ the MLmodel


def test_registered_versions_are_mlflow_models_with_signature_example_requirements(facts, tmp_path):
    from mlflow.models import Model

    aliases = facts.client.get_registered_model(facts.name).aliases
    assert set(aliases) == {"fastest", "most-accurate", "knee"}
    note = facts.client.get_run(facts.study.user_attrs["mlflow_parent_run_id"]).data.tags["mlflow.note.content"]
    assert f"`mlflow models serve -m models:/{facts.name}@knee --env-manager local`" in note  # the study says how
    for b in facts.points:
        v = facts.client.get_model_version(facts.all, facts.version[b])
        assert v.source == f"runs:/{v.run_id}/engine"  # the engine files as measured: no second copy
        d = Path(facts.client.download_artifacts(v.run_id, "engine", str(tmp_path / b)))
        m = Model.load(str(d / "MLmodel"))
        pf = m.flavors["python_function"]
        assert pf["loader_module"] == "planner.select.pyfunc" and pf["code"] == "code"
        assert (d / "code" / "planner" / "backends" / "base.py").is_file()
        assert not list((d / "code").rglob("__pycache__"))
        meta = m.metadata["planner"]
        engine = {"onnxruntime": "model.onnx", "openvino": "model.xml", "torch": "model.pt2", "torch-int8": "model.ts"}[b]
        assert meta["engine_file"] == engine and meta["backend"] == b.removesuffix("-int8") and meta["batch_size"] == 4
        p = facts.points[b]
        assert meta["trial"] == p.number and meta["study"] == STUDY and meta["target"] == "fast-cpu"
        assert meta["metrics"]["latency_ms"] == pytest.approx(p.metrics["latency_ms"])
        assert meta["metrics"]["quality_loss"] == pytest.approx(p.metrics["quality_loss"], abs=1e-12)
        assert engine in meta["manifest"]["files"] and len(meta["manifest"]["files"][engine]["sha256"]) == 64
        sig = m.signature.to_dict()
        ins, outs = json.loads(sig["inputs"]), json.loads(sig["outputs"])
        batch_axis = -1 if meta["dynamic_batch"] else 4
        assert ins == [{"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [batch_axis, 64]}, "name": "x"}]
        assert outs == [{"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [batch_axis, 10]}, "name": "output0"}]
        example = json.loads((d / "serving_input_example.json").read_text())
        assert np.asarray(example["inputs"]["x"]).shape == (4, 64)
        reqs = (d / "requirements.txt").read_text().split()
        libs = meta["manifest"]["environment"]["libraries"]
        runtime = {"onnxruntime": "onnxruntime", "openvino": "openvino"}.get(b, "torch")
        assert f"{runtime}=={libs[runtime]}" in reqs and f"numpy=={libs['numpy']}" in reqs
        assert not any(r.startswith(("torch", "optuna")) for r in reqs if runtime != "torch")
    # ONNX Runtime, torch.export programs and this TorchScript trace take any batch; OpenVINO's IR was reshaped to
    # the trial's batch
    dyn = {b: Model.load(str(tmp_path / b / "engine" / "MLmodel")).metadata["planner"]["dynamic_batch"] for b in facts.points}
    assert dyn == {"onnxruntime": True, "openvino": False, "torch": True, "torch-int8": True}


def test_a_torchscript_engine_goes_to_triton_and_its_python_model_runs_it(facts, tmp_path, monkeypatch):
    """torch's dynamic int8 trial (model.ts): the Triton repository holds the TorchScript file, and the Python
    backend's model.py loads it with torch alone and answers a request with the bundle's reference outputs."""
    from planner.select.export import export
    from planner.select.verify import verify

    export(_uri(facts, "torch-int8"), tmp_path / "repo", fmt="triton", name="mlp_ts", home=facts.home.root)
    model = tmp_path / "repo" / "mlp_ts"
    assert (model / "1" / "model.ts").is_file() and not (model / "1" / "model.pt2").exists()
    assert 'backend: "python"' in (model / "config.pbtxt").read_text()
    assert "torch.jit.load" in (model / "README.md").read_text()
    assert verify(tmp_path / "repo").ok
    x, ref = _samples(model)
    out = run_triton_python_model(model, {"x": x[:4]}, monkeypatch)
    tol = json.loads((model / "manifest.json").read_text())["export"]["tolerance"]
    assert out.shape == ref[:4].shape and _within(out, ref[:4], tol).all()


@pytest.mark.parametrize("backend", KINDS)
def test_pyfunc_predict_equals_what_verify_checks(facts, bundles, backend):
    """`mlflow.pyfunc.load_model(models:/…).predict` gives the outputs `planner verify` checks against the fp32
    reference, within the bundle's tolerance; the engine files are the bundle's, byte for byte."""
    import mlflow

    bundle = bundles[backend]
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["export"]["reference"] == "fp32"
    model = mlflow.pyfunc.load_model(_uri(facts, backend))
    local = Path(mlflow.artifacts.download_artifacts(_uri(facts, backend)))
    for f in model.metadata.metadata["planner"]["manifest"]["files"]:
        assert (local / f).read_bytes() == (bundle / f).read_bytes(), f
    x, ref = _samples(bundle)
    out = np.concatenate([model.predict({"x": x[i:i + 4]}) for i in range(0, len(x), 4)])
    assert out.shape == ref.shape and out.dtype == np.float32
    ok = _within(out, ref, manifest["export"]["tolerance"])
    assert ok.all(), f"{(~ok).sum()} values beyond tolerance; max abs error {np.abs(out - ref).max():.3g}"
    if model.metadata.metadata["planner"]["dynamic_batch"]:  # one call with every sample (another GEMM blocking)
        assert _within(model.predict(x), ref, manifest["export"]["tolerance"]).all()


def test_fixed_batch_engine_refuses_another_batch_by_its_signature(facts):
    import mlflow
    from mlflow.exceptions import MlflowException

    model = mlflow.pyfunc.load_model(_uri(facts, "openvino"))
    with pytest.raises(MlflowException, match=r"does not match expected shape \(4, 64\)"):
        model.predict({"x": np.zeros((3, 64), np.float32)})


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_loader_runs_the_engine_with_its_runtime_alone(facts, backend):
    """A fresh process: loading and predicting imports the engine's runtime, not torch, optuna or planner's
    search, measurement or tracking code."""
    code = f"""
import sys, numpy as np, mlflow
mlflow.set_tracking_uri({facts.home.tracking_uri!r})
m = mlflow.pyfunc.load_model({_uri(facts, backend)!r})
m.predict({{"x": np.zeros((4, 64), np.float32)}})
bad = sorted(k for k in sys.modules if k.split(".")[0] in ("torch", "optuna", "tvm", "tensorrt")
             or k.startswith(("planner.search", "planner.measure", "planner.record", "planner.space", "planner.source")))
print("runtime", {('openvino' if backend == 'openvino' else 'onnxruntime')!r} in sys.modules, "bad", bad)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "runtime True bad []" in r.stdout, r.stdout


def test_onnx_deployment_has_the_native_onnx_flavor(facts, bundles):
    import mlflow.onnx

    proto = mlflow.onnx.load_model(_uri(facts, "onnxruntime"))
    import onnx

    assert proto.SerializeToString() == onnx.load(str(bundles["onnxruntime"] / "model.onnx")).SerializeToString()


def test_registering_again_logs_nothing(facts):
    """A resumed study (or a second finish) reuses each run's MLflow Model: no artifact is written again."""
    from planner.select.mlmodel import ensure_mlflow_model
    from planner.select.registry import register_front

    run = facts.points["onnxruntime"].run_id
    before = {a.path: a.file_size for a in facts.client.list_artifacts(run, "engine")}
    store = Path(facts.client.get_run(run).info.artifact_uri.replace("file://", "")) / "engine" / "MLmodel"
    mtime = store.stat().st_mtime_ns
    out = register_front(facts.client, list(facts.points.values()), model_name=ALL, target_name="fast-cpu",
                         study_name=STUDY)
    assert out["created"] == []
    assert ensure_mlflow_model(facts.client, run) is False
    assert {a.path: a.file_size for a in facts.client.list_artifacts(run, "engine")} == before
    assert store.stat().st_mtime_ns == mtime


def test_changed_engine_file_fails_to_load_with_one_clear_error(facts):
    import mlflow

    from planner.select.pyfunc import TamperedModel

    run = facts.client.get_run(facts.points["torch"].run_id)
    path = Path(run.info.artifact_uri.replace("file://", "")) / "engine" / "model.pt2"
    good = path.read_bytes()
    try:
        data = bytearray(good)
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
        with pytest.raises(TamperedModel) as e:
            mlflow.pyfunc.load_model(_uri(facts, "torch"))
        msg = str(e.value)
        assert "\n" not in msg and "model.pt2: sha256 mismatch (tampered or corrupted)" in msg and "refusing to load" in msg
        path.unlink()
        with pytest.raises(TamperedModel, match="model.pt2: missing"):
            mlflow.pyfunc.load_model(_uri(facts, "torch"))
    finally:
        path.write_bytes(good)
    assert mlflow.pyfunc.load_model(_uri(facts, "torch")) is not None


# ------------------------------------------------------------------ mlflow models serve


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mlflow_models_serve_answers_like_the_bundle(facts, tmp_path):
    """`mlflow models serve -m models:/<name>@fastest --env-manager local` as a real process; a real POST to
    /invocations gives the outputs of the exported bundle's engine."""
    from planner.select.export import export

    ref = f"models:/{facts.name}@fastest"
    bundle = tmp_path / "fastest"
    export(ref, bundle, home=facts.home.root)
    x, ref_out = _samples(bundle)
    tol = json.loads((bundle / "manifest.json").read_text())["export"]["tolerance"]
    port = _free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": facts.home.tracking_uri, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           # as in an activated environment: `mlflow models serve` starts `uvicorn` by name (CI runs the suite with
           # the venv's python, not with the venv on PATH)
           "PATH": os.pathsep.join(filter(None, [str(Path(sys.executable).parent), os.environ.get("PATH")]))}
    mlflow_cli = [sys.executable, "-c", "import sys; from mlflow.cli import cli; sys.exit(cli())"]
    proc = subprocess.Popen([*mlflow_cli, "models", "serve", "-m", ref, "--env-manager", "local", "-h", "127.0.0.1",
                             "-p", str(port), "-w", "1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        end = time.time() + 120
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"mlflow models serve exited with {proc.returncode}: {proc.stdout.read()[-3000:]}")
            try:
                urllib.request.urlopen(base + "/ping", timeout=2)
                break
            except OSError:
                assert time.time() < end, "mlflow models serve did not answer /ping within 120 s"
                time.sleep(0.5)
        body = json.dumps({"inputs": {"x": x[:4].tolist()}}).encode()
        req = urllib.request.Request(base + "/invocations", data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            answer = json.loads(r.read())
        out = np.asarray(answer["predictions"], dtype=np.float32)
        assert out.shape == (4, 10)
        assert _within(out, ref_out[:4], tol).all(), np.abs(out - ref_out[:4]).max()
    finally:
        _stop_group(proc)


def _stop_group(proc: subprocess.Popen) -> None:
    """Stop the server's process group (it may have exited already: its error is then the assertion above's)."""
    for sig, wait in ((15, 20), (9, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    proc.wait()


def test_a_run_registered_without_its_mlflow_model_gets_it_on_the_next_registration(facts):
    """A version registered by an older planner (a bare engine folder) becomes loadable when the study resumes."""
    import mlflow

    from planner.select.mlmodel import has_mlflow_model
    from planner.select.registry import register_front

    p = facts.points["openvino"]
    engine = Path(facts.client.get_run(p.run_id).info.artifact_uri.replace("file://", "")) / "engine"
    saved = {f: (engine / f).read_bytes() for f in ("MLmodel", "requirements.txt")}
    (engine / "MLmodel").unlink()
    assert not has_mlflow_model(facts.client, p.run_id)
    try:
        out = register_front(facts.client, list(facts.points.values()), model_name=ALL, target_name="fast-cpu",
                             study_name=STUDY)
        assert out["created"] == [] and has_mlflow_model(facts.client, p.run_id)
        assert mlflow.pyfunc.load_model(_uri(facts, "openvino")).metadata.metadata["planner"]["trial"] == p.number
    finally:
        for f, data in saved.items():
            (engine / f).write_bytes(data)


def test_a_deployment_that_cannot_be_an_mlflow_model_is_still_registered_with_a_warning(facts, tmp_path, capsys):
    """A run whose engine artifact does not match its manifest is registered (export refuses it by name later)
    and the registration says why it is no MLflow Model; nothing is logged into the run."""
    import dataclasses

    from planner.select.mlmodel import has_mlflow_model
    from planner.select.registry import register_front

    src = facts.points["onnxruntime"]
    run = facts.client.create_run(facts.client.get_run(src.run_id).info.experiment_id, run_name="broken",
                                  tags={"planner.kind": "trial"})
    rid = run.info.run_id
    manifest = json.loads(Path(facts.client.download_artifacts(src.run_id, "manifest.json", str(tmp_path))).read_text())
    facts.client.log_text(rid, json.dumps(manifest), "manifest.json")
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"not the measured engine")
    facts.client.log_artifact(rid, str(bad), "engine")
    facts.client.set_terminated(rid)
    point = dataclasses.replace(src, run_id=rid)
    out = register_front(facts.client, [point], model_name="tiny-mlp-broken", target_name="fast-cpu", study_name=STUDY)
    assert out["created"] == ["1"]
    err = capsys.readouterr().err
    assert f"warning: could not log trial {src.number} (run {rid}) as an MLflow Model" in err
    assert "engine/model.onnx does not match the sha256 in its manifest" in err
    assert not has_mlflow_model(facts.client, rid)
    facts.client.delete_registered_model(out["name"])
    facts.client.delete_run(rid)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino", "torch"])
def test_the_model_loads_where_planner_is_not_installed(facts, tmp_path, backend):
    """A fresh process without planner on its path (the editable install's finder removed, no PYTHONPATH): the
    loader comes from the model's own ``code/planner`` (the loader's part of planner alone) and predicts."""
    code = f"""
import sys
sys.meta_path = [f for f in sys.meta_path if "editable" not in (getattr(f, "__module__", "") or getattr(type(f), "__module__", ""))]
sys.path = [p for p in sys.path if p not in ("", {str(ROOT)!r})]
try:
    import planner
    raise SystemExit("planner is importable before the model is loaded: " + planner.__file__)
except ImportError:
    pass
import numpy as np, mlflow
mlflow.set_tracking_uri({facts.home.tracking_uri!r})
m = mlflow.pyfunc.load_model({_uri(facts, backend)!r})
out = m.predict({{"x": np.zeros((4, 64), np.float32)}})
print("shape", out.shape, "from", sys.modules["planner"].__file__)
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                       env={**env, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"})
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    shape, _, where = r.stdout.strip().partition(" from ")
    assert shape == "shape (4, 10)" and where.endswith("/code/planner/__init__.py") and str(ROOT) not in where, r.stdout
    shipped = Path(where).parent
    assert not (shipped / "search").exists() and not (shipped / "measure").exists() and not (shipped / "source.py").exists()


TWO_INPUTS = '''
import torch


class TwoInputs(torch.nn.Module):
    """Token ids (int64) and features (float32) -> 5 scores."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb = torch.nn.Embedding(50, 8)
        self.fc = torch.nn.Linear(8 + 4, 5)

    def forward(self, ids, x):
        return self.fc(torch.cat([self.emb(ids).mean(1), x], 1))


def build():
    return TwoInputs()
'''


def test_a_model_with_integer_and_float_inputs(tmp_path):
    """Two named inputs of two dtypes: the signature names both, the serving example passes MLflow's own
    request parsing, and predict gives what `planner verify` checks."""
    import mlflow
    from mlflow.models import Model, validate_serving_input

    from planner.select.export import export

    home = Home(tmp_path / "home")
    model = tmp_path / "two.py"
    model.write_text(TWO_INPUTS)
    space = tmp_path / "space.yaml"
    space.write_text("name: two\nbatch_size: [2]\nbackends:\n  onnxruntime: {}\n")
    r = run_cli("optimize", "--model", f"{model}:build", "--inputs", "ids:6:int64,x:4", "--target", DATA / "fast-cpu.yaml",
                "--space", space, "--trials", "1", "--eval-samples", "8", "--study", "two", "--home", home.root)
    assert r.returncode == 0, r.stderr + r.stdout
    assert "could not" not in r.stderr, r.stderr
    mlflow.set_tracking_uri(home.tracking_uri)
    names = [m.name for m in mlflow.MlflowClient().search_registered_models()]
    assert len(names) == 1
    uri = f"models:/{names[0]}@knee"
    local = Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp_path / "dl")))
    sig = Model.load(str(local / "MLmodel")).signature.inputs.to_dict()
    assert [(s["name"], s["tensor-spec"]["dtype"], list(s["tensor-spec"]["shape"])) for s in sig] == [
        ("ids", "int64", [-1, 6]), ("x", "float32", [-1, 4])]
    served = validate_serving_input(uri, (local / "serving_input_example.json").read_text())
    assert np.asarray(served).shape == (2, 5)
    bundle = tmp_path / "bundle"
    export(uri, bundle, home=home.root)
    with np.load(bundle / "samples.npz") as z:
        ids, x, ref = z["in:ids"], z["in:x"], z["ref"]
    assert ids.dtype == np.int64
    out = mlflow.pyfunc.load_model(uri).predict({"ids": ids, "x": x})
    tol = json.loads((bundle / "manifest.json").read_text())["export"]["tolerance"]
    assert _within(out, ref, tol).all()


@pytest.mark.slow
def test_a_tvm_deployment_is_an_mlflow_model_too(tmp_path):
    """TVM's compiled library through the same loader (about a minute: the TVM build)."""
    import mlflow

    from planner.select.export import export

    home = Home(tmp_path / "home")
    space = tmp_path / "space.yaml"
    space.write_text("name: tv\nbatch_size: [4]\nbackends:\n  tvm: {}\n")
    r = run_cli("optimize", "--model", "tiny-mlp", "--target", DATA / "fast-cpu.yaml", "--space", space, "--trials", "1",
                "--eval-samples", "8", "--study", "tv", "--home", home.root)
    assert r.returncode == 0, r.stderr + r.stdout
    assert "could not" not in r.stderr, r.stderr
    mlflow.set_tracking_uri(home.tracking_uri)
    uri = "models:/planner-tiny-mlp-fast-cpu@knee"
    model = mlflow.pyfunc.load_model(uri)
    assert model.metadata.metadata["planner"]["engine_file"] == "model.so"
    bundle = tmp_path / "bundle"
    export(uri, bundle, home=home.root)
    x, ref = _samples(bundle)
    out = np.concatenate([model.predict({"x": x[i:i + 4]}) for i in range(0, len(x), 4)])
    assert _within(out, ref, json.loads((bundle / "manifest.json").read_text())["export"]["tolerance"]).all()
