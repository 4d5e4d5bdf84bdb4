"""Models as users bring them (issue #29), each through a short real study to its front and registry:
a user file whose transformers model returns a ``ModelOutput`` (no wrapper), ``hf:DIR`` directories (text, vision)
and an ONNX file whose inputs batch on axis 1 or not at all."""

import re

import numpy as np
import optuna
import pytest
from hf_tiny import bert_classifier, gpt2_decoder, vit_classifier
from support import DATA, run_cli

from planner.paths import Home
from planner.select.pareto import pareto_front

SPACE = ("name: byom\nbatch_size: [1, 2]\nbackends:\n  torch: {}\n  onnxruntime: {}\n"
         "seeds:\n  - {backend: onnxruntime, batch_size: 2}\n  - {backend: torch, batch_size: 1}\n")

VIT_FILE = """
import torch
from transformers import ViTConfig, ViTForImageClassification

def build():
    torch.manual_seed(0)
    cfg = ViTConfig(image_size=16, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2,
                    num_attention_heads=2, intermediate_size=64, num_labels=5, output_hidden_states=True)
    return ViTForImageClassification(cfg).eval()

def example_inputs(batch_size):
    return {"pixel_values": torch.randn(batch_size, 3, 16, 16)}
"""


def study(tmp_path, model, *extra, name="s", space=SPACE):
    home = Home(tmp_path / "home")
    tmp_path.mkdir(parents=True, exist_ok=True)
    sp = tmp_path / "space.yaml"
    sp.write_text(space)
    r = run_cli("optimize", "--model", model, "--target", DATA / "fast-cpu.yaml", "--space", sp, "--trials", "2",
                "--eval-samples", "4", "--confirm", "0", "--study", name, "--home", home.root, *extra)
    return r, home


def registered(home) -> list[str]:
    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking_uri=home.tracking_uri)
    return [v.run_id for m in c.search_registered_models() for v in c.search_model_versions(f"name = '{m.name}'")]


def check_front(r, home, name="s"):
    assert r.returncode == 0, r.stderr + r.stdout
    st = optuna.load_study(study_name=name, storage=home.optuna_url)
    front = pareto_front(st)
    assert front and all(t.state.name == "COMPLETE" for t in st.trials), [t.user_attrs.get("fail_message") for t in st.trials]
    assert {t.user_attrs["config"]["backend"] for t in st.trials} == {"torch", "onnxruntime"}
    assert registered(home), "no registered deployment"
    return st


def test_user_file_returning_model_output(tmp_path):
    pytest.importorskip("transformers")
    f = tmp_path / "vit.py"
    f.write_text(VIT_FILE)
    r, home = study(tmp_path, f"{f}:build")
    st = check_front(r, home)
    info = st.user_attrs["model_info"]
    assert info["output_names"][0] == "logits" and "hidden_states.0" in info["output_names"]
    assert info["quality_outputs"] == ["logits"]
    assert "quality is judged on output logits" in r.stdout
    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking_uri=home.tracking_uri)
    runs = c.search_runs([e.experiment_id for e in c.search_experiments()])
    notes = [r.data.tags["mlflow.note.content"] for r in runs if "mlflow.note.content" in r.data.tags]
    assert any("Quality is judged on output logits (of logits, hidden_states.0" in n for n in notes), notes
    assert all(t.user_attrs["metrics"]["quality_loss"] < 1e-3 for t in st.trials)


def test_user_file_output_option_picks_another_output(tmp_path):
    pytest.importorskip("transformers")
    f = tmp_path / "vit.py"
    f.write_text(VIT_FILE)
    r, home = study(tmp_path, f"{f}:build", "--output", "hidden_states.2")
    st = check_front(r, home)
    assert st.user_attrs["model_info"]["quality_outputs"] == ["hidden_states.2"]
    bad, _ = study(tmp_path / "bad", f"{f}:build", "--output", "pooler", name="bad")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1, bad.stderr
    assert "--output pooler: no such output; the model's outputs are logits, hidden_states.0" in bad.stderr
    assert not list((tmp_path / "bad" / "home").glob("studies/*")) and not list((tmp_path / "bad" / "home").glob("staging/*"))


@pytest.mark.parametrize("kind", ["text", "vision", "decoder"])
def test_hf_directory(tmp_path, kind):
    pytest.importorskip("transformers")
    d = {"text": bert_classifier, "vision": vit_classifier, "decoder": gpt2_decoder}[kind](tmp_path / kind)
    r, home = study(tmp_path, f"hf:{d}")
    st = check_front(r, home)
    names = [i["name"] for i in st.user_attrs["model_info"]["inputs"]]
    assert names == {"text": ["input_ids", "token_type_ids", "attention_mask"], "vision": ["pixel_values"],
                     "decoder": ["input_ids"]}[kind]
    assert st.user_attrs["model_info"]["quality_outputs"] == ["logits"]
    if kind == "vision":  # the deployment leaves as a bundle that verifies
        best = pareto_front(st)[0]
        ex = run_cli("export", "--study", "s", "--trial", best.number, "--out", tmp_path / "ex", "--home", home.root)
        assert ex.returncode == 0, ex.stderr + ex.stdout
        v = run_cli("verify", tmp_path / "ex")
        assert v.returncode == 0 and "match the fp32 reference" in v.stdout, v.stderr + v.stdout


def test_hf_directory_errors_are_one_line(tmp_path):
    pytest.importorskip("transformers")
    empty = tmp_path / "empty"
    empty.mkdir()
    for model, msg in [(f"hf:{tmp_path / 'nope'}", "no such directory"), (f"hf:{empty}", "config.json not found")]:
        r, home = study(tmp_path, model)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and msg in r.stderr, r.stderr
        assert not (home.root / "optuna.db").exists()
    d = vit_classifier(tmp_path / "noweights", processor=False)
    (d / "model.safetensors").unlink()
    r, home = study(tmp_path, f"hf:{d}")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "no weights" in r.stderr, r.stderr
    r, _ = study(tmp_path, str(DATA / "models.py") + ":tiny", "--task", "text-classification")
    assert r.returncode == 2 and "--task text-classification: only for hf:DIR models" in r.stderr
    notok = bert_classifier(tmp_path / "notok", tokenizer=False)
    r, home = study(tmp_path, f"hf:{notok}", "--task", "fill-masks")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "did you mean 'fill-mask'" in r.stderr, r.stderr
    r, home = study(tmp_path, f"hf:{notok}")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "inputs unknown (no tokenizer" in r.stderr, r.stderr
    assert not (home.root / "optuna.db").exists() and not list(home.root.glob("studies/*"))


ONNX_SPACE = ("name: onnx\nbatch_size: [1, 2]\nbackends:\n  onnxruntime: {graph_optimization_level: [basic, all]}\n"
              "seeds:\n  - {backend: onnxruntime, batch_size: 1}\n  - {backend: onnxruntime, batch_size: 2}\n")


def test_onnx_inputs_batched_on_axis_1_or_not_at_all(tmp_path):
    """``state[2, batch, 8]`` and the scalar ``sr`` as declared; quality judged on both outputs, ``new_state``
    batched on axis 1 too: b = 1 and b = 2 candidates agree with the batch-4 reference only if every axis is right."""
    import sys

    sys.path.insert(0, str(DATA))
    from stateful_onnx import build

    f = build(tmp_path / "stateful.onnx")
    r, home = study(tmp_path, str(f), "--output", "out,new_state", space=ONNX_SPACE, name="st")
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "input 'x' has dims [batch, seq]" in r.stderr and "--inputs x:<seq>:float32:batch=0" in r.stderr
    assert not (home.root / "optuna.db").exists()
    r, home = study(tmp_path, str(f), "--output", "out,new_state", "--inputs",
                    "x:16,state:2x8:float32:batch=1,sr::int64:batch=none", space=ONNX_SPACE, name="st")
    assert r.returncode == 0, r.stderr + r.stdout
    st = optuna.load_study(study_name="st", storage=home.optuna_url)
    assert [t.state.name for t in st.trials] == ["COMPLETE", "COMPLETE"], [t.user_attrs.get("fail_message") for t in st.trials]
    assert sorted(t.user_attrs["config"]["batch_size"] for t in st.trials) == [1, 2]
    assert all(t.user_attrs["metrics"]["quality_loss"] < 1e-5 for t in st.trials)
    info = st.user_attrs["model_info"]
    assert [(i["name"], i["batch_axis"]) for i in info["inputs"]] == [("x", 0), ("state", 1), ("sr", None)]
    assert info["quality_outputs"] == ["out", "new_state"]
    assert pareto_front(st) and registered(home)
    b2 = next(t for t in st.trials if t.user_attrs["config"]["batch_size"] == 2)
    ex = run_cli("export", "--study", "st", "--trial", b2.number, "--out", tmp_path / "ex", "--home", home.root)
    assert ex.returncode == 0, ex.stderr + ex.stdout
    v = run_cli("verify", tmp_path / "ex")  # the samples fed and the outputs read with the same axes
    assert v.returncode == 0 and "match the fp32 reference" in v.stdout, v.stderr + v.stdout
    readme = (tmp_path / "ex" / "README.md").read_text()
    assert "x: float32[batch, 16], state: float32[2, batch, 8], sr: int64[] (no batch axis" in readme, readme

    # the registered MLflow Model takes the inputs in the model's layout and gives the bundle's reference outputs
    import mlflow
    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking_uri=home.tracking_uri)
    mlflow.set_tracking_uri(home.tracking_uri)
    version = next(v for m in c.search_registered_models() for v in c.search_model_versions(f"name = '{m.name}'"))
    model = mlflow.pyfunc.load_model(f"models:/{version.name}/{version.version}")
    sig = {i.name: i.shape for i in model.metadata.get_input_schema().inputs}
    b = sig["x"][0]  # -1 for an engine that takes any batch, else its batch
    assert b in (-1, model.metadata.metadata["planner"]["batch_size"]), sig
    assert sig == {"x": (b, 16), "state": (2, b, 8), "sr": ()}, sig
    k = 3 if b == -1 else b  # a fixed-batch engine's signature takes its batch
    with np.load(tmp_path / "ex" / "samples.npz") as z:
        feed = {"x": z["in:x"][:k], "state": np.moveaxis(z["in:state"][:k], 0, 1), "sr": np.asarray(z["in:sr"][0])}
        want = z["ref"][:k]
    got = model.predict(feed)
    assert got.shape == want.shape and np.allclose(got, want, rtol=1e-4, atol=1e-5), np.abs(got - want).max()
    assert "new_state on axis 1" in readme and 'np.moveaxis(z["in:state"][:2], 0, 1)' in readme

    # Triton: state and new_state batch on axis 1, sr not at all: no implicit batching, full dims
    tr = run_cli("export", "--study", "st", "--trial", b2.number, "--out", tmp_path / "tr", "--format", "triton",
                 "--name", "st", "--home", home.root)
    assert tr.returncode == 0, tr.stderr + tr.stdout
    cfg = (tmp_path / "tr" / "st" / "config.pbtxt").read_text()
    assert "max_batch_size: 0" in cfg and "dynamic_batching" not in cfg
    for name, dtype, dims in [("x", "FP32", "-1, 16"), ("state", "FP32", "2, -1, 8"), ("out", "FP32", "-1, 8"),
                              ("new_state", "FP32", "2, -1, 8")]:
        assert re.search(rf'name: "{name}"\s*data_type: TYPE_{dtype}\s*dims: \[ {dims} \]\s*\}}', cfg), (name, cfg)
    assert re.search(r'name: "sr"\s*data_type: TYPE_INT64\s*dims: \[ 1 \]\s*reshape: \{ shape: \[ \] \}', cfg), cfg
    readme = (tmp_path / "tr" / "st" / "README.md").read_text()
    assert "Max batch size 0 (not every tensor batches on its first dim" in readme
    assert "state (batch axis 1), sr (no batch axis), new_state (batch axis 1)" in readme
    v = run_cli("verify", tmp_path / "tr")
    assert v.returncode == 0 and "match the fp32 reference" in v.stdout, v.stderr + v.stdout

    # without the study's reference the engine is its own, read with the outputs' axes the graph names
    (home.study_dir("st") / "reference.npz").unlink()
    ex = run_cli("export", "--study", "st", "--trial", b2.number, "--out", tmp_path / "own", "--home", home.root)
    assert ex.returncode == 0, ex.stderr + ex.stdout
    with np.load(tmp_path / "own" / "samples.npz") as z:
        assert list(z["out_axes"]) == [0, 1] and z["ref"].shape[1] == 8 + 16
    v = run_cli("verify", tmp_path / "own")
    assert v.returncode == 0 and "match the engine reference" in v.stdout, v.stderr + v.stdout


def test_openvino_serves_inputs_batched_on_axis_1_or_not_at_all(tmp_path):
    """OpenVINO sets the batch on each input's own axis and leaves an unbatched scalar as the model has it; a
    scalar is fed 0-d: both candidates agree with the fp32 reference, and the registered MLflow Model predicts it."""
    import sys

    import mlflow
    from mlflow.tracking import MlflowClient

    pytest.importorskip("openvino")
    sys.path.insert(0, str(DATA))
    from stateful_onnx import build

    f = build(tmp_path / "stateful.onnx")
    target = tmp_path / "ov-cpu.yaml"
    target.write_text((DATA / "fast-cpu.yaml").read_text().replace("backends: [", "backends: [openvino, "))
    space = ("name: ov\nbatch_size: [1, 2]\nbackends:\n  openvino: {}\n"
             "seeds:\n  - {backend: openvino, batch_size: 1}\n  - {backend: openvino, batch_size: 2}\n")
    home = Home(tmp_path / "home")
    (tmp_path / "space.yaml").write_text(space)
    r = run_cli("optimize", "--model", f, "--target", target, "--space", tmp_path / "space.yaml", "--trials", "2",
                "--eval-samples", "4", "--confirm", "0", "--study", "ov", "--home", home.root, "--output", "out,new_state",
                "--inputs", "x:16,state:2x8:float32:batch=1,sr::int64:batch=none")
    assert r.returncode == 0, r.stderr + r.stdout
    st = optuna.load_study(study_name="ov", storage=home.optuna_url)
    assert [t.state.name for t in st.trials] == ["COMPLETE", "COMPLETE"], [t.user_attrs.get("fail_message") for t in st.trials]
    assert all(t.user_attrs["metrics"]["quality_loss"] < 1e-5 for t in st.trials)
    c = MlflowClient(tracking_uri=home.tracking_uri)
    mlflow.set_tracking_uri(home.tracking_uri)
    v = next(v for m in c.search_registered_models() for v in c.search_model_versions(f"name = '{m.name}'"))
    model = mlflow.pyfunc.load_model(f"models:/{v.name}/{v.version}")
    b = model.metadata.metadata["planner"]["batch_size"]
    with np.load(home.study_dir("ov") / "reference.npz") as z:
        feed = {"x": z["in:x"][:b], "state": np.moveaxis(z["in:state"][:b], 0, 1), "sr": np.asarray(z["in:sr"][0])}
        want = z["ref"][:b]
    got = model.predict(feed)
    assert got.shape == want.shape and np.allclose(got, want, rtol=1e-4, atol=1e-5), np.abs(got - want).max()
