"""What a person sees in `planner ui` after a study, checked in a real browser (issue 20).

A small real study (ONNX Runtime and eager torch on tiny-mlp, plus the fake plugin backend's compile error),
then the real `planner ui` (MLflow's server) and headless Chromium driven by Selenium: the study's runs view
opens on the runs table (not MLflow's GenAI overview) with one row per trial, its latency, quality loss,
throughput and Pareto columns filled without a click; the Pareto filter shows only the front; the parent run
tells the story; the registered model has its aliases.  Screenshots go to the test's tmp_path.

Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them); skipped, with the reason, without.
"""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import pytest
from support import ROOT, fake_backend_files, run_cli

from planner.paths import Home

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser") if shutil.which(n)), None)
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                reason="needs Chromium and its driver: apt-get install chromium chromium-driver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--window-size=1500,1000")
SPACE = """name: ui
batch_size: [1]
backends:
  torch: {}
  onnxruntime: {}
  fake:
    behaviour: [compile_error]
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc, seconds: float) -> None:
    end = time.time() + seconds
    while time.time() < end:
        if proc.poll() is not None:
            raise AssertionError(f"planner ui exited with {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {seconds:.0f} s")


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    """(home, base URL) of `planner ui` serving the store of a finished 3-trial study."""
    tmp = tmp_path_factory.mktemp("ui")
    home = Home(tmp / "home")
    space, target, env = fake_backend_files(tmp, SPACE)
    r = run_cli("optimize", "--model", "tiny-mlp", "--target", target, "--space", space, "--trials", "3",
                "--sampler", "grid", "--eval-samples", "6", "--confirm", "0", "--study", "ui", "--home", home.root, env=env)
    assert r.returncode == 0, r.stderr + r.stdout
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "planner", "ui", "--home", str(home.root), "--port", str(port)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_http(base + "/health", proc, 150)
        yield home, base, proc
    finally:
        os.killpg(proc.pid, 15)  # planner ui and the MLflow server it started
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = CHROMIUM
    for f in FLAGS:
        opts.add_argument(f)
    profile = tempfile.mkdtemp(prefix="planner-chromium-")  # a fresh profile: no remembered UI switches
    opts.add_argument(f"--user-data-dir={profile}")
    d = webdriver.Chrome(options=opts, service=Service(CHROMEDRIVER))
    try:
        yield d
    finally:
        d.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _open(d, url: str, *texts: str, seconds: float = 60) -> str:
    """Load ``url`` and wait until the page shows every one of ``texts``; returns the page's text."""
    d.get(url)
    end, body = time.time() + seconds, ""
    while time.time() < end:
        body = d.find_element("tag name", "body").text
        if all(t in body for t in texts):
            time.sleep(1.0)  # let the table finish rendering before the screenshot
            return d.find_element("tag name", "body").text
        time.sleep(0.5)
    raise AssertionError(f"{url}: {[t for t in texts if t not in body]} not shown within {seconds:.0f} s; "
                         f"page shows: {body[:1500]!r}")


TABLE_JS = """
const out = {};
document.querySelectorAll('[role=row][row-id]').forEach(r => {
  const row = out[r.getAttribute('row-id')] = out[r.getAttribute('row-id')] || {};
  row.index = Number(r.getAttribute('row-index'));
  r.querySelectorAll('[role=gridcell][col-id]').forEach(c => { row[c.getAttribute('col-id')] = c.innerText.trim(); });
});
return out;
"""


def _trials(home: Home):
    import optuna

    from planner.select.pareto import pareto_front

    study = optuna.load_study(study_name="ui", storage=home.optuna_url)
    return study, {p.run_id for p in pareto_front(study)}


def test_runs_view_shows_trials_with_latency_and_quality(ui, browser, tmp_path):
    home, base, _ = ui
    from planner.record.mlflow import run_name, study_views

    views = study_views(home.tracking_uri)  # what `planner ui` prints
    assert [name for name, _ in views] == ["planner/tiny-mlp/fast-cpu"]
    body = _open(browser, f"{base}/{views[0][1]}", "quality_loss", "#0 ")
    browser.save_screenshot(str(tmp_path / "runs.png"))
    assert "Token Usage" not in body and "No data available" not in body  # not the GenAI overview
    table = browser.execute_script(TABLE_JS)
    study, front = _trials(home)
    measured = [t for t in study.trials if t.user_attrs.get("metrics")]
    assert len(measured) == 2 and front  # torch and onnxruntime; the fake one failed to compile
    for t in study.trials:
        run = t.user_attrs["mlflow_run_id"]
        row = table[run]
        label = t.user_attrs["label"]
        assert row["attributes.`Run Name`"].endswith(run_name(t.number, label, 1)), row
        if t in measured:
            m = t.user_attrs["metrics"]
            for col, key in (("latency_ms", "latency_ms"), ("quality_loss", "quality_loss"), ("throughput", "throughput")):
                assert float(row[f"metrics.`{col}`"]) == pytest.approx(m[key], rel=1e-6), (col, row)
        assert row["tags.`planner.pareto`"] == ("true" if run in front else "false"), row
    # fastest first: the latency column is sorted ascending
    rows = sorted(table.values(), key=lambda r: r["index"])  # as shown, top to bottom
    lat = [float(r["metrics.`latency_ms`"]) for r in rows if r.get("metrics.`latency_ms`", "-") != "-"]
    assert lat == sorted(lat) and len(lat) == 2


def test_pareto_filter_shows_the_front(ui, browser, tmp_path):
    """In the study's view a person types the documented filter into the search box: only the front is left."""
    from selenium.webdriver.common.keys import Keys

    from planner.record.mlflow import study_views

    home, base, _ = ui
    study, front = _trials(home)
    names = {t.user_attrs["mlflow_run_id"]: f"#{t.number} " for t in study.trials}
    _open(browser, f"{base}/{study_views(home.tracking_uri)[0][1]}", "quality_loss", *names.values())
    box = next(e for e in browser.find_elements("css selector", "input")
               if (e.get_attribute("value") or "").startswith("tags.planner.study"))
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys('tags.planner.pareto = "true"', Keys.ENTER)
    end = time.time() + 30
    while time.time() < end and set(browser.execute_script(TABLE_JS)) != front:
        time.sleep(0.5)
    browser.save_screenshot(str(tmp_path / "pareto.png"))
    assert set(browser.execute_script(TABLE_JS)) == front


def test_parent_run_tells_the_story(ui, browser, tmp_path):
    home, base, _ = ui
    study, _ = _trials(home)
    from mlflow.tracking import MlflowClient

    parent = MlflowClient(home.tracking_uri).get_run(study.user_attrs["mlflow_parent_run_id"])
    body = _open(browser, f"{base}/#/experiments/{parent.info.experiment_id}/runs/{parent.info.run_id}?workflowType=machine_learning",
                 "Fastest feasible", "best_latency_ms")
    browser.save_screenshot(str(tmp_path / "parent.png"))
    assert "best_latency_vs_fp32" in body and "hypervolume" in body and "trials_failed" in body
    note = parent.data.tags["mlflow.note.content"]
    assert "| fastest |" in note and "planner export models:/planner-tiny-mlp-fast-cpu@fastest" in note


def test_registered_model_has_its_aliases(ui, browser, tmp_path):
    home, base, _ = ui
    body = _open(browser, f"{base}/#/models/planner-tiny-mlp-fast-cpu?workflowType=machine_learning",
                 "Version 1", "fastest", "most-accurate", "knee")
    browser.save_screenshot(str(tmp_path / "model.png"))
    assert "onnxruntime, batch 1" in body  # the version's description names the deployment


def test_chart_view_plots_latency_against_quality(ui, browser, tmp_path):
    from planner.record.mlflow import study_views

    home, base, _ = ui
    body = _open(browser, f"{base}/{study_views(home.tracking_uri)[0][1]}&compareRunsMode=CHART",
                 "Latency vs quality loss", "latency_ms", "quality_loss")
    assert "Model metrics (" not in body.split("Latency vs quality loss")[0]  # the scatter comes first
    study, _ = _trials(home)
    measured = sum(1 for t in study.trials if t.user_attrs.get("metrics"))
    count = "return document.querySelectorAll('.js-plotly-plot .scatterlayer path.point').length"
    end = time.time() + 30
    while time.time() < end and browser.execute_script(count) < measured:
        time.sleep(0.5)
    browser.save_screenshot(str(tmp_path / "chart.png"))
    assert browser.execute_script(count) == measured  # one point per measured trial


def test_model_version_page_shows_signature_and_metrics(ui, browser, tmp_path):
    """The registered version is an MLflow Model (issue 27): its page shows the signature MLflow read from
    MLmodel (input x, float32, batch axis -1; output output0) and the deployment's measured figures."""
    from mlflow.tracking import MlflowClient

    home, base, _ = ui
    client = MlflowClient(home.tracking_uri)
    name = "planner-tiny-mlp-fast-cpu"
    version = client.get_registered_model(name).aliases["knee"]
    v = client.get_model_version(name, version)
    body = _open(browser, f"{base}/#/models/{name}/versions/{version}?workflowType=machine_learning",
                 f"Version {version}", "Schema", "latency_ms", "quality_loss")
    assert "Inputs (1)" in body and "Outputs (1)" in body  # read from the version's MLmodel
    for label in ("Inputs (1)", "Outputs (1)"):  # the schema's sections open on a click
        browser.find_element("xpath", f"//*[normalize-space(text())='{label}']").click()
    end = time.time() + 20
    while time.time() < end and "output0" not in body:
        time.sleep(0.5)
        body = browser.find_element("tag name", "body").text
    browser.save_screenshot(str(tmp_path / "version.png"))
    schema = body.split("Schema", 1)[1]
    assert "x (required)\nTensor (dtype: float32, shape: [-1,64])" in schema, schema[:500]
    assert "output0 (required)\nTensor (dtype: float32, shape: [-1,10])" in schema, schema[:500]
    tags = body.split("Tags", 1)[1].split("Schema", 1)[0]  # the measured figures, as the version's tags
    for key in ("latency_ms", "p99_ms", "throughput", "quality_loss"):
        assert f"{key}\n{v.tags[key]}\n" in tags, (key, tags[:800])
    assert "samples/s" in body and "target fast-cpu" in body  # and in its description
