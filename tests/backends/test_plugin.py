"""A backend from another package: registered through the `planner.backends` entry point group, checked by the
importable conformance suite, and searched by a real study (workers find it the same way)."""

import os
import textwrap

import pytest

from planner.backends import registry
from support import DATA, run_cli

PLUGIN = '''
"""planner_demo_plugin: a tiny out-of-tree backend (ONNX Runtime with its own session code)."""
import shutil
import time
from pathlib import Path
from typing import Literal

import numpy as np

from planner.backends.base import Backend, BackendOptions, BuildResult, Runtime


class _Session(Runtime):
    def __init__(self, path, threads):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        self.sess = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
        self.names = [o.name for o in self.sess.get_outputs()]

    def bind(self, inputs):
        feeds = dict(inputs)
        return lambda: self.sess.run(self.names, feeds)

    def infer(self, inputs):
        return [np.asarray(o) for o in self.sess.run(self.names, dict(inputs))]


class Demo(Backend):
    name = "demo"
    modules = ("onnxruntime",)
    devices = ("cpu",)
    input_format = "onnx"
    engine_files = ("demo.onnx",)

    class Options(BackendOptions):
        threads: Literal[1, 2] = 1

    @classmethod
    def load_artifact(cls, engine_dir, batch, device):
        return _Session(Path(engine_dir) / "demo.onnx", 1)

    def compile(self, source, cfg, target, workdir):
        t0 = time.perf_counter()
        opts = self.resolve_options(cfg.options())
        dst = Path(workdir) / "demo.onnx"
        shutil.copyfile(source.onnx_path(cfg), dst)
        return BuildResult(_Session(dst, opts["threads"]), [dst], time.perf_counter() - t0, {"plugin": 1})
'''


@pytest.fixture
def plugin_site(tmp_path, monkeypatch):
    """A folder on sys.path (and PYTHONPATH, for workers) holding the plugin package and its dist-info, as
    `pip install` leaves them: the entry point is read from the metadata, nothing is configured by hand."""
    site = tmp_path / "site"
    (site / "planner_demo_plugin").mkdir(parents=True)
    (site / "planner_demo_plugin" / "__init__.py").write_text(PLUGIN)
    dist = site / "planner_demo_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: planner-demo-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[planner.backends]\ndemo = planner_demo_plugin:Demo\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    monkeypatch.delenv("PLANNER_BACKENDS", raising=False)
    return site


def test_an_installed_plugin_is_registered_and_conforms(plugin_site, tmp_path):
    from planner.backends.conformance import run_conformance

    assert "demo" in registry.names() and "demo" not in registry.REGISTRY
    cls = registry.get("demo")
    assert cls.options == {"threads": (1, 2)}
    run_conformance(cls, tmp_path / "conformance")


def test_a_study_searches_the_plugin_backend(plugin_site, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(textwrap.dedent("""\
        name: plugin
        batch_size: [1, 4]
        backends:
          demo:
            threads: [1, 2]
        """))
    target = tmp_path / "target.yaml"
    target.write_text((DATA / "fast-cpu.yaml").read_text().replace("backends: [", "backends: [demo, "))
    home = tmp_path / "home"
    r = run_cli("optimize", "--model", "tiny-mlp", "--target", target, "--space", space, "--trials", "2",
                "--eval-samples", "6", "--confirm", "0", "--study", "plugin", "--home", home)
    assert r.returncode == 0, r.stderr + r.stdout
    import optuna

    study = optuna.load_study(study_name="plugin", storage=f"sqlite:///{home / 'optuna.db'}")
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 2, [(t.state, t.params, t.user_attrs.get("fail_reason")) for t in study.trials]
    assert all(t.user_attrs["config"]["backend"] == "demo" and "demo.threads" in t.params for t in done)


def test_a_plugin_may_not_take_a_built_in_name(plugin_site):
    (plugin_site / "planner_demo_plugin-0.1.dist-info" / "entry_points.txt").write_text(
        "[planner.backends]\nonnxruntime = planner_demo_plugin:Demo\n")
    registry._scan.cache_clear()
    from planner.errors import ConfigError

    with pytest.raises(ConfigError, match="onnxruntime: the name is a built-in"):
        registry.names()
    registry._scan.cache_clear()


def test_a_space_value_the_plugin_does_not_take_is_one_line(plugin_site, tmp_path):
    from planner.errors import ConfigError
    from planner.space import load_space

    p = tmp_path / "bad.yaml"
    p.write_text("name: bad\nbackends:\n  demo:\n    threads: [1, 3]\n")
    with pytest.raises(ConfigError) as e:
        load_space(p)
    assert e.value.errors == [f"{p}: backends.demo.threads: demo option threads=3: valid values: 1, 2"]
