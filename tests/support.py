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
