"""Helpers shared by the tests (import as `from support import ...`; conftest modules are not importable by name)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"


def run_cli(*args, cwd=None, env=None, timeout=600):
    """Run the real `planner` CLI in a subprocess."""
    e = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "planner", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd or ROOT, env=e, timeout=timeout)


def fake_backend_files(tmp_path, space_yaml: str):
    """(space, target, env) for studies on the plugin backend `tests/data/fake_backend.py`: the space YAML written
    to ``tmp_path``, the short-protocol test target allowing `fake`, and the environment that registers it."""
    space = tmp_path / "space.yaml"
    space.write_text(space_yaml)
    target = tmp_path / "target.yaml"
    target.write_text((DATA / "fast-cpu.yaml").read_text().replace("backends: [", "backends: [fake, "))
    env = {"PLANNER_BACKENDS": "fake=fake_backend:Fake", "PYTHONPATH": f"{DATA}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return space, target, env
