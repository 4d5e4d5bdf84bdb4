"""Bad input: one clear line naming the file/field and the valid choices, exit 2, nothing written."""

import pytest
from conftest import DATA, run_cli

BAD = [
    (["--model", "resnet19"], "did you mean 'resnet18'"),
    (["--model", "missing.onnx"], "ONNX file not found"),
    (["--model", "nofile.py:build"], "file nofile.py not found"),
    (["--model", f"{DATA / 'models.py'}:nope"], "no function 'nope'"),
    (["--model", f"{DATA / 'models.py'}:raises"], "weights file is corrupt"),
    (["--model", f"{DATA / 'models.py'}:not_a_module"], "expected torch.nn.Module"),
    (["--model", "tiny-mlp", "--target", "a100"], "needs an NVIDIA GPU"),
    (["--model", "tiny-mlp", "--target", "nope"], "not a file nor a built-in target"),
    (["--model", "tiny-mlp", "--space", "nope"], "not a file nor a built-in space"),
    (["--model", "tiny-mlp", "--sampler", "bayes"], "valid choices"),
    (["--model", "tiny-mlp", "--objectives", "latency,speed"], "unknown objective 'speed'"),
    (["--model", "tiny-mlp", "--trials", "0"], "--trials 0"),
    (["--model", "tiny-mlp", "--inputs", "x:3xA"], "dimensions must be integers"),
]


@pytest.mark.parametrize("args,needle", BAD, ids=[b[1][:30] for b in BAD])
def test_bad_input_exit_2_and_nothing_written(args, needle, tmp_path):
    home = tmp_path / "home"
    r = run_cli("optimize", *args, "--home", home, "--trials" if "--trials" not in args else "--seed", "1")
    assert r.returncode == 2, r.stdout + r.stderr
    assert needle in r.stderr, r.stderr
    assert r.stderr.startswith("error: ")
    assert "Traceback" not in r.stderr
    assert not (home / "optuna.db").exists() and not (home / "mlflow.db").exists()


def test_bad_target_file_names_field(tmp_path):
    bad = tmp_path / "t.yaml"
    bad.write_text("name: t\ndevice: {kind: cpu}\nprecisions: [fp32, int9]\n")
    r = run_cli("targets", "validate", bad)
    assert r.returncode == 2 and "precisions" in r.stderr and "int9" in r.stderr and "int8" in r.stderr


def test_targets_and_spaces_commands():
    r = run_cli("targets", "list")
    assert r.returncode == 0 and "a100" in r.stdout and "cpu" in r.stdout
    r = run_cli("targets", "show", "h100")
    assert r.returncode == 0 and "compute_capability" in r.stdout
    r = run_cli("spaces", "validate", "search_spaces/default.yaml")
    assert r.returncode == 0


def test_probe_output_validates(tmp_path):
    out = tmp_path / "me.yaml"
    r = run_cli("probe", "--out", out)
    assert r.returncode == 0
    r = run_cli("targets", "validate", out)
    assert r.returncode == 0, r.stderr


def test_backends_lists_usability():
    r = run_cli("backends")
    assert r.returncode == 0
    for name in ("torch", "torch_compile", "onnxruntime", "tvm", "tensorrt"):
        assert name in r.stdout
    assert "pip install" in r.stdout  # tensorrt is not installed here: how to get it is shown


def test_redact_hides_passwords():
    from planner.record.mlflow import redact

    assert redact("postgresql://bob:hunter2@db:5432/x") == "postgresql://bob:***@db:5432/x"
    assert redact("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"
