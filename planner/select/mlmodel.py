"""Registered deployments as MLflow Models: ``MLmodel`` + environment + loader beside the engine files.

A trial run's ``engine/`` artifact holds the engine files exactly as measured (and as ``planner export``
copies them into a bundle).  `ensure_mlflow_model` adds, once per run, what makes that folder an MLflow
Model, so ``mlflow.pyfunc.load_model("models:/planner-…@knee")`` and ``mlflow models serve`` work on the
registered version (whose source stays ``runs:/<run>/engine``)::

    MLmodel            flavors: python_function (loader `planner.select.pyfunc`), onnx for an ONNX engine;
                       signature (inputs as measured, batch axis -1 when the engine takes any batch; output
                       ``output0``: all outputs of a sample flattened), input example, and
                       ``metadata.planner``: the trial's manifest (sha256 of every engine file), metrics,
                       target, trial, engine file, batch size
    requirements.txt   the engine's runtime and numpy, pinned to the versions measured (+ mlflow)
    python_env.yaml, conda.yaml, input_example.json, serving_input_example.json
    code/planner/      the part of planner the loader runs (`planner.select.pyfunc.LOADER_CODE`: the backends'
                       modules, verify's checksum check and engine loader), so it loads where planner is not
                       installed

The engine files are not copied: the model and the bundle are the same bytes.  Before anything is logged the
engine is loaded once in a fresh process by `planner verify`'s runner, which states whether its batch axis is
dynamic and how wide its outputs are (and proves it loads here).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

from planner.errors import PlannerError
from planner.select.pyfunc import META_KEY

LOADER_MODULE = "planner.select.pyfunc"
MODEL_FILE = "MLmodel"


def _engine_listing(client, run_id: str) -> list[str]:
    return [PurePosixPath(a.path).name for a in client.list_artifacts(run_id, "engine")]


def has_mlflow_model(client, run_id: str) -> bool:
    """Whether the run's ``engine/`` artifact is already an MLflow Model (a resumed study reuses it)."""
    return MODEL_FILE in _engine_listing(client, run_id)


def requirements(backend, libraries: dict[str, str]) -> list[str]:
    """pip requirements of the engine's runtime (the backend's declared modules) and numpy, at the measured versions."""
    dists = [backend.distributions.get(m, m) for m in backend.modules] + ["numpy"]
    out = []
    for d in dict.fromkeys(dists):
        out.append(f"{d}=={libraries[d]}" if libraries.get(d) else d)
    return out


def _signature(inputs: list[dict], batch_axis: int, width: int | None, lengths: bool = False):
    """Inputs in the model's own layout (``batch_axis``, -1 or the engine's fixed batch, at each input's batch axis;
    an input without one: its shape); one output ``[samples, width]``.  ``lengths``: the engine takes requests at
    their own lengths (the trial was served so, build info ``length_axes``): -1 at each input's ``length_axis``."""
    import numpy as np
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    def shape(i: dict) -> tuple:
        dims, axis = list(i["shape"]), i.get("batch_axis", 0)
        if lengths and i.get("length_axis") is not None:
            dims[int(i["length_axis"])] = -1
        return tuple(dims) if axis is None else (*dims[:axis], batch_axis, *dims[axis:])

    ins = Schema([TensorSpec(np.dtype(i.get("dtype", "float32")), shape(i), i["name"]) for i in inputs])
    outs = Schema([TensorSpec(np.dtype("float32"), (batch_axis, int(width) if width else -1), "output0")])
    return ModelSignature(inputs=ins, outputs=outs)


def _facts(manifest: dict, engine_file: str, batch: int, describe: dict, metrics: dict, run_id: str,
           registered_as: str | None) -> dict[str, Any]:
    target = manifest.get("target") or {}
    trial = manifest.get("trial") or {}
    cfg = trial.get("config") or {}
    keep = ("latency_ms", "latency_p50_ms", "latency_p99_ms", "throughput", "quality_loss", "max_abs_error",
            "confirmed_rounds", "study_latency_ms")
    return json.loads(json.dumps({  # plain data (no YAML anchors in MLmodel for repeated parts)
        "engine_file": engine_file,
        "backend": cfg.get("backend"),
        "batch_size": batch,
        "dynamic_batch": bool(describe.get("dynamic_batch")),
        "max_batch_size": target.get("max_batch_size"),
        "output_width": describe.get("flat_output_width"),
        "output_layout": "output0[i] = every output of sample i, flattened and concatenated, float32",
        "device": "cuda" if (target.get("device") or {}).get("kind") == "cuda" else "cpu",
        "threads": target.get("threads"),
        "inputs": (manifest.get("model") or {}).get("inputs") or [],
        "output_axes": (manifest.get("model") or {}).get("output_axes"),  # None: every output batches on axis 0
        "metrics": {k: float(metrics[k]) for k in keep if isinstance(metrics.get(k), (int, float))},
        "target": target.get("name"),
        "study": trial.get("study"),
        "trial": trial.get("number"),
        "run_id": run_id,
        "registered_as": registered_as,
        "manifest": {k: manifest[k] for k in ("planner_version", "created", "model", "target", "trial", "metrics",
                                              "backend", "environment", "files") if k in manifest},
    }, default=str))


def _onnx_flavor(model, engine_dir: Path, engine_file: str) -> None:
    """The native ``onnx`` flavor (``mlflow.onnx.load_model``) on the same ``model.onnx``."""
    try:
        import onnx
    except ImportError:
        return
    opts = {}
    sj = engine_dir / "session.json"
    if sj.is_file():
        opts = json.loads(sj.read_text())
    ep = {"cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}.get(opts.get("execution_provider"))
    model.add_flavor("onnx", onnx_version=onnx.__version__, data=engine_file,
                     providers=[p for p in (ep, "CPUExecutionProvider") if p],
                     onnx_session_options={k2: int(opts[k1]) for k1, k2 in (("intra_op_threads", "intra_op_num_threads"),
                                                                            ("inter_op_threads", "inter_op_num_threads"))
                                           if isinstance(opts.get(k1), int)},
                     code=None)


def _stage_code(dst: Path) -> Path:
    """``dst/planner``: the parts of the planner package the loader runs (`planner.select.pyfunc.LOADER_CODE`)."""
    import planner
    from planner.select.pyfunc import LOADER_CODE

    src = Path(planner.__file__).parent
    out = dst / "planner"
    for rel in LOADER_CODE:
        s, d = src / rel, out / rel
        d.parent.mkdir(parents=True, exist_ok=True)
        if s.is_dir():
            shutil.copytree(s, d, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copyfile(s, d)
    return out


def build_model_dir(manifest: dict, engine_dir: Path, out: Path, *, run_id: str, metrics: dict | None = None,
                    registered_as: str | None = None, timeout: float = 600.0) -> Path:
    """Write the MLflow Model files for the engine in ``engine_dir`` (files as the manifest lists them) into
    ``out`` (without the engine files).  Raises `PlannerError` when the engine does not load here."""
    import numpy as np

    from mlflow.models import Model
    from mlflow.pyfunc import save_model

    import planner.backends.registry as registry
    from planner.select.verify import engine_job, run_engine_job, sample_inputs
    from planner.source import to_model_layout

    files = manifest.get("files") or {}
    cfg = (manifest.get("trial") or {}).get("config") or {}
    backend = registry.get(cfg["backend"]) if cfg.get("backend") else None
    engine_file = next((n for n in (backend.main_engine_names() if backend else ()) if n in files), None)
    if engine_file is None:
        raise PlannerError(f"run {run_id}: its backend {cfg.get('backend')!r} declares no engine file among {sorted(files)}")
    batch = int(cfg.get("batch_size") or 1)
    model_inputs = (manifest.get("model") or {}).get("inputs") or []
    if not model_inputs:
        raise PlannerError(f"run {run_id}: its manifest names no model inputs, so there is no signature to write")
    example = sample_inputs(manifest, batch, seed=int((manifest.get("model") or {}).get("seed", 0)))
    with tempfile.TemporaryDirectory(prefix="planner-mlmodel-") as tmp:
        samples = Path(tmp) / "samples.npz"
        np.savez(samples, **{f"in:{k}": v for k, v in example.items()})
        partial = {"target": manifest.get("target"), "trial": manifest.get("trial"), "model": manifest.get("model"),
                   "export": {"engine_dir": ".", "engine_file": engine_file, "batch_size": batch}}
        r = run_engine_job(engine_job(Path(engine_dir), partial, samples=str(samples), describe=True), timeout)
        if r.get("status") != "ok":
            raise PlannerError(f"run {run_id}: the engine does not load here, so it is not logged as an MLflow Model: "
                               f"{r.get('message')}")
        describe = r.get("describe") or {}
        facts = _facts(manifest, engine_file, batch, describe, metrics or manifest.get("metrics") or {}, run_id,
                       registered_as)
        mlflow_model = Model()
        if engine_file.endswith(".onnx"):
            _onnx_flavor(mlflow_model, Path(engine_dir), engine_file)
        libs = (manifest.get("environment") or {}).get("libraries") or {}
        code = _stage_code(Path(tmp) / "code")
        # the signature's layout: each input's samples on its batch axis, an unbatched one given once
        laid = to_model_layout(example, {i["name"]: i.get("batch_axis", 0) for i in model_inputs})
        example_in = laid if len(laid) > 1 else {model_inputs[0]["name"]: next(iter(laid.values()))}
        save_model(out, loader_module=LOADER_MODULE, code_paths=[str(code)], mlflow_model=mlflow_model,
                   signature=_signature(model_inputs, -1 if facts["dynamic_batch"] else batch, facts["output_width"],
                                                  bool((manifest.get("backend") or {}).get("length_axes"))),
                   input_example=example_in, pip_requirements=requirements(backend, libs),
                   metadata={META_KEY: facts})
    return out


def ensure_mlflow_model(client, run_id: str, *, metrics: dict | None = None, registered_as: str | None = None,
                        timeout: float = 600.0) -> bool:
    """Make the run's ``engine/`` artifact an MLflow Model; False when it already was (nothing logged)."""
    import os

    from planner.cache import sha256_file
    from planner.paths import safe_join

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    listing = _engine_listing(client, run_id)
    if not listing or MODEL_FILE in listing:  # no engine logged (nothing to serve), or already a model
        return False
    with tempfile.TemporaryDirectory(prefix="planner-mlmodel-") as tmp:
        dl = Path(tmp)
        manifest = json.loads(Path(client.download_artifacts(run_id, "manifest.json", str(dl))).read_text())
        files = manifest.get("files") or {}
        if not files:  # e.g. an LLM decoder study: nothing `load_artifact` loads
            return False
        engine = dl / "engine"
        for f, meta in files.items():
            p = Path(client.download_artifacts(run_id, f"engine/{f}", str(dl / "download")))
            if meta.get("sha256") and sha256_file(p) != meta["sha256"]:
                raise PlannerError(f"run {run_id}: artifact engine/{f} does not match the sha256 in its manifest")
            dst = safe_join(engine, f)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(p, dst)
        out = build_model_dir(manifest, engine, dl / "model", run_id=run_id, metrics=metrics,
                              registered_as=registered_as, timeout=timeout)
        client.log_artifacts(run_id, str(out), artifact_path="engine")
    return True
