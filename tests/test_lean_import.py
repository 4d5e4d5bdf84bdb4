import subprocess
import sys

HEAVY = ["torch", "onnxruntime", "onnx", "tvm", "tensorrt", "mlflow", "optuna", "numpy"]


def _loaded(code: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys\nprint(','.join(sorted(sys.modules)))"],
                         capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    mods = set(out.split(","))
    return [m for m in HEAVY if m in mods]


def test_import_planner_is_light():
    assert _loaded("import planner") == []


def test_cli_help_is_light():
    code = "import sys\nsys.argv=['planner','--help']\nfrom planner.cli import app\ntry:\n    app()\nexcept SystemExit:\n    pass"
    assert _loaded(code) == []


def test_backend_registry_lookup_is_light():
    # capability checks import backend classes but not their runtimes (numpy is allowed here)
    code = "from planner.backends import registry\n[registry.get(n).availability() for n in registry.names()]"
    assert [m for m in _loaded(code) if m != "numpy"] == []


def test_choosing_what_a_fork_server_preloads_imports_none_of_it():
    """The planner process lists the worker server's modules (`preload_for`) without importing them: finding
    ``torch.onnx`` would import torch into a process that never runs it (2 s at every study's start)."""
    code = "from planner.measure.forkserver import preload_for\nassert 'torch.onnx' in preload_for(['torch', 'onnxruntime'])"
    assert [m for m in _loaded(code) if m != "numpy"] == []
