"""`planner dashboard` and `planner ui` error paths a user can act on (issue 20)."""

import importlib.util

import pytest
from support import run_cli


@pytest.mark.skipif(importlib.util.find_spec("optuna_dashboard") is not None, reason="optuna-dashboard is installed")
def test_dashboard_names_the_extra_that_installs_it(tmp_path):
    r = run_cli("dashboard", "--home", tmp_path)
    assert r.returncode == 2
    assert "pip install 'planner[dashboard]'" in r.stderr + r.stdout


def test_ui_without_a_store_says_what_to_do(tmp_path):
    r = run_cli("ui", "--home", tmp_path)
    assert r.returncode == 2
    assert "run `planner optimize` first" in r.stderr + r.stdout
