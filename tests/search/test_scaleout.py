"""Scale-out and robustness with real processes: PostgreSQL-backed multi-worker studies, kill -9 and resume."""

import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest
from support import DATA, ROOT, fake_backend_files

from planner.paths import Home

PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"))), None) if Path("/usr/lib/postgresql").is_dir() else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres(tmp_path_factory):
    """A throwaway PostgreSQL cluster on 127.0.0.1, run as the `postgres` user."""
    if PG_BIN is None or shutil.which("runuser") is None:
        pytest.skip("PostgreSQL server binaries not installed (.ci/run installs them)")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg not installed: pip install 'planner[postgres]'")
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="planner-pg-"))  # pytest's tmp tree is private to root; postgres must enter this one
    data = d / "data"
    os.chmod(d, 0o777)
    port = _free_port()

    def as_pg(*cmd):
        return subprocess.run(["runuser", "-u", "postgres", "--", *map(str, cmd)], check=True, capture_output=True, text=True)

    as_pg(PG_BIN / "initdb", "-D", data, "-A", "trust", "-U", "postgres")
    as_pg(PG_BIN / "pg_ctl", "-D", data, "-o", f"-p {port} -k {d} -c listen_addresses=127.0.0.1 -c max_connections=300", "-l", d / "log", "-w", "start")
    try:
        as_pg(PG_BIN / "createdb", "-h", "127.0.0.1", "-p", port, "optuna")
        as_pg(PG_BIN / "createdb", "-h", "127.0.0.1", "-p", port, "mlflow")
        yield f"postgresql://postgres:s3cret@127.0.0.1:{port}"  # trust auth ignores it; it must never be shown
    finally:
        subprocess.run(["runuser", "-u", "postgres", "--", str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(d, ignore_errors=True)


def _cli(*args, env=None, **kw):
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true", **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "planner", *map(str, args)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, **kw)


def test_two_workers_share_one_postgres_study(postgres, tmp_path):
    import optuna
    from mlflow.tracking import MlflowClient
    from optuna.trial import TrialState

    storage, tracking = f"{postgres}/optuna", f"{postgres}/mlflow"
    polling = optuna.storages.RDBStorage(storage)  # one engine for all polling (a URL string makes one per call)
    common = ["--target", DATA / "fast-cpu.yaml", "--space", DATA / "small-space.yaml", "--sampler", "random",
              "--eval-samples", "6", "--study", "shared", "--storage", storage, "--tracking-uri", tracking]
    # the first worker creates the study; the second joins it with `planner worker` (specs read from the study)
    # 3 + 2 measured candidates on a 6-configuration space (duplicates are free, so asking for more than the
    # space holds would end in "exhausted" instead)
    first = _cli("optimize", "--model", "tiny-mlp", "--trials", "3", *common, "--home", tmp_path / "w1")
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if optuna.load_study(study_name="shared", storage=polling).user_attrs.get("mlflow_parent_run_id"):
                break
        except KeyError:
            pass
        time.sleep(1)
    second = _cli("worker", "--study", "shared", "--storage", storage, "--tracking-uri", tracking, "--trials", "2",
                  "--home", tmp_path / "w2")
    out1, err1 = first.communicate(timeout=600)
    out2, err2 = second.communicate(timeout=600)
    assert first.returncode == 0, err1
    assert second.returncode == 0, err2
    study = optuna.load_study(study_name="shared", storage=polling)
    measured = [t for t in study.trials if "duplicate_of" not in t.user_attrs]  # duplicates cost no trial
    assert len(measured) == 5 and len({t.number for t in measured}) == 5
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    c = MlflowClient(tracking_uri=tracking)
    exp = c.get_experiment_by_name("planner/tiny-mlp/fast-cpu")
    runs = c.search_runs([exp.experiment_id])
    assert len([r for r in runs if r.data.tags.get("planner.kind") == "study"]) == 1
    pids = {t.user_attrs["pid"] for t in study.trials}
    assert len(pids) == 2  # both workers measured trials
    assert "s3cret" not in out1 + out2 + err1 + err2 and ":***@" in out1
    parent = next(r for r in runs if r.data.tags.get("planner.kind") == "study")
    assert "s3cret" not in str(parent.data.params) + str(parent.data.tags)


def test_stale_trial_of_a_killed_worker_is_failed_by_another(postgres, tmp_path):
    import optuna
    from optuna.trial import TrialState

    storage = f"{postgres}/optuna"
    polling = optuna.storages.RDBStorage(storage)
    space = tmp_path / "space.yaml"
    space.write_text("name: hang\nbatch_size: [4]\nbackends: {torch: {}}\n")
    common = ["--target", DATA / "fast-cpu.yaml", "--space", space, "--eval-samples", "6", "--storage", storage,
              "--study", "stale", "--heartbeat", "1", "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"]
    p = _cli("optimize", "--model", f"{DATA / 'models.py'}:hang_on_batch4", "--trials", "1", *common, "--home", tmp_path / "h")
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            st = optuna.load_study(study_name="stale", storage=polling)
            if any(t.state == TrialState.RUNNING for t in st.trials):
                break
        except KeyError:
            pass
        time.sleep(0.5)
    else:
        pytest.fail("the trial never started")
    os.killpg(p.pid, signal.SIGKILL)  # the whole worker host dies: planner process and its measuring child
    p.wait()
    time.sleep(4)  # > 3 missed heartbeats
    from planner.search.storage import make_storage

    # what any other worker started with the same --heartbeat does before each trial
    optuna.storages.fail_stale_trials(optuna.load_study(study_name="stale", storage=make_storage(storage, 1)))
    st = optuna.load_study(study_name="stale", storage=polling)
    assert [t.state for t in st.trials] == [TrialState.FAIL]


def test_kill_9_then_resume_keeps_finished_trials(tmp_path):
    """kill -9 of the whole planner process group mid-study; the same command resumes without loss or repeats."""
    import optuna
    from mlflow.tracking import MlflowClient
    from optuna.trial import TrialState

    home = Home(tmp_path / "home")
    args = ["optimize", "--model", "tiny-mlp", "--target", DATA / "fast-cpu.yaml", "--space", DATA / "small-space.yaml",
            "--sampler", "random", "--eval-samples", "6", "--study", "r", "--home", home.root]
    p = _cli(*args, "--trials", "50")
    deadline = time.time() + 300
    while time.time() < deadline:
        time.sleep(1)
        if (home.root / "optuna.db").exists():
            # read-only polling: optuna.load_study here could race the CLI's own schema creation (seen once:
            # "UNIQUE constraint failed: alembic_version" in this process)
            try:
                with closing(sqlite3.connect(f"file:{home.root / 'optuna.db'}?mode=ro", uri=True)) as db:
                    states = [s for (s,) in db.execute("SELECT state FROM trials ORDER BY number")]
            except sqlite3.Error:  # tables not created yet
                continue
            if states.count("COMPLETE") >= 2 and states[-1] == "RUNNING":
                break
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    before = optuna.load_study(study_name="r", storage=home.optuna_url).trials
    done_before = {t.number: t.values for t in before if t.state == TrialState.COMPLETE}
    assert len(done_before) >= 2 and any(t.state == TrialState.RUNNING for t in before)

    r = _cli(*args, "--trials", "2")
    out, err = r.communicate(timeout=300)
    assert r.returncode == 0, err
    after = optuna.load_study(study_name="r", storage=home.optuna_url).trials
    assert len([t for t in after[len(before):] if "duplicate_of" not in t.user_attrs]) == 2  # 2 more measured
    assert all(after[n].values == v for n, v in done_before.items())  # finished trials kept, not re-run
    assert all(t.state != TrialState.RUNNING for t in after)  # the orphan was failed
    orphan = next(t for t in after if t.number == before[-1].number)
    assert orphan.state == TrialState.FAIL and orphan.user_attrs["fail_reason"] == "interrupted"
    c = MlflowClient(tracking_uri=home.tracking_uri)
    runs = c.search_runs([e.experiment_id for e in c.search_experiments()])
    assert not [x for x in runs if x.info.status == "RUNNING"]


def test_compile_workers_overlap_compiles_but_never_measurements(tmp_path):
    import json

    import optuna
    from optuna.trial import TrialState

    home = Home(tmp_path / "home")
    space = tmp_path / "space.yaml"
    space.write_text("name: pipe\nbatch_size: [1, 2, 4]\nbackends:\n  torch: {}\n  onnxruntime:\n    graph_optimization_level: [basic, all]\n")
    p = _cli("optimize", "--model", "tiny-mlp", "--target", DATA / "fast-cpu.yaml", "--space", space, "--trials", "6",
             "--sampler", "grid", "--eval-samples", "6", "--study", "pipe", "--compile-workers", "3", "--home", home.root)
    out, err = p.communicate(timeout=600)
    assert p.returncode == 0, err
    study = optuna.load_study(study_name="pipe", storage=home.optuna_url)
    done = [t for t in study.trials if t.state == TrialState.COMPLETE and "duplicate_of" not in t.user_attrs]
    assert len(done) >= 5
    windows, starts = [], []
    for t in done:
        d = home.study_dir("pipe") / "trials" / f"{t.number:04d}"
        windows.append(tuple(json.loads((d / "result.json").read_text())["measured_window"]))
        starts.append(d.joinpath("job.json").stat().st_mtime)
        assert json.loads(d.joinpath("job.json").read_text())["batch_sizes"] == [1, 2, 4]  # for optimization profiles
    windows.sort()
    assert all(a[1] <= b[0] for a, b in zip(windows, windows[1:])), windows  # measurements never overlap
    first_end = windows[0][1]
    assert sum(s < first_end for s in starts) >= 2  # a second candidate was compiling before the first was measured


def test_three_workers_reach_the_study_goal_though_one_is_killed(postgres, tmp_path):
    """3 workers share a 12-trial study (--study-trials 12); kill -9 of one mid-trial: the other two finish the
    study, the killed trial is failed (stale heartbeat) and its MLflow run closed; no config measured twice."""
    import optuna
    from mlflow.tracking import MlflowClient
    from optuna.trial import TrialState

    storage, tracking = f"{postgres}/optuna", f"{postgres}/mlflow"
    polling = optuna.storages.RDBStorage(storage)  # one engine for all the polling below (a URL string makes one per call)
    # 24 configs: enough for 12 distinct ones plus the killed one; each compile takes 0.5 s (the fake backend's
    # build_delay), so a trial of the victim is caught running however fast its worker starts (forked: well under 1 s)
    space, target, fake_env = fake_backend_files(
        tmp_path, "name: three\nbatch_size: [1, 2, 3, 4, 5, 6, 7, 8]\nbackends:\n  fake:\n    behaviour: [ok, steady, lucky]\n"
        "    build_delay: [0.5]\n")
    shared = ["--storage", storage, "--tracking-uri", tracking, "--study", "three", "--study-trials", "12", "--heartbeat", "1"]
    first = _cli("optimize", "--model", "tiny-mlp", "--target", target, "--space", space, "--sampler", "grid",
                 "--eval-samples", "6", "--early-exit-factor", "0", *shared, "--home", tmp_path / "w0", env=fake_env)

    def study():
        try:
            return optuna.load_study(study_name="three", storage=polling)
        except KeyError:
            return None

    deadline = time.time() + 120
    while time.time() < deadline and not ((s := study()) and s.user_attrs.get("mlflow_parent_run_id")):
        time.sleep(0.5)
    others = [_cli("worker", *shared, "--home", tmp_path / f"w{i}", env=fake_env) for i in (1, 2)]
    victim = others[0]
    deadline = time.time() + 300
    while time.time() < deadline:
        trials = study().trials
        mine = [t for t in trials if t.state == TrialState.RUNNING and t.user_attrs.get("pid") == victim.pid
                and t.user_attrs.get("mlflow_run_id")]  # its worker runs (its MLflow run is open)
        if mine and sum(t.state == TrialState.COMPLETE for t in trials) >= 2:
            killed = mine[0].number
            break
        time.sleep(0.2)
    else:
        pytest.fail("the victim never ran a trial")
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    outs = [p.communicate(timeout=600) for p in (first, others[1])]
    for p, (out, err) in zip((first, others[1]), outs):
        assert p.returncode == 0, err

    from planner.search.storage import WORKER_LOSSES, study_progress

    trials = study().trials
    states = [(t.number, t.state.name, t.user_attrs.get("fail_reason"), t.user_attrs.get("fail_message", "")[:200]) for t in trials]
    assert study_progress(study()) == (12, 0), states  # 12 finished: complete, or failed for a reason of the candidate
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    # failed for a reason of the candidate; the killed worker's trial is failed by the heartbeat (no reason) or,
    # when a worker opened the study after the kill, as an orphan of a dead process ("interrupted"): neither counts
    judged = [t for t in trials if t.state == TrialState.FAIL and t.user_attrs.get("fail_reason")
              and t.user_attrs["fail_reason"] not in WORKER_LOSSES]
    assert len(complete) + len(judged) == 12 and len(complete) >= 10, states
    lost = next(t for t in trials if t.number == killed)
    assert lost.state == TrialState.FAIL and lost.user_attrs.get("fail_reason") in (None, *WORKER_LOSSES), states
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    measured = [t for t in complete if t.user_attrs.get("duplicate_of") is None]
    assert len({t.user_attrs["config_key"] for t in measured}) == len(measured)  # no config measured twice
    assert {first.pid, others[1].pid} <= {t.user_attrs["pid"] for t in complete}  # both survivors measured trials

    c = MlflowClient(tracking_uri=tracking)
    exp = c.get_experiment_by_name("planner/tiny-mlp/fast-cpu")
    parent = study().user_attrs["mlflow_parent_run_id"]  # the experiment also holds other tests' studies
    runs = [r for r in c.search_runs([exp.experiment_id]) if r.data.tags.get("mlflow.parentRunId") == parent]
    finished = {r.info.run_id for r in runs if r.info.status == "FINISHED"}
    assert finished == {t.user_attrs["mlflow_run_id"] for t in measured}
    failed = {r.info.run_id: r.data.tags.get("planner.status") for r in runs if r.info.status == "FAILED"}
    assert {t.user_attrs["mlflow_run_id"] for t in judged} <= set(failed)
    lost = next(t for t in trials if t.number == killed).user_attrs["mlflow_run_id"]
    assert failed.get(lost) == "worker_lost"
    assert not [r for r in runs if r.info.status == "RUNNING"]


def test_a_trial_asked_by_a_process_that_died_before_naming_itself_is_failed_on_resume(tmp_path, monkeypatch):
    """kill -9 can land between Optuna's ask and the owner's first write: such a trial has no pid; once it is older
    than the grace a live process needs to write one it is failed, a younger one is waited for, an owned one kept."""
    import optuna
    from optuna.trial import TrialState

    from planner.search.storage import make_storage
    from planner.search.store import StudyStore

    storage = make_storage(f"sqlite:///{tmp_path / 'o.db'}")
    study = optuna.create_study(study_name="s", storage=storage)
    ownerless = study.ask()  # its process "died" here
    owned = study.ask()
    owned.set_user_attr("host", socket.gethostname())
    owned.set_user_attr("pid", os.getpid())  # alive: kept
    store = StudyStore(study, storage)
    assert [t.number for t in store._still_ownerless([store.frozen(ownerless.number)], grace=0.5)] == [ownerless.number]

    late = study.ask()  # a live process writing its owner within the grace is not failed

    def name_it():
        time.sleep(0.3)
        late.set_user_attr("pid", os.getpid())

    import threading

    threading.Thread(target=name_it).start()
    assert store._still_ownerless([store.frozen(late.number)], grace=3.0) == []

    time.sleep(0.6)
    monkeypatch.setattr("planner.search.store.OWNER_GRACE_SECONDS", 0.5)
    t0 = time.time()
    StudyStore(study, storage).fail_orphans()
    assert time.time() - t0 < 5  # the module's grace was used, not a default bound at import
    states = {t.number: t.state for t in study.get_trials()}
    assert states == {ownerless.number: TrialState.FAIL, owned.number: TrialState.RUNNING, late.number: TrialState.RUNNING}
    assert study.trials[ownerless.number].user_attrs["fail_reason"] == "interrupted"
