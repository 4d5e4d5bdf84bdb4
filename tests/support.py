"""Helpers shared by the tests (import as `from support import ...`; conftest modules are not importable by name)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
TESTS = Path(__file__).resolve().parent

# Test files whose tests hold real work to a clock or load every core (served latency under traffic, multi-worker
# studies, trial timeouts, killed and signalled processes, a browser): `make test` runs the rest two at a time
# (pytest-xdist) and these afterwards, alone on the machine, so that what they time is not the other test's load.
SERIAL = {
    "backends/test_serving_instances.py", "browser/test_ui_browser.py", "e2e/test_batch1_model.py",
    "e2e/test_served_study.py", "measure/test_forkserver.py", "measure/test_serving.py", "measure/test_timer.py",
    "measure/test_worker.py", "search/test_early_exit.py", "search/test_scaleout.py", "select/test_confirm.py",
    "test_cli_ui.py", "test_traffic.py",
}


def run_cli(*args, cwd=None, env=None, timeout=600):
    """Run the real `planner` CLI in a subprocess."""
    e = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "planner", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd or ROOT, env=e, timeout=timeout)


def bound_files(tmp_path, space_yaml: str, bound: float) -> tuple[Path, Path]:
    """(space, target): the space YAML and the short-protocol test target with its quality bound set to ``bound``,
    written to ``tmp_path``."""
    space = tmp_path / "space.yaml"
    space.write_text(space_yaml)
    target = tmp_path / "target.yaml"
    target.write_text((DATA / "fast-cpu.yaml").read_text().replace("max_quality_loss: 0.05", f"max_quality_loss: {bound!r}"))
    return space, target


def fake_backend_files(tmp_path, space_yaml: str):
    """(space, target, env) for studies on the plugin backend `tests/data/fake_backend.py`: the space YAML written
    to ``tmp_path``, the short-protocol test target allowing `fake`, and the environment that registers it."""
    space = tmp_path / "space.yaml"
    space.write_text(space_yaml)
    target = tmp_path / "target.yaml"
    target.write_text((DATA / "fast-cpu.yaml").read_text().replace("backends: [", "backends: [fake, "))
    env = {"PLANNER_BACKENDS": "fake=fake_backend:Fake", "PYTHONPATH": f"{DATA}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return space, target, env


def run_triton_python_model(model_dir, inputs: dict, monkeypatch):
    """Run the Triton Python-backend ``1/model.py`` that `planner export --format triton` wrote, on CPU, against a
    stand-in for ``triton_python_backend_utils`` (no Triton server here): its one output for one request."""
    import importlib.util
    import json
    import types

    class Tensor:
        def __init__(self, name, array):
            self.name, self.array = name, array

        def as_numpy(self):
            return self.array

    class Response:
        def __init__(self, output_tensors):
            self.output_tensors = output_tensors

    fake = types.ModuleType("triton_python_backend_utils")
    fake.Tensor, fake.InferenceResponse = Tensor, Response
    fake.get_input_tensor_by_name = lambda req, name: req[name]
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", fake)
    spec = importlib.util.spec_from_file_location("planner_triton_model", Path(model_dir) / "1" / "model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    m = mod.TritonPythonModel()
    m.initialize({"model_config": json.dumps({"input": [{"name": n} for n in inputs], "output": [{"name": "output0"}]}),
                  "model_instance_kind": "CPU"})
    (resp,) = m.execute([{n: Tensor(n, a) for n, a in inputs.items()}])
    assert resp.output_tensors[0].name == "output0"
    return resp.output_tensors[0].as_numpy()
