"""Traffic at the requests' own lengths (``lengths: data``), end to end from the CLI: a tiny text encoder whose
inputs declare a length axis, served by ONNX Runtime and OpenVINO (engines that take any length: the ONNX export
keeps the axis dynamic) and by torch (a fixed length: every request padded to it); then the hand-off of each, a
Triton config and an MLflow Model whose length axis is -1 exactly when the engine was measured so."""

import sys

import numpy as np
import pytest
from support import DATA, run_cli

from planner.paths import Home

sys.path.insert(0, str(DATA))  # text_models: the model's own data and weights, to check what was served

pytest.importorskip("openvino")
MODEL = f"{DATA / 'text_models.py'}:tiny_encoder"


@pytest.fixture(scope="module")
def lengths_study(tmp_path_factory):
    home = Home(tmp_path_factory.mktemp("lengths") / "home")
    r = run_cli("optimize", "--model", MODEL, "--target", DATA / "traffic-lengths-cpu.yaml", "--space",
                DATA / "lengths-space.yaml", "--trials", "5", "--sampler", "random", "--seed", "1",
                "--eval-samples", "16", "--study", "lengths", "--confirm", "2", "--confirm-rounds", "2",
                "--home", home.root)
    assert r.returncode == 0, r.stderr + r.stdout
    import optuna

    study = optuna.load_study(study_name="lengths", storage=home.optuna_url)
    by_backend = {}
    for t in study.trials:
        if t.state.name == "COMPLETE" and "duplicate_of" not in t.user_attrs:
            by_backend.setdefault(t.user_attrs["config"]["backend"], t)
    assert set(by_backend) == {"onnxruntime", "openvino", "torch"}, "the study should measure all three engines"
    assert study.user_attrs["confirmation"]["trials"]  # re-measured at the same lengths, in interleaved rounds
    return home, r, by_backend


def test_the_served_lengths(lengths_study):
    """ONNX Runtime and OpenVINO serve each request at its sample's length padded to a multiple of 8 (the
    measured requests' mean length is well under the model's 32); torch, a fixed-length engine, serves them padded
    to 32 (no mean length: no request went shorter)."""
    from planner.measure.serving import request_lengths
    from text_models import SEQ, dataset

    d = dataset()
    want = np.mean(request_lengths({k: d[k][:16] for k in d}, {"input_ids": 0, "attention_mask": 0}, 1, 8, seed=1))
    _, r, by = lengths_study
    for backend in ("onnxruntime", "openvino"):
        m = by[backend].user_attrs["metrics"]
        assert m["served_mean_length"] < SEQ * 0.75
        assert m["served_mean_length"] == pytest.approx(want, rel=0.25)  # the request mix of the 16 samples
    assert "served_mean_length" not in by["torch"].user_attrs["metrics"]


def test_the_hand_off_has_a_dynamic_length_exactly_when_it_was_measured(lengths_study, tmp_path):
    from planner.select.export import export

    home, _, by = lengths_study
    for backend, dims in (("onnxruntime", "dims: [ -1 ]"), ("torch", "dims: [ 32 ]")):
        t = by[backend]
        out = tmp_path / backend
        export(t.user_attrs["mlflow_run_id"], out, fmt="triton", home=home.root, name="m")
        text = (out / "m" / "config.pbtxt").read_text()
        inputs = text[text.index("input ["):text.index("output [")]
        assert inputs.count(dims) == 2, text  # input_ids and attention_mask
        readme = (out / "m" / "README.md").read_text()
        assert ("at its own sample's length" in readme) == (backend != "torch")
        assert ("padded to it" in readme) == (backend == "torch")


def test_the_mlflow_model_takes_a_short_request(lengths_study):
    """The MLflow Model of an engine measured at own lengths has -1 on the length axis in its signature, and its
    pyfunc answers a 9-token request as the model answers it padded to 32."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from planner.select.mlmodel import ensure_mlflow_model
    from text_models import dataset, tiny_encoder

    home, _, by = lengths_study
    client = MlflowClient(tracking_uri=home.tracking_uri)
    mlflow.set_tracking_uri(home.tracking_uri)
    run_id = by["onnxruntime"].user_attrs["mlflow_run_id"]
    ensure_mlflow_model(client, run_id)
    uri = f"runs:/{run_id}/engine"
    sig = mlflow.models.get_model_info(uri).signature
    shapes = {s.name: s.shape for s in sig.inputs.inputs}
    assert shapes == {"input_ids": (-1, -1), "attention_mask": (-1, -1)}
    d = dataset()
    i = int(np.argmin((d["attention_mask"] != 0).sum(1)))
    n = int(d["attention_mask"][i].sum())
    short = {k: np.ascontiguousarray(d[k][i:i + 1, :max(n, 2)]) for k in ("input_ids", "attention_mask")}
    got = np.asarray(mlflow.pyfunc.load_model(uri).predict(short))
    import torch

    with torch.inference_mode():
        want = tiny_encoder()(torch.from_numpy(d["input_ids"][i:i + 1]), torch.from_numpy(d["attention_mask"][i:i + 1]))
    assert np.allclose(got.reshape(-1), want.numpy().reshape(-1), atol=1e-4)


def test_lengths_for_a_model_without_a_length_axis_is_one_line_exit_2(tmp_path):
    r = run_cli("optimize", "--model", "tiny-mlp", "--target", DATA / "traffic-lengths-cpu.yaml", "--trials", "1",
                "--home", tmp_path / "home")
    assert r.returncode == 2, r.stdout + r.stderr
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and "traffic.lengths: data" in err[0] and "length_axis" in err[0] and "x" in err[0], r.stderr
    assert not (tmp_path / "home" / "optuna.db").exists()
