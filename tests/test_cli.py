"""Bad input: one clear line naming the file/field and the valid choices, exit 2, nothing written."""

import pytest
from support import DATA, run_cli

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
    (["--model", "tiny-mlp", "--inputs", "x:3:float8"], "dtype 'float8'"),
    (["--model", "tiny-mlp", "--data", "missing.npz"], "--data missing.npz: file not found"),
    (["--model", "tiny-mlp", "--eval-samples", "1"], "need at least 2 samples"),
    (["--model", "tiny-mlp", "--output-kind", "boxes"], "--output-kind: 'boxes'"),
    (["--model", "tiny-mlp", "--timeout", "-5"], "--timeout -5.0: must be > 0"),
    (["--model", "tiny-mlp", "--heartbeat", "0"], "--heartbeat 0"),
    (["--model", "tiny-mlp", "--storage", "optuna.db"], "expected a URL"),
    (["--model", "tiny-mlp", "--storage", "postgresql://u:pw@127.0.0.1:1/x"], "cannot open the Optuna storage"),
    (["--model", "tiny-mlp", "--target", str(DATA / "bad" / "malformed.yaml")], "malformed YAML"),
    (["--model", "tiny-mlp", "--target", str(DATA / "bad" / "wrong-type.yaml")], "threads: Input should be a valid integer"),
    (["--model", "tiny-mlp", "--target", str(DATA / "bad" / "negative-slo.yaml")], "latency_slo_ms: Input should be greater than 0"),
    (["--model", "tiny-mlp", "--target", str(DATA / "bad" / "unknown-precision.yaml")], "unknown precision 'int9'"),
    (["--model", "tiny-mlp", "--space", str(DATA / "bad" / "unknown-backend.yaml")], "unknown backend; valid choices"),
    (["--model", "tiny-mlp", "--target", str(DATA / "fast-cpu.yaml"), "--space", str(DATA / "bad" / "huge-batch.yaml")],
     "exceed target 'fast-cpu' max_batch_size 16"),
    (["--model", str(DATA / "bad" / "corrupt.onnx")], "not a readable ONNX file"),
    (["--model", str(DATA / "bad" / "model-missing-source.yaml")], "model-missing-source.yaml: source: "),
    (["--model", "tiny-mlp", "--evaluator", "nofile.py:score"], "--evaluator nofile.py:score: file nofile.py not found"),
    (["--model", "tiny-mlp", "--evaluator-metric", "accuracy"], "--evaluator-metric needs --evaluator"),
    (["--model", f"{DATA / 'models.py'}:tiny", "--evaluator", f"{DATA / 'evaluators.py'}:score", "--evaluator-metric", "acc:best"],
     "expected NAME, NAME:max"),
    (["--model", f"{DATA / 'models.py'}:tiny", "--evaluator", f"{DATA / 'evaluators.py'}:not_a_dict"],
     "the evaluator must return a non-empty dict"),
    (["--model", f"{DATA / 'models.py'}:tiny", "--evaluator", f"{DATA / 'evaluators.py'}:score", "--evaluator-metric", "f1"],
     "--evaluator-metric 'f1': the evaluator returned ['accuracy', 'mean_abs']"),
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
    assert "pw@" not in r.stderr  # passwords never printed


def test_unreachable_tracking_uri_writes_no_study(tmp_path):
    home = tmp_path / "home"
    r = run_cli("optimize", "--model", "tiny-mlp", "--tracking-uri", "http://127.0.0.1:1", "--home", home, "--trials", "1",
                env={"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "3"})
    assert r.returncode == 2 and "cannot reach the MLflow tracking store" in r.stderr, r.stderr
    import optuna

    assert optuna.get_all_study_summaries(f"sqlite:///{home / 'optuna.db'}") == []


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
    assert "pip install 'planner[tensorrt]'" in r.stdout  # not installed here: how to get it is shown


def test_redact_hides_passwords():
    from planner.record.mlflow import redact

    assert redact("postgresql://bob:hunter2@db:5432/x") == "postgresql://bob:***@db:5432/x"
    assert redact("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"


def test_optimize_without_target_searches_the_probed_host(tmp_path):
    """No --target: the target is this host as `planner probe` describes it (not the generic targets/cpu.yaml)."""
    from planner.target import probe_host

    space = tmp_path / "s.yaml"
    space.write_text("name: s\nbatch_size: [100000]\nbackends: {torch: {}}\n")  # fails validation against the target
    home = tmp_path / "home"
    r = run_cli("optimize", "--model", "tiny-mlp", "--space", space, "--home", home, "--trials", "1")
    host = probe_host()
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"exceed target '{host.name}' max_batch_size {host.max_batch_size}" in r.stderr, r.stderr
    r = run_cli("optimize", "--model", "tiny-mlp", "--space", space, "--home", home, "--trials", "1", "--target", "cpu")
    assert r.returncode == 2 and "exceed target 'cpu' max_batch_size 64" in r.stderr, r.stderr
