"""Hand-off to serving: export one measured deployment as a self-checking bundle or a Triton model repository.

    planner export (RUN_ID | models:/NAME@ALIAS | models:/NAME/VERSION) --out DIR [--format bundle|triton]

bundle (``DIR/``)::

    model.onnx + session.json | model.pt2 (or model.ts) | model.plan | model.so | model.xml + model.bin + openvino.json
                     the engine, as measured
    samples.npz      ``in:<input>`` sample inputs (2 batches at the trial's batch size) and ``ref``:
                     the fp32 reference outputs, flattened per sample (or the engine's own outputs
                     when the study's reference is gone; the manifest says which)
    manifest.json    the trial's manifest + ``export`` (source run, tolerance, engine, samples) and
                     sha256 of every file above
    README.md        how to load and call the engine

triton (``DIR/<name>/``)::

    config.pbtxt, 1/model.<ext> (+ 1/model.py for the Python backend), manifest.json, samples.npz, README.md

Everything is written into a temporary sibling of DIR and renamed into place at the
end, so a failed export leaves nothing half-written; every relative path written is
checked not to escape DIR.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from planner.errors import ConfigError, PlannerError
from planner.paths import UnsafePath, safe_join, safe_relpath
from planner.select.verify import engine_backend
from planner.select.verify import sample_inputs as _sample_inputs

SAMPLE_BATCHES = 2  # at least this many batches, and at least MIN_SAMPLES samples
MIN_SAMPLES = 8
TOL_FACTOR = 1.5
TOL_EPS = 1e-5
TOL_RTOL = 1e-5
RESERVED = ("manifest.json", "samples.npz", "README.md", "config.pbtxt")
TRITON_TYPES = {
    "float32": "TYPE_FP32", "float16": "TYPE_FP16", "bfloat16": "TYPE_BF16", "float64": "TYPE_FP64",
    "int64": "TYPE_INT64", "int32": "TYPE_INT32", "int16": "TYPE_INT16", "int8": "TYPE_INT8", "uint8": "TYPE_UINT8",
    "bool": "TYPE_BOOL",
}
ONNX_TYPES = {1: "float32", 2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64", 9: "bool", 10: "float16",
              11: "float64", 16: "bfloat16"}


# --------------------------------------------------------------------------- rebuild


def rebuild_config(study, trial_number: int, storage: str | None = None):
    """The TrialConfig of trial ``trial_number`` rebuilt from its Optuna params by `planner.space.rebuild`.

    ``study`` is an Optuna study (or its name, with ``storage``).  The search space and target come from
    the study's stored ``space_spec``/``target_spec``; the result must equal the stored config, else
    `PlannerError` (the code that samples configs changed since the study ran).
    """
    from planner.config import TrialConfig
    from planner.space import SearchSpace, rebuild
    from planner.target import Target

    if isinstance(study, str):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.load_study(study_name=study, storage=storage)
    attrs = study.user_attrs
    if "space_spec" not in attrs or "target_spec" not in attrs:
        raise ConfigError(f"study {study.study_name!r}: has no stored space_spec/target_spec (not a planner study)")
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    if trial_number not in trials:
        raise ConfigError(f"study {study.study_name!r}: no trial {trial_number}; trials: 0..{max(trials, default=-1)}")
    t = trials[trial_number]
    if "config" not in t.user_attrs:
        raise ConfigError(f"study {study.study_name!r}: trial {trial_number} has no stored config")
    space = SearchSpace.model_validate(attrs["space_spec"])
    target = Target.model_validate(attrs["target_spec"])
    fmt = (attrs.get("model_info") or {}).get("format", "torch")
    cfg = rebuild(t.params, space, target, fmt, widths=(attrs.get("model_info") or {}).get("prune_widths"))
    stored = TrialConfig.from_dict(t.user_attrs["config"])
    if cfg != stored:
        raise PlannerError(f"trial {trial_number} of study {study.study_name!r}: the config rebuilt from its params "
                           f"({cfg.describe()}, key {cfg.key()}) differs from the stored one ({stored.describe()}, key {stored.key()})")
    return cfg


# --------------------------------------------------------------------------- export


@dataclass
class ExportResult:
    out: Path
    root: Path  # where manifest.json is (DIR for a bundle, DIR/<name> for Triton)
    run_id: str
    format: str
    engine_file: str
    reference: str  # "fp32" or "engine"
    files: list[str]
    name: str
    notes: list[str]


def _tracking(home, tracking_uri: str | None):
    from planner.paths import Home

    h = Home.resolve(home)
    if tracking_uri is None and not (h.root / "mlflow.db").is_file():
        raise ConfigError(f"no MLflow store at {h.root / 'mlflow.db'}: run `planner optimize` first, or pass --home/--tracking-uri")
    return h, tracking_uri or h.tracking_uri


def _run_of_trial(home, storage: str | None, study: str, trial: int) -> str:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = storage or home.optuna_url
    try:
        st = optuna.load_study(study_name=study, storage=url)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(url)]
        raise ConfigError(f"--study {study!r}: no such study; studies: {', '.join(names) or 'none'}") from None
    t = next((t for t in st.get_trials(deepcopy=False) if t.number == trial), None)
    if t is None:
        raise ConfigError(f"--trial {trial}: study {study!r} has trials 0..{len(st.trials) - 1}")
    rid = t.user_attrs.get("mlflow_run_id")
    if not rid or not t.user_attrs.get("metrics"):
        raise ConfigError(f"--trial {trial}: trial {trial} of {study!r} was not measured ({t.state.name}"
                          f"{', ' + t.user_attrs.get('fail_reason', '') if t.user_attrs.get('fail_reason') else ''})")
    return rid


def _check_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ConfigError(f"--out {out}: folder is not empty; choose another or pass --force to replace it")


def _download(client, run_id: str, path: str, dst: Path) -> Path:
    return Path(client.download_artifacts(run_id, path, str(dst)))


def _output_axes(home, manifest: dict, engine_path: Path) -> list[int] | None:
    """Each output's batch axis, as the study's reference records it (``out_axes``, written for ONNX models; verify
    puts each first, as the reference did); None: every output batches on axis 0.  When the study's reference is
    gone, an ONNX engine's outputs get theirs as the study derived them (`planner.source.onnx_output_axes`: the
    dim named as an input's batch dim), from the inputs' recorded batch axes."""
    import numpy as np

    recorded = (manifest.get("model") or {}).get("output_axes")
    if recorded:  # the trial's manifest records them (studies since the MLflow Model loader reads them)
        return [int(a) for a in recorded]
    study = (manifest.get("trial") or {}).get("study")
    path = home.study_dir(study) / "reference.npz" if study else None
    if path is not None and path.is_file():
        with np.load(path, allow_pickle=False) as z:
            return [int(a) for a in z["out_axes"]] if "out_axes" in z.files else None
    inputs = (manifest.get("model") or {}).get("inputs") or []
    if engine_path.suffix == ".onnx" and any(i.get("batch_axis", 0) != 0 for i in inputs):
        from planner.model import InputSpec
        from planner.source import onnx_output_axes

        return onnx_output_axes(engine_path, tuple(InputSpec.from_dict(i) for i in inputs))
    return None


def _reference_samples(home, manifest: dict, n: int) -> tuple[dict[str, Any] | None, Any, str]:
    """(inputs, ref, why-not) from ``<home>/studies/<study>/reference.npz``; inputs None when unusable."""
    import numpy as np


    study = (manifest.get("trial") or {}).get("study")
    if not study:
        return None, None, "the manifest names no study"
    path = home.study_dir(study) / "reference.npz"
    if not path.is_file():
        return None, None, f"{path} not found"
    specs = (manifest.get("model") or {}).get("inputs") or []
    with np.load(path, allow_pickle=False) as z:
        ins = {k[3:]: z[k] for k in z.files if k.startswith("in:")}
        if "ref" not in z.files or not ins:
            return None, None, f"{path} has no reference outputs"
        ref = z["ref"]
    names = [s["name"] for s in specs]
    if names and set(names) != set(ins):
        return None, None, f"{path} inputs {sorted(ins)} differ from the model's {sorted(names)}"
    for s in specs:
        a = ins[s["name"]]
        if list(a.shape[1:]) != list(s["shape"]) or str(a.dtype) != s.get("dtype", "float32"):
            return None, None, f"{path} input {s['name']} is {a.dtype}{list(a.shape[1:])}, the model's is {s.get('dtype')}{s['shape']}"
    idx = np.arange(n) % len(ref)
    order = names or list(ins)
    return {k: np.ascontiguousarray(ins[k][idx]) for k in order}, np.ascontiguousarray(ref[idx].astype(np.float32)), ""


def tolerance(metrics: dict, reference: str) -> dict[str, Any]:
    """Comparison bounds for verify: ``|out - ref| <= atol + rtol * |ref|``.

    Against the fp32 reference the engine's own recorded error is the yardstick:
    ``atol = 1.5 * max_abs_error + 1e-5``.  Against its own outputs only run-to-run noise is allowed.
    """
    mae = metrics.get("max_abs_error")
    if reference == "fp32" and isinstance(mae, (int, float)) and math.isfinite(mae):
        return {"atol": TOL_FACTOR * float(mae) + TOL_EPS, "rtol": TOL_RTOL,
                "derived_from": f"{TOL_FACTOR} x recorded max_abs_error ({float(mae):.3g}) + {TOL_EPS:g}"}
    return {"atol": TOL_EPS * 10, "rtol": 1e-4, "derived_from": "run-to-run noise of the engine against its own outputs"}


def export(ref: str | None, out: Path, fmt: str = "bundle", force: bool = False, tracking_uri: str | None = None,
           home: str | Path | None = None, name: str | None = None, study: str | None = None, trial: int | None = None,
           storage: str | None = None, timeout: float = 600.0) -> ExportResult:
    """Export one trial's engine (see module doc).  Bad references and folders raise `ConfigError`."""
    from planner.record.mlflow import tracking_client
    from planner.select.registry import resolve

    if fmt not in ("bundle", "triton"):
        raise ConfigError(f"--format {fmt!r}: valid choices: bundle, triton")
    if (ref is None) == (study is None or trial is None):
        raise ConfigError("give either RUN_ID / models:/NAME@ALIAS / models:/NAME/VERSION, or --study NAME --trial N")
    out = Path(out).absolute()
    _check_out(out, force)
    h, uri = _tracking(home, tracking_uri)
    if ref is None:
        ref = _run_of_trial(h, storage, study, trial)  # type: ignore[arg-type]
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    client = tracking_client(uri)
    res = resolve(ref, client)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        result = _build(client, res, work, fmt, name, h, uri, timeout, storage)
        _check_out(out, force)  # again: someone may have written there meanwhile
        staged = work / "out"
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}-{int(time.time())}"
            os.replace(out, old)
            try:
                os.replace(staged, out)
            except BaseException:
                os.replace(old, out)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staged, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result.out = out
    result.root = out / result.root.relative_to(staged)
    return result


def _build(client, res, work: Path, fmt: str, name: str | None, home, uri: str, timeout: float, storage: str | None) -> ExportResult:
    from planner.config import TrialConfig

    dl = work / "download"
    dl.mkdir()
    notes: list[str] = []
    manifest, engine_files = _trial_manifest(client, res.run_id, dl)
    cfg = TrialConfig.from_dict((manifest.get("trial") or {}).get("config") or {})
    engine_file = _main_engine_file(res.run_id, engine_files, cfg.backend)
    batch = cfg.batch_size
    model, target = manifest.get("model") or {}, manifest.get("target") or {}
    tname = _bundle_name(name, res, model, target)

    staged = work / "out"
    root = staged / tname if fmt == "triton" else staged
    engine_rel = "1" if fmt == "triton" else "."
    root.mkdir(parents=True)
    safe_join(root, engine_rel).mkdir(parents=True, exist_ok=True)
    _copy_engine(client, res.run_id, engine_files, safe_join(root, engine_rel), dl / "engine")

    engine = engine_backend(engine_file)  # its declaration: how to load it, its Triton platform
    n = batch * max(SAMPLE_BATCHES, math.ceil(MIN_SAMPLES / batch))
    reference, describe, out_axes = _samples_and_reference(home, manifest, n, root, engine_rel, engine_file, batch, fmt,
                                                           work, timeout, notes, res.run_id)
    tol = tolerance(manifest.get("metrics") or {}, reference)
    if fmt == "triton":
        cfg_text, io = triton_config(tname, engine.triton, root / engine_rel / engine_file, manifest, batch, describe,
                                     notes, res.run_id, engine, out_axes=out_axes)
        safe_join(root, "config.pbtxt").write_text(cfg_text)
        if engine.triton is None:
            safe_join(root, f"{engine_rel}/model.py").write_text(python_backend_model(engine_file, out_axes))
    else:
        io = None
    out_names = _onnx_io(root / engine_rel / engine_file)[1] if engine_file.endswith(".onnx") and out_axes else []
    safe_join(root, "README.md").write_text(readme(manifest, engine_file, fmt, tname, batch, reference, tol, res, io, notes,
                                                   out_axes, [o["name"] for o in out_names]))

    listed = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    export_info = {"format": fmt, "engine_dir": engine_rel, "engine_file": engine_file, "batch_size": batch,
                   "sample_count": n, "reference": reference, "tolerance": tol,
                   "triton_name": tname if fmt == "triton" else None, "notes": notes}
    _write_bundle_manifest(root, manifest, listed, export_info, res, uri, _rebuild_check(home, storage, manifest))
    return ExportResult(staged, root, res.run_id, fmt, engine_file, reference, listed, tname, notes)


def _trial_manifest(client, run_id: str, dl: Path) -> tuple[dict, dict[str, dict]]:
    """The trial's manifest and its engine files (safe relative paths -> their entries); `ConfigError` for a run
    that is not a measured planner trial or left no engine."""
    try:
        mpath = _download(client, run_id, "manifest.json", dl)
    except Exception:
        run = client.get_run(run_id)
        raise ConfigError(f"run {run_id} ({run.info.run_name}, {run.info.status}, planner.status="
                          f"{run.data.tags.get('planner.status', '?')}) has no manifest.json: it is not a measured planner trial") from None
    manifest = json.loads(mpath.read_text())
    files = manifest.get("files") or {}
    if not files:
        note = (manifest.get("backend") or {}).get("artifact_note", "")
        raise ConfigError(f"run {run_id}: the trial left no engine file to export{': ' + note if note else ''}")
    engine_files = {safe_relpath(f): meta for f, meta in files.items()}
    for f in engine_files:
        if PurePosixPath(f).name in RESERVED or f in RESERVED:
            raise UnsafePath(f"refusing engine file {f!r}: the name is reserved for the bundle's own files")
    return manifest, engine_files


def _main_engine_file(run_id: str, engine_files: dict, backend: str) -> str:
    main_names = _main_engine_files(backend)
    main = sorted((f for f in engine_files if PurePosixPath(f).name in main_names and "/" not in f),
                  key=lambda f: main_names.index(PurePosixPath(f).name))
    if not main:
        raise ConfigError(f"run {run_id}: none of {sorted(engine_files)} is an engine planner can load "
                          f"({', '.join(main_names)})")
    return main[0]


def _bundle_name(name: str | None, res, model: dict, target: dict) -> str:
    from planner.select.registry import registered_model_name

    tname = name or (res.model or registered_model_name(model.get("name", "model"), target.get("name", "target")))
    try:
        safe_relpath(tname)
    except UnsafePath as e:
        raise ConfigError(f"--name {tname!r}: {e}") from None
    if "/" in tname:
        raise ConfigError(f"--name {tname!r}: must be a single folder name")
    return tname


def _copy_engine(client, run_id: str, engine_files: dict, dst_dir: Path, dl: Path) -> None:
    """Download the engine files into ``dst_dir``, each checked against the sha256 in the trial's manifest."""
    from planner.cache import sha256_file

    for f, meta in engine_files.items():
        src = _download(client, run_id, f"engine/{f}", dl)
        if meta.get("sha256") and sha256_file(src) != meta["sha256"]:
            raise PlannerError(f"run {run_id}: artifact engine/{f} does not match the sha256 in its manifest "
                               "(the artifact store was modified); refusing to export it")
        dst = safe_join(dst_dir, f)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)


def _samples_and_reference(home, manifest: dict, n: int, root: Path, engine_rel: str, engine_file: str, batch: int,
                           fmt: str, work: Path, timeout: float, notes: list[str], run_id: str) -> tuple[str, dict | None, list[int] | None]:
    """Write samples.npz (inputs, reference outputs, the outputs' batch axes) into the bundle: the fp32 reference
    when the study's is here, else the engine's own outputs.  Returns (which reference, the engine's
    self-description for Triton, each output's batch axis or None: all 0)."""
    import numpy as np

    from planner.select.verify import engine_job, run_engine_job

    model, target = manifest.get("model") or {}, manifest.get("target") or {}
    inputs, ref_out, why = _reference_samples(home, manifest, n)
    reference = "fp32"
    if inputs is None:
        reference = "engine"
        notes.append(f"fp32 reference unavailable ({why}): reference outputs are the engine's own")
        inputs = _sample_inputs(manifest, n, seed=int(model.get("seed", 0)))
    out_axes = _output_axes(home, manifest, root / engine_rel / engine_file)
    axes = {"out_axes": np.asarray(out_axes, dtype=np.int64)} if out_axes is not None else {}
    samples_path = safe_join(root, "samples.npz")
    np.savez(samples_path, **{f"in:{k}": v for k, v in inputs.items()}, **axes)
    describe = None
    need_describe = fmt == "triton" and not engine_file.endswith(".onnx")  # ONNX: the graph states its IO
    if reference == "engine" or need_describe:
        partial = {"target": target, "trial": manifest.get("trial"), "model": model,
                   "export": {"engine_dir": engine_rel, "engine_file": engine_file, "batch_size": batch}}
        outs = work / "engine_out.npy"
        r = run_engine_job(engine_job(root, partial, samples=str(samples_path), write_outputs=str(outs),
                                      describe=need_describe), timeout)
        if r.get("status") != "ok":
            if reference == "engine":
                raise PlannerError(f"run {run_id}: the engine could not be run to make reference outputs: {r.get('message')}")
            notes.append(f"engine not loadable here ({r.get('message')}); Triton config built from the manifest")
        else:
            describe = r.get("describe")
            if reference == "engine":
                ref_out = np.load(outs)
    np.savez(samples_path, **{f"in:{k}": v for k, v in inputs.items()}, ref=ref_out, **axes)
    return reference, describe, out_axes


def _write_bundle_manifest(root: Path, manifest: dict, listed: list[str], export_info: dict, res, uri: str,
                           rebuild_check: str) -> None:
    """The bundle's manifest.json: the trial's, with the bundle's files and checksums and how it was exported."""
    from planner.record.manifest import file_checksums
    from planner.record.mlflow import redact

    new = dict(manifest)
    new["files"] = file_checksums(root, listed)
    e = export_info
    new["export"] = {
        "format": e["format"],
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "source": {"run_id": res.run_id, "ref": res.uri, "registered_model": res.model, "version": res.version,
                   "alias": res.alias, "tracking_uri": redact(uri)},
        "engine_dir": e["engine_dir"],
        "engine_file": e["engine_file"],
        "engine_kind": PurePosixPath(e["engine_file"]).suffix.lstrip("."),
        "batch_size": e["batch_size"],
        "samples": "samples.npz",
        "sample_count": e["sample_count"],
        "reference": e["reference"],
        "reference_layout": "ref[i] = concatenation of every output of sample i, flattened, float32",
        "tolerance": e["tolerance"],
        "triton_name": e["triton_name"],
        "rebuild_check": rebuild_check,
        "notes": e["notes"],
    }
    (root / "manifest.json").write_text(json.dumps(new, indent=2, default=str))


def _rebuild_check(home, storage: str | None, manifest: dict) -> str:
    """'ok' when the trial's config is rebuilt identically from the study's params; else why not checked/failed."""
    tr = manifest.get("trial") or {}
    url = storage or home.optuna_url
    if storage is None and not (home.root / "optuna.db").is_file():
        return "skipped: no Optuna storage"
    try:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        st = optuna.load_study(study_name=tr.get("study"), storage=url)
        rebuild_config(st, int(tr.get("number")))
        return "ok"
    except KeyError:
        return "skipped: study not in the Optuna storage"
    except PlannerError as e:
        return f"failed: {e}"
    except Exception as e:
        return f"skipped: {type(e).__name__}: {str(e)[:200]}"


# --------------------------------------------------------------------------- Triton


def _onnx_io(path: Path) -> tuple[list[dict], list[dict]]:
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in m.graph.initializer}

    def conv(vi):
        tt = vi.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim]
        return {"name": vi.name, "dtype": ONNX_TYPES.get(tt.elem_type, "float32"), "dims": dims}

    return [conv(v) for v in m.graph.input if v.name not in inits], [conv(v) for v in m.graph.output]


def plan_max_batch(manifest: dict, batch: int, notes: list[str]) -> int:
    """Triton's ``max_batch_size`` for a TensorRT plan: the batch its optimization profile accepts up to
    (the build records the profile; every input shares the batch axis, so the smallest max)."""
    profile = (manifest.get("backend") or {}).get("profile") or {}
    maxes = [int(p["max"][0]) for p in profile.values() if isinstance(p, dict) and p.get("max")]
    if maxes:
        return min(maxes)
    notes.append(f"the manifest records no TensorRT optimization profile: max_batch_size is the trial's batch ({batch})")
    return batch


def _main_engine_files(backend: str | None) -> list[str]:
    """Engine file names to look for in a trial's files: its backend's main file first, then every backend's."""
    import planner.backends.registry as registry

    own = registry.get(backend).main_engine_names() if backend in registry.all_backends() else ()
    others = (n for cls in registry.classes().values() for n in cls.main_engine_names())
    return list(dict.fromkeys((*own, *others)))


def _axis_word(axis: int | None) -> str:
    return "no batch axis" if axis is None else f"batch axis {axis}"


def off_axis_tensors(model_inputs: list[dict], out_axes: list[int] | None, out_names: list[str]) -> list[str]:
    """The tensors that do not batch on axis 0, as ``name (batch axis N | no batch axis)``: inputs by the
    ``batch_axis`` the study recorded, outputs by its reference's ``out_axes``.  Non-empty: Triton's batching
    (the batch the first dim of every input and output) cannot serve the model."""
    out = [f"{i['name']} ({_axis_word(i.get('batch_axis', 0))})" for i in model_inputs if i.get("batch_axis", 0) != 0]
    out += [f"{out_names[k] if k < len(out_names) else f'output {k}'} ({_axis_word(a)})"
            for k, a in enumerate(out_axes or []) if a]
    return out


def full_dims(spec: dict) -> list[int]:
    """A model input's full shape as the manifest records it (shape without the batch axis, ``batch_axis``), with
    -1 at its batch axis; an input without one: its shape ([] for a scalar)."""
    shape, axis = [int(d) for d in spec["shape"]], spec.get("batch_axis", 0)
    return shape if axis is None else [*shape[:axis], -1, *shape[axis:]]


def _pbtxt_dims(t: dict) -> str:
    if not t["dims"]:  # Triton wants non-empty dims: [1], reshaped to the model's []
        return "dims: [ 1 ]\n    reshape: { shape: [ ] }"
    return f"dims: [ {', '.join(str(int(d)) for d in t['dims'])} ]"


def _pbtxt_tensors(kw: str, ts: list[dict]) -> str:
    """A config.pbtxt ``input [...]`` / ``output [...]`` block."""
    items = ",\n".join(
        f'  {{\n    name: "{t["name"]}"\n    data_type: {TRITON_TYPES[t["dtype"]]}\n    {_pbtxt_dims(t)}\n  }}' for t in ts
    )
    return f"{kw} [\n{items}\n]"


def _triton_io(head: str | None, engine_path: Path, manifest: dict, batch: int, describe: dict | None,
               notes: list[str], explicit: bool) -> tuple[str, list[dict], list[dict], int]:
    """(the config's backend line, its inputs, its outputs, max_batch_size) by the kind of engine: Triton's Python
    backend around an engine (``head`` None), an ONNX graph (its own IO), or an engine whose runtime states its
    tensors (`Backend.describe_engine`).  ``explicit``: some tensor does not batch on its first dim (full dims)."""
    target = manifest.get("target") or {}
    model_inputs = (manifest.get("model") or {}).get("inputs") or []
    io_desc = (describe or {}).get("io")
    declared_ins = [{"name": i["name"], "dtype": i.get("dtype", "float32"),
                     "dims": full_dims(i) if explicit else list(i["shape"])} for i in model_inputs]

    def described(mode: str) -> list[dict]:  # the engine's own tensors; full shapes when batching is explicit
        return [{"name": t["name"], "dtype": t["dtype"], "dims": t["shape"] if explicit else t["shape"][1:]}
                for t in io_desc if t["mode"] == mode]

    if head is None:  # python backend around torch.export / TVM
        ins = declared_ins
        width = (describe or {}).get("flat_output_width")
        outs = [{"name": "output0", "dtype": "float32", "dims": [*([-1] if explicit else []), int(width) if width else -1]}]
        dyn = (describe or {}).get("dynamic_batch")
        max_batch = 0 if explicit else int(target.get("max_batch_size") or batch) if dyn else batch
        head = 'backend: "python"'
    elif engine_path.suffix == ".onnx":
        ins, outs = _onnx_io(engine_path)
        b0 = [i["dims"][0] if i["dims"] else -1 for i in ins + outs]
        if explicit:  # full shapes: an input's as the study declared it (sizes the graph leaves open, -1 at its
            max_batch = 0  # batch axis), an output's as the graph gives it (its batch dim is -1 there)
            declared = {i["name"]: i["dims"] for i in declared_ins}
            for i in ins:
                if i["name"] in declared and len(declared[i["name"]]) == len(i["dims"]):
                    i["dims"] = declared[i["name"]]
        elif all(d == -1 for d in b0):
            max_batch = int(target.get("max_batch_size") or batch)
            ins = [{**i, "dims": i["dims"][1:]} for i in ins]
            outs = [{**o, "dims": o["dims"][1:]} for o in outs]
        else:  # a fixed batch axis: Triton wants max_batch_size 0 and the full shape
            max_batch = 0
            notes.append("the ONNX graph has a fixed batch axis: max_batch_size 0 and dims include the batch axis")
    else:  # an engine whose runtime states its tensors (`Backend.describe_engine`)
        ins = declared_ins
        outs = [{"name": "output0", "dtype": "float32", "dims": [-1]}]
        if not io_desc:
            notes.append("the engine could not be loaded here: output name 'output0' and dims [-1] are placeholders; "
                         "check them against the engine's tensor names")
        if explicit:
            if io_desc:
                ins, outs = described("input"), described("output")
            max_batch = 0
        elif engine_path.suffix == ".plan":  # TensorRT: its optimization profile bounds the batch
            if io_desc:
                ins, outs = described("input"), described("output")
            max_batch = plan_max_batch(manifest, batch, notes)
        else:
            ins, outs, max_batch = engine_io(io_desc, ins, outs, target, batch, notes)
    return head, ins, outs, max_batch


def triton_config(name: str, head: str | None, engine_path: Path, manifest: dict, batch: int, describe: dict | None,
                  notes: list[str], run_id: str = "", backend=None, out_axes: list[int] | None = None) -> tuple[str, dict]:
    """``config.pbtxt`` text and the IO it declares.  ``head``: the backend's declared Triton line
    (`Backend.triton`); None: Triton's Python backend around the engine.  ``backend``: its class, which adds the
    measured engine settings as Triton parameters (`Backend.triton_parameters`).  ``out_axes``: each output's
    batch axis as the study's reference records it (None: all 0).

    A model with an input batched on an axis other than 0 or not at all (its manifest ``batch_axis``), or an
    output batched elsewhere (``out_axes``), is beyond Triton's batching, which takes the batch as the first dim of
    every tensor: max_batch_size 0, full dims (-1 at each batch axis) and no dynamic_batching.  A tensor of no
    dims (a scalar, or a batch-only tensor once the batch dim is Triton's) is ``dims: [ 1 ]`` with
    ``reshape: { shape: [ ] }``, Triton's form for it."""
    target = manifest.get("target") or {}
    model_inputs = (manifest.get("model") or {}).get("inputs") or []
    gpu = (target.get("device") or {}).get("kind") == "cuda"
    explicit = bool(off_axis_tensors(model_inputs, out_axes, []))
    head, ins, outs, max_batch = _triton_io(head, engine_path, manifest, batch, describe, notes, explicit)
    if explicit:
        off = off_axis_tensors(model_inputs, out_axes, [o["name"] for o in outs] if len(outs) == len(out_axes or []) else [])
        notes.append("max_batch_size 0, full dims (-1 at each batch axis) and no dynamic_batching: Triton batches only "
                     f"tensors whose first dim is the batch, and {', '.join(off)} do not; each request is one batch as "
                     "the model takes it")
    instances, batching, served_max = serving_config(manifest, notes)
    if served_max and max_batch:  # the server formed batches up to this many samples: what was measured
        max_batch = served_max
    if batching and not max_batch:
        batching = ""
        notes.append("the measured dynamic batching is not written: Triton allows dynamic_batching only with max_batch_size > 0")
    scalars = [t["name"] for t in ins + outs if not t["dims"]]
    if scalars:
        notes.append(f"{', '.join(scalars)}: no dims of its own, declared as Triton does it, dims [ 1 ] reshaped to [ ] "
                     "(a client sends and receives it with shape [1])")
    for io in ins + outs:
        if io["dtype"] not in TRITON_TYPES:
            raise PlannerError(f"tensor {io['name']!r}: dtype {io['dtype']} has no Triton type")

    text = "\n".join([
        f"# written by planner export from MLflow run {run_id}".rstrip(),
        f'name: "{name}"',
        head,
        f"max_batch_size: {max_batch}",
        _pbtxt_tensors("input", ins),
        _pbtxt_tensors("output", outs),
        f"instance_group [ {{ count: {instances}, kind: {'KIND_GPU' if gpu else 'KIND_CPU'} }} ]",
        "version_policy: { latest: { num_versions: 1 } }",
    ]) + "\n" + batching
    if backend is not None:
        text += backend.triton_parameters(engine_path.parent, gpu, notes)
    return text, {"inputs": ins, "outputs": outs, "max_batch_size": max_batch, "explicit_batch": explicit}


def served_lines(traffic: dict | None, serving: dict | None, m: dict) -> list[str]:
    """The README's account of the served measurement: the traffic, the serving config and the served figures."""
    if not traffic or not serving:
        return []
    load = f"{traffic.get('rate')} req/s" if traffic.get("arrival") == "poisson" else f"{traffic.get('concurrency')} clients"
    nan = float("nan")
    batching = (f"dynamic batching up to {serving['max_batch']} requests, {serving['max_queue_delay_us']} µs queue delay"
                if int(serving.get("max_batch", 1)) > 1 else "no batching")
    return [
        "## Served latency",
        "",
        f"Measured under the target's traffic: {traffic.get('arrival')} arrivals at {load}, "
        f"{traffic.get('request_batch', 1)} sample(s) per request, {traffic.get('duration_s')} s after "
        f"{traffic.get('warmup_s')} s of warm-up (latency = completion − scheduled arrival, queueing included), "
        f"served by {serving['instances']} instance(s), {batching}.",
        *([f"Each request was sent at its own sample's length, padded to a multiple of "
           f"{traffic.get('length_multiple')} (mean {m['served_mean_length']:.3g}); a batch held requests of one "
           "length, as Triton's dynamic batcher forms them. The engine's length axes are dynamic (-1).", ""]
          if traffic.get("lengths") == "data" and m.get("served_mean_length") else
          [f"The traffic sends requests at their own lengths, but this engine takes the model's full input length "
           "only: every request was padded to it, as it must be when served.", ""]
          if traffic.get("lengths") == "data" else [""]),
        "| served | value |", "|---|---|",
        f"| p50 / p90 / p99 | {m.get('served_p50_ms', nan):.4g} / {m.get('served_p90_ms', nan):.4g} / "
        f"{m.get('served_p99_ms', nan):.4g} ms |",
        f"| rate asked / achieved | {m.get('served_rate', nan):.4g} / {m.get('served_achieved_rate', nan):.4g} req/s |",
        f"| dropped | {int(m.get('served_dropped', 0))} |",
        f"| sustained rate within the SLO ({traffic.get('percentile')} ≤ {traffic.get('slo_ms')} ms) | "
        f"{m.get('sustained_rate', nan):.4g} req/s |",
        "",
    ]


def serving_config(manifest: dict, notes: list[str]) -> tuple[int, str, int | None]:
    """The chosen trial's serving, as measured under the target's traffic (planner.measure.serving): the
    ``instance_group`` count, a ``dynamic_batching`` block exactly when the trial batched requests (its
    preferred batch the largest it formed, in samples, and its queue delay), and that batch as max_batch_size
    (None: no batching).  A trial without serving: one instance, no batching, as before."""
    sv = ((manifest.get("trial") or {}).get("config") or {}).get("serving")
    if not sv:
        return 1, "", None
    traffic = (manifest.get("target") or {}).get("traffic") or {}
    req = int(traffic.get("request_batch") or 1)
    notes.append(f"instances and dynamic batching as measured under the target's traffic "
                 f"({traffic.get('arrival', '?')} {traffic.get('rate') or traffic.get('concurrency')}): "
                 f"{int(sv['instances'])} instance(s)" + (f", batches of up to {int(sv['max_batch'])} requests"
                                                          if int(sv["max_batch"]) > 1 else ", no batching"))
    if int(sv["max_batch"]) <= 1:
        return int(sv["instances"]), "", None
    samples = int(sv["max_batch"]) * req
    block = (f"dynamic_batching {{\n  preferred_batch_size: [ {samples} ]\n"
             f"  max_queue_delay_microseconds: {int(sv['max_queue_delay_us'])}\n}}\n")
    return int(sv["instances"]), block, samples


def engine_io(io: list[dict] | None, ins: list[dict], outs: list[dict], target: dict, batch: int, notes: list[str]):
    """Triton IO of an engine that states its tensors (`Backend.describe_engine`): a dynamic batch axis gives
    max_batch_size (the target's) and dims without it; a fixed one max_batch_size 0 and the full shape.
    Without a description: the placeholders ``ins``/``outs`` (a note says so) with the trial's batch fixed."""
    if not io:
        return [{**i, "dims": [batch, *i["dims"]]} for i in ins], outs, 0
    if all(t["shape"] and t["shape"][0] == -1 for t in io):
        ins = [{"name": t["name"], "dtype": t["dtype"], "dims": t["shape"][1:]} for t in io if t["mode"] == "input"]
        outs = [{"name": t["name"], "dtype": t["dtype"], "dims": t["shape"][1:]} for t in io if t["mode"] == "output"]
        return ins, outs, int(target.get("max_batch_size") or batch)
    notes.append(f"the engine has a fixed batch axis ({batch}): max_batch_size 0 and dims include the batch axis")
    ins = [{"name": t["name"], "dtype": t["dtype"], "dims": t["shape"]} for t in io if t["mode"] == "input"]
    outs = [{"name": t["name"], "dtype": t["dtype"], "dims": t["shape"]} for t in io if t["mode"] == "output"]
    return ins, outs, 0


def python_backend_model(engine_file: str, out_axes: list[int] | None = None) -> str:
    """Triton Python-backend ``model.py`` that loads the engine next to it and returns one flat output
    (``out_axes``: each engine output's batch axis, moved first before flattening, as the study's reference did)."""
    return f'''"""Triton Python backend for a planner engine ({engine_file}); written by `planner export --format triton`.

Output "output0" is every model output of a sample, flattened and concatenated (float32), exactly
what samples.npz's "ref" holds (each output's batch axis, OUT_AXES, moved first).
"""

import itertools
import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils

ENGINE = {engine_file!r}
OUT_AXES = {list(out_axes) if out_axes else None!r}  # each output's batch axis (None: all 0)


def _load(here, device):
    path = os.path.join(here, ENGINE)
    if ENGINE.endswith((".pt2", ".ts")):
        import torch

        if ENGINE.endswith(".ts"):  # TorchScript: the float input dtype is in its planner.json
            extra = {{"planner.json": ""}}
            module = torch.jit.load(path, map_location="cpu", _extra_files=extra)
            dt = json.loads(extra["planner.json"] or "{{}}").get("input_dtype")
            dtypes = itertools.repeat(getattr(torch, dt) if dt else None)  # every input
        else:
            ep = torch.export.load(path)
            names = set(ep.graph_signature.user_inputs)
            dtypes = [getattr(n.meta.get("val"), "dtype", None) for n in ep.graph.nodes
                      if n.op == "placeholder" and n.name in names]
            module = ep.module()
        if device != "cpu":
            module = module.to(device)

        def run(arrays):
            args = []
            for a, dt in zip(arrays, dtypes):
                t = torch.from_numpy(np.ascontiguousarray(a)).to(device)
                if dt is not None and t.is_floating_point() and dt.is_floating_point:
                    t = t.to(dt)
                args.append(t)
            with torch.inference_mode():
                out = module(*args)
            outs = out if isinstance(out, (tuple, list)) else [out]
            return [o.detach().float().cpu().numpy() for o in outs]

        return run
    from planner.backends.tvm import load_artifact  # needs `pip install planner[tvm]` in Triton's Python

    rt = load_artifact(here)
    return lambda arrays: rt.infer(dict(enumerate(arrays)))


class TritonPythonModel:
    def initialize(self, args):
        cfg = json.loads(args["model_config"])
        self.inputs = [i["name"] for i in cfg["input"]]
        self.output = cfg["output"][0]["name"]
        gpu = args.get("model_instance_kind") == "GPU"
        device = "cuda:%s" % args.get("model_instance_device_id", 0) if gpu else "cpu"
        self.run = _load(os.path.dirname(os.path.abspath(__file__)), device)

    def execute(self, requests):
        responses = []
        for request in requests:
            arrays = [pb_utils.get_input_tensor_by_name(request, n).as_numpy() for n in self.inputs]
            outs = self.run(arrays)
            if OUT_AXES:
                outs = [np.moveaxis(np.asarray(o), a, 0) for o, a in zip(outs, OUT_AXES)]
            b = outs[0].shape[0]
            flat = np.concatenate([np.asarray(o, dtype=np.float32).reshape(b, -1) for o in outs], axis=1)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(self.output, flat)]))
        return responses

    def finalize(self):
        self.run = None
'''


# --------------------------------------------------------------------------- README


def input_signature(inputs: list[dict]) -> str:
    """``name: dtype[dims]`` per input, ``batch`` at its batch axis (an input without one: its shape, so marked)."""
    def one(i: dict) -> str:
        dims = ["batch" if d == -1 else str(d) for d in full_dims(i)] if i.get("batch_axis", 0) is not None else \
            [str(d) for d in i["shape"]]
        return f"{i['name']}: {i.get('dtype', 'float32')}[{', '.join(dims)}]" + \
            (" (no batch axis: one value per call, for the whole batch)" if i.get("batch_axis", 0) is None else "")
    return ", ".join(one(i) for i in inputs)


def readme(manifest: dict, engine_file: str, fmt: str, name: str, batch: int, reference: str, tol: dict, res, io,
           notes: list[str], out_axes: list[int] | None = None, out_names: list[str] | None = None) -> str:
    from planner.config import TrialConfig

    model = manifest.get("model") or {}
    target = manifest.get("target") or {}
    m = manifest.get("metrics") or {}
    cfg = TrialConfig.from_dict((manifest.get("trial") or {}).get("config") or {})
    tr = manifest.get("trial") or {}
    libs = ((manifest.get("environment") or {}).get("libraries") or {})
    inputs = model.get("inputs") or []
    sig = input_signature(inputs)
    axes_line = f"Inputs: {sig or 'see manifest.json'} (axis 0 is the batch axis)."
    if off_axis_tensors(inputs, out_axes, out_names or []):
        names = out_names or []
        off_out = [f"{names[k] if k < len(names) else f'output {k}'} on axis {a}" for k, a in enumerate(out_axes or []) if a]
        axes_line = (f"Inputs: {sig} (`batch` marks each input's batch axis)."
                     + (f" Outputs batched on another axis than 0: {', '.join(off_out)}." if off_out else "")
                     + " `samples.npz` keeps every array sample-major (the batch axis first; `ref` too): move an "
                       "input's to its own axis to call the engine, as below.")
    kind = Path(engine_file).suffix
    load = _load_snippet(kind, "." if fmt == "bundle" else "1", engine_file, inputs, cfg, libs, batch, target)
    if any(out_axes or []):
        load = load.replace("# numpy arrays, batch axis first", "# numpy arrays, each output's batch axis as above")
    lines = [
        f"# {name}: {model.get('name')} on {target.get('name')} ({cfg.backend}, batch {batch})",
        "",
        f"Exported by `planner export` from MLflow run `{res.run_id}`"
        + (f" (registered model `{res.model}` version {res.version}{', alias @' + res.alias if res.alias else ''})" if res.model else "")
        + f"; trial {tr.get('number')} of study `{tr.get('study')}`.",
        "",
        "| measured | value |", "|---|---|",
        f"| latency p50 / p99 per batch | {m.get('latency_p50_ms', float('nan')):.4g} ms / {m.get('latency_p99_ms', float('nan')):.4g} ms |",
        f"| throughput | {m.get('throughput', float('nan')):.5g} samples/s |",
        f"| quality loss vs fp32 | {m.get('quality_loss', float('nan')):.3g} |",
        f"| precision / quantization | {cfg.quant.scheme} |",
        f"| pruning | {cfg.prune.method} {cfg.prune.ratio} |",
        f"| batch size | {batch} |",
        "",
        *served_lines(target.get("traffic"), asdict(cfg.serving) if cfg.serving else None, m),
        axes_line,
        "",
        "## Load and call",
        "",
        "Sample inputs are in `samples.npz` (`in:<input name>` arrays, `ref`: reference outputs):",
        "",
        "```python",
        "import numpy as np",
        'z = np.load("samples.npz")',
        *[f'batch_{i["name"]} = {_feed_expr(i, batch)}' for i in inputs],
        "```",
        "",
        load,
        "",
    ]
    if fmt == "triton":
        lines += [
            "## Triton",
            "",
            "This folder is one model of a Triton model repository: `config.pbtxt` and version `1/`. Serve with",
            f"`tritonserver --model-repository <parent of {name}>`. Max batch size {io['max_batch_size'] if io else '?'}"
            + (" (not every tensor batches on its first dim, which Triton's batching needs: each request is one batch "
               "in the model's own layout, the full dims with -1 at each batch axis)" if io and io.get("explicit_batch") else "")
            + "; "
            f"inputs {', '.join(i['name'] for i in (io or {}).get('inputs', []))}; outputs {', '.join(o['name'] for o in (io or {}).get('outputs', []))}.",
            "",
        ]
        if kind in (".pt2", ".ts", ".so"):
            lines += ["The engine runs in Triton's Python backend (`1/model.py`); its output `output0` is all outputs of a sample "
                      "flattened and concatenated.", ""]
    lines += [
        "## Check it",
        "",
        "```",
        "planner verify .",
        "```",
        f"checks every sha256 in `manifest.json`, runs `samples.npz` ({SAMPLE_BATCHES} batches of {batch}) through the engine in a fresh "
        f"process and compares with the {'fp32 model' if reference == 'fp32' else 'engine'}'s reference outputs "
        f"(`|out - ref| <= {tol['atol']:.3g} + {tol['rtol']:.1g}·|ref|`, {tol['derived_from']}), then re-measures latency.",
        "",
        "Environment it was measured in: " + ", ".join(f"{k} {v}" for k, v in sorted(libs.items())) + ".",
    ]
    if notes:
        lines += ["", "Notes:", *[f"- {n}" for n in notes]]
    return "\n".join(lines) + "\n"


def _feed_expr(spec: dict, batch: int) -> str:
    """How one input's first batch is read from ``samples.npz`` (sample-major) into the model's layout."""
    axis = spec.get("batch_axis", 0)
    got = f'z["in:{spec["name"]}"]'
    if axis is None:
        return f"{got}[0]   # no batch axis: one value for the whole batch"
    if axis == 0:
        return f"{got}[:{batch}]"
    return f"np.moveaxis({got}[:{batch}], 0, {axis})   # batch axis {axis}"


def _load_snippet(kind: str, d: str, engine_file: str, inputs: list[dict], cfg, libs: dict, batch: int, target: dict) -> str:
    """How a serving team loads and calls the engine with its own runtime, by the engine file's suffix."""
    feed = "{" + ", ".join(f'"{i["name"]}": batch_{i["name"]}' for i in inputs) + "}"
    dtype = {"fp16": "float16", "bf16": "bfloat16"}.get(cfg.precision, "the dtype the program expects (float32 here)")
    return {
        ".onnx": f"""```python
import json, numpy as np, onnxruntime as ort

opts = json.load(open("{d}/session.json"))          # the session options that were measured
so = ort.SessionOptions()
so.graph_optimization_level = {{"disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC, "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}}[opts["graph_optimization_level"]]
so.execution_mode = ort.ExecutionMode.ORT_PARALLEL if opts["execution_mode"] == "parallel" else ort.ExecutionMode.ORT_SEQUENTIAL
so.intra_op_num_threads = opts["intra_op_threads"]
so.inter_op_num_threads = opts["inter_op_threads"]
providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if opts["execution_provider"] == "cuda" else ["CPUExecutionProvider"]
sess = ort.InferenceSession("{d}/{engine_file}", sess_options=so, providers=providers)
outputs = sess.run(None, {feed})         # numpy arrays, batch axis first
```
or, with planner installed: `from planner.backends.onnxruntime import load_artifact; rt = load_artifact("{d}"); rt.infer({feed})`.""",
        ".pt2": f"""```python
import torch

ep = torch.export.load("{d}/{engine_file}")          # torch=={libs.get('torch', '2.x')}
model = ep.module()
with torch.inference_mode():
    out = model({", ".join(f"torch.from_numpy(batch_{i['name']})" for i in inputs) or "x"})
```
Cast float inputs to {dtype}.
The program was exported with a dynamic batch axis when possible; `torch.compile(model)` may be applied on top
(the measured backend was `{cfg.backend}`).""",
        ".ts": f"""```python
import json, torch                                      # torch=={libs.get('torch', '2.x')}

extra = {{"planner.json": ""}}
model = torch.jit.load("{d}/{engine_file}", _extra_files=extra)   # TorchScript
meta = json.loads(extra["planner.json"])                 # input_dtype, dynamic_batch
with torch.inference_mode():
    out = model({", ".join(f"torch.from_numpy(batch_{i['name']})" for i in inputs) or "x"})
```
Cast float inputs to {dtype}. TorchScript, not a torch.export program: torch.export could not hold this model
({cfg.quant.scheme if cfg.quant.active else 'fp32'}), TorchScript keeps the kernels that were measured (the measured backend was `{cfg.backend}`).""",
        ".plan": f"""```python
import tensorrt as trt                                  # tensorrt=={libs.get('tensorrt', '10.x')}, same GPU model
runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
engine = runtime.deserialize_cuda_engine(open("{d}/{engine_file}", "rb").read())
context = engine.create_execution_context()
# set input shapes (batch 1..{batch}), bind device buffers with context.set_tensor_address, then
# context.execute_async_v3(stream)
```
or, with planner installed: `from planner.backends.tensorrt import load_artifact; rt = load_artifact("{d}", batch={batch}); rt.infer({feed})`.
A TensorRT plan only runs on the GPU model and TensorRT version it was built with ({(target.get('device') or {}).get('gpu') or 'see manifest.json'}).""",
        ".xml": f"""```python
import json, openvino as ov                              # openvino=={libs.get('openvino', '2026.x')}

props = json.load(open("{d}/openvino.json"))["properties"]   # the compile properties that were measured
compiled = ov.Core().compile_model("{d}/{engine_file}", "CPU", props)
outputs = compiled([{", ".join(f"batch_{i['name']}" for i in inputs)}])   # results by output port
```
or, with planner installed: `from planner.backends.openvino import load_artifact; rt = load_artifact("{d}", batch={batch}); rt.infer({feed})`.""",
        ".so": f"""```python
from planner.backends.tvm import load_artifact          # pip install 'planner[tvm]'
rt = load_artifact("{d}")
outputs = rt.infer({feed})
```""",
    }.get(kind, "See manifest.json.")


