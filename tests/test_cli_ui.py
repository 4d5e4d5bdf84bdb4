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


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _processes_mentioning(text: str) -> list[int]:
    """Pids whose command line contains ``text`` (read from /proc)."""
    import os

    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmd and int(pid) != os.getpid():
            out.append(int(pid))
    return out


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])  # a process manager; Ctrl-C
def test_ui_stopped_by_a_signal_stops_the_mlflow_server_it_started(tmp_path, sig):
    """`planner ui` as a real process with its real MLflow server (uvicorn): a signal to `planner ui` alone (as a
    process manager sends it) stops the server too; nothing is left holding the port."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    from support import ROOT

    from planner.paths import Home
    from planner.record.mlflow import tracking_client

    home = Home(tmp_path / "home")
    home.root.mkdir(parents=True)
    tracking_client(home.tracking_uri).search_experiments()  # creates the sqlite store
    assert (home.root / "mlflow.db").is_file()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "planner", "ui", "--home", str(home.root), "--port", str(port)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        end = time.time() + 150
        while True:
            assert proc.poll() is None, f"planner ui exited with {proc.returncode}"
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                assert time.time() < end, "the MLflow server did not answer /health within 150 s"
                time.sleep(0.5)
        server = [p for p in _processes_mentioning(f"--port {port}") if p != proc.pid]
        assert server, "no MLflow server process found"
        os.kill(proc.pid, getattr(signal, sig))  # planner ui alone, not its process group
        code = proc.wait(timeout=30)
        end = time.time() + 10
        while (_listening(port) or _processes_mentioning(f"--port {port}")) and time.time() < end:
            time.sleep(0.2)
        assert not _listening(port), f"port {port} still served after planner ui stopped"
        assert _processes_mentioning(f"--port {port}") == []
        assert code == 128 + getattr(signal, sig)  # exits as a stopped process does
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for p in _processes_mentioning(f"--port {port}"):  # what a failing run left behind: only ours
            try:
                os.killpg(os.getpgid(p), signal.SIGKILL)
            except ProcessLookupError:
                pass
