import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture
def fast_target():
    from planner.target import load_target

    return load_target(DATA / "fast-cpu.yaml")


@pytest.fixture
def home(tmp_path):
    from planner.paths import Home

    return Home(tmp_path / "home")


def run_cli(*args, cwd=None, env=None, timeout=600):
    """Run the real `planner` CLI in a subprocess."""
    import subprocess

    e = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "planner", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd or ROOT, env=e, timeout=timeout)
