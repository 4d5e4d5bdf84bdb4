import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # `from support import ...` in every test folder

from support import DATA, SERIAL, TESTS  # noqa: E402

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
# The suite runs dozens of tiny studies; re-measuring their winners (about 10 s each) is tested on its own in
# tests/select/test_confirm.py, which passes --confirm explicitly.
os.environ.setdefault("PLANNER_CONFIRM", "0")


def pytest_collection_modifyitems(config, items):
    """Mark the tests of the `SERIAL` files ``serial`` (`make test` runs them alone, after the rest)."""
    for item in items:
        if Path(item.fspath).resolve().relative_to(TESTS).as_posix() in SERIAL:
            item.add_marker(pytest.mark.serial)


@pytest.fixture
def fast_target():
    from planner.target import load_target

    return load_target(DATA / "fast-cpu.yaml")


@pytest.fixture
def home(tmp_path):
    from planner.paths import Home

    return Home(tmp_path / "home")
