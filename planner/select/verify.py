"""Verify an exported deployment: checksums, then the engine in its own runtime in a fresh process.

``planner verify DIR``
  1. every file listed in ``manifest.json`` exists and has its recorded sha256 (a tampered or
     missing file fails here, by name, and the engine is never loaded);
  2. ``python -m planner.select.verify JOB.json`` loads the engine with its runtime alone
     (ONNX Runtime / torch.export.load / TensorRT runtime / TVM / OpenVINO), runs ``samples.npz`` at the
     recorded batch size and compares with the reference outputs within the recorded tolerance;
  3. re-measures latency briefly and prints the ratio to the recorded p50.

The same runner, given ``write_outputs``, produces reference outputs from the engine itself
(export falls back to that when the study's fp32 reference is gone) and describes the engine's
inputs/outputs for Triton configs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from planner.measure.jobs import VerifyJob


# --------------------------------------------------------------------------- parent side


@dataclass
class VerifyReport:
    root: Path
    ok: bool = True
    problems: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    result: dict[str, Any] = field(default_factory=dict)

    def fail(self, msg: str) -> None:
        self.ok = False
        self.problems.append(msg)


def find_manifest(directory: Path) -> Path | None:
    """``DIR/manifest.json`` (bundle) or the single ``DIR/<model>/manifest.json`` (Triton repository)."""
    d = Path(directory)
    if (d / "manifest.json").is_file():
        return d / "manifest.json"
    found = sorted(p for p in d.glob("*/manifest.json") if p.is_file())
    return found[0] if len(found) == 1 else None


def check_files(root: Path, manifest: dict, report: VerifyReport) -> None:
    from planner.cache import sha256_file
    from planner.paths import UnsafePath, safe_join

    files = manifest.get("files") or {}
    if not files:
        report.fail("manifest.json lists no files")
    for name, entry in sorted(files.items()):
        try:
            path = safe_join(root, name)
        except UnsafePath as e:
            report.fail(f"{name}: {e}")
            continue
        if not path.is_file():
            report.fail(f"{name}: missing")
            continue
        got = sha256_file(path)
        if got != entry.get("sha256"):
            report.fail(f"{name}: sha256 mismatch (tampered or corrupted): expected {str(entry.get('sha256'))[:12]}..., got {got[:12]}...")
        elif entry.get("bytes") is not None and path.stat().st_size != entry["bytes"]:
            report.fail(f"{name}: size {path.stat().st_size} bytes, manifest says {entry['bytes']}")
    listed = {Path(n).as_posix() for n in files} | {"manifest.json"}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.relative_to(root).as_posix() not in listed and "__pycache__" not in p.parts:
            report.warnings.append(f"{p.relative_to(root).as_posix()}: not in the manifest (ignored)")
    if report.ok:
        report.lines.append(f"checksums: {len(files)} files match manifest.json")


def runner_env(threads: int | None) -> dict[str, str]:
    env = dict(os.environ)
    if threads:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TVM_NUM_THREADS"):
            env[var] = str(threads)
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_engine_job(job: "VerifyJob", timeout: float = 600.0) -> dict[str, Any]:
    """Run one engine job in a fresh Python process; never raises for engine faults."""
    from dataclasses import replace

    with tempfile.TemporaryDirectory(prefix="planner-verify-") as tmp:
        job_path, res_path = Path(tmp) / "job.json", Path(tmp) / "result.json"
        job = replace(job, result=str(res_path))
        job_path.write_text(json.dumps(job.to_dict(), default=str))
        try:
            proc = subprocess.run([sys.executable, "-m", "planner.select.verify", str(job_path)], capture_output=True, text=True,
                                  timeout=timeout, env=runner_env(job.threads))
        except subprocess.TimeoutExpired:
            return {"status": "error", "message": f"the engine runner exceeded {timeout:.0f} s"}
        if res_path.is_file():
            try:
                return json.loads(res_path.read_text())
            except json.JSONDecodeError:
                pass
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-3:]
        return {"status": "error", "message": f"the engine runner exited with code {proc.returncode}: {' | '.join(tail)}"}


def engine_job(root: Path, manifest: dict, **extra) -> "VerifyJob":
    """The engine job of an exported folder, from its manifest; ``extra``: what to do (samples, compare, ...)."""
    from planner.measure.jobs import VerifyJob

    exp = manifest.get("export") or {}
    tgt = manifest.get("target") or {}
    cfg = (manifest.get("trial") or {}).get("config") or {}
    return VerifyJob(
        engine_dir=str(root / exp.get("engine_dir", ".")),
        engine_file=exp.get("engine_file"),
        batch_size=int(exp.get("batch_size") or cfg.get("batch_size") or 1),
        device="cuda" if (tgt.get("device") or {}).get("kind") == "cuda" else "cpu",
        threads=int(tgt.get("threads") or os.cpu_count() or 1),
        inputs=(manifest.get("model") or {}).get("inputs") or [],
        quant_scheme=(cfg.get("quant") or {}).get("scheme", "none"),
        **extra,
    )


def verify(directory: Path, run: bool = True, timeout: float = 600.0, max_slowdown: float | None = None) -> VerifyReport:
    """Check an exported bundle or Triton repository; `report.ok` is the verdict."""
    from planner.paths import UnsafePath, safe_join

    directory = Path(directory)
    report = VerifyReport(directory)
    if not directory.is_dir():
        report.fail(f"{directory}: not a directory")
        return report
    mpath = find_manifest(directory)
    if mpath is None:
        report.fail(f"{directory}: no manifest.json (nor exactly one <model>/manifest.json): not a planner export")
        return report
    root = mpath.parent
    report.root = root
    try:
        manifest = json.loads(mpath.read_text())
    except (OSError, json.JSONDecodeError) as e:
        report.fail(f"{mpath.relative_to(directory)}: unreadable ({e})")
        return report
    exp = manifest.get("export")
    if not isinstance(exp, dict):
        report.fail("manifest.json has no 'export' section: not written by `planner export`")
        return report
    check_files(root, manifest, report)
    if not report.ok or not run:
        return report
    for key in ("engine_file", "samples"):
        if not exp.get(key):
            report.fail(f"manifest.json: export.{key} is missing")
    if not report.ok:
        return report
    try:
        samples = safe_join(root, exp["samples"])
        safe_join(root, exp.get("engine_dir", "."))
    except UnsafePath as e:
        report.fail(str(e))
        return report
    tol = exp.get("tolerance") or {}
    job = engine_job(root, manifest, samples=str(samples), compare={"atol": tol.get("atol"), "rtol": tol.get("rtol", 0.0)},
                     latency=True)
    res = run_engine_job(job, timeout)
    report.result = res
    if res.get("status") != "ok":
        report.fail(f"engine: {res.get('message')}")
        return report
    cmp = res.get("compare") or {}
    if cmp.get("ok"):
        report.lines.append(
            f"outputs: {cmp['samples']} samples (batch {job.batch_size}) match the "
            f"{exp.get('reference', 'fp32')} reference within atol {tol.get('atol'):.3g} + rtol {tol.get('rtol', 0.0):.1g}; "
            f"max abs error {cmp['max_abs_error']:.3g}")
    else:
        report.fail(f"outputs: {cmp.get('message', 'mismatch')}")
    lat = res.get("latency") or {}
    recorded = (manifest.get("metrics") or {}).get("latency_p50_ms")
    if lat.get("p50_ms") is not None:
        if recorded:
            ratio = lat["p50_ms"] / recorded
            report.lines.append(f"latency: p50 {lat['p50_ms']:.4g} ms here vs {recorded:.4g} ms recorded "
                                f"(ratio {ratio:.2f}, {lat['n']} samples)")
            report.result["latency_ratio"] = ratio
            if max_slowdown is not None and ratio > max_slowdown:
                report.fail(f"latency: {ratio:.2f}x the recorded p50, more than --max-slowdown {max_slowdown:g}")
        else:
            report.lines.append(f"latency: p50 {lat['p50_ms']:.4g} ms here (no recorded p50)")
    return report


def sample_inputs(manifest: dict, n: int, seed: int = 0) -> dict[str, Any]:
    """Seeded random inputs for ``n`` samples as the manifest's model inputs describe them (name, shape, dtype,
    integer range), for an engine without recorded inputs."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = {}
    for spec in (manifest.get("model") or {}).get("inputs") or []:
        shape = (n, *spec["shape"])
        dt = spec.get("dtype", "float32")
        if dt.startswith("float"):
            out[spec["name"]] = rng.standard_normal(shape).astype(dt)
        elif dt == "bool":
            out[spec["name"]] = rng.integers(0, 2, shape).astype(bool)
        else:
            out[spec["name"]] = rng.integers(int(spec.get("low", 0)), int(spec.get("high", 2)), shape).astype(dt)
    return out


# --------------------------------------------------------------------------- runner side (fresh process)


def engine_backend(engine_file: str):
    """The backend class whose main engine file is ``engine_file`` (its declaration says how to load it)."""
    import planner.backends.registry as registry

    cls = registry.by_engine_file(Path(engine_file).name)
    if cls is None:
        known = sorted({n for c in registry.classes().values() for n in c.main_engine_names()})
        raise ValueError(f"unknown engine file {engine_file!r} (known: {', '.join(known)})")
    return cls


def load_engine(engine_dir: Path, engine_file: str, batch: int, device: str):
    """The engine as a planner Runtime (``infer``, ``bind``, ``synchronize``), loaded by its own runtime."""
    return engine_backend(engine_file).load_artifact(Path(engine_dir), batch=batch, device=device)


def describe_engine(rt, engine_file: str, flat_width: int | None) -> dict[str, Any]:
    info: dict[str, Any] = {"dynamic_batch": getattr(rt, "dynamic_batch", None), "flat_output_width": flat_width}
    try:
        info.update(engine_backend(engine_file).describe_engine(rt))
    except Exception as e:  # description is best effort
        info["io_error"] = str(e)
    return info


def _protocol():
    from planner.target import Protocol

    return Protocol(warmup_iters=5, warmup_seconds=0.05, min_repeats=30, min_seconds=0.3, max_seconds=3.0,
                    cv_threshold=10.0, max_remeasure=0)


def run_job(job: "VerifyJob") -> dict[str, Any]:
    import numpy as np

    from planner.measure.timer import measure
    from planner.measure.worker import batches, flat_outputs

    if "torch" in engine_backend(job.engine_file).modules:  # only torch engines pay for importing torch
        import torch

        torch.set_num_threads(int(job.threads or 1))
    batch = int(job.batch_size)
    with np.load(job.samples, allow_pickle=False) as z:
        inputs = {k[3:]: z[k] for k in z.files if k.startswith("in:")}
        ref = z["ref"] if "ref" in z.files else None
        out_axes = [int(a) for a in z["out_axes"]] if "out_axes" in z.files else None
    axes = {i["name"]: i.get("batch_axis", 0) for i in job.inputs}  # samples are sample-major: batches() lays them out
    order = [i["name"] for i in job.inputs]
    if order and set(order) == set(inputs):
        inputs = {k: inputs[k] for k in order}
    n = len(next(iter(inputs.values())))
    t0 = time.perf_counter()
    rt = load_engine(Path(job.engine_dir), job.engine_file, batch, job.device)
    load_s = time.perf_counter() - t0
    outs = []
    for feed, valid in batches(inputs, n, batch, axes):
        outs.append(flat_outputs(rt.infer(feed), out_axes)[:valid])
    out = np.concatenate(outs).astype(np.float32)
    res: dict[str, Any] = {"status": "ok", "load_seconds": load_s, "samples": n, "output_shape": list(out.shape)}
    if job.write_outputs:
        np.save(job.write_outputs, out)
    if job.describe:
        res["describe"] = describe_engine(rt, job.engine_file, int(out.shape[1]) if out.ndim == 2 else None)
    cmp_cfg = job.compare
    if cmp_cfg is not None:
        if ref is None:
            res["compare"] = {"ok": False, "message": "samples.npz has no 'ref' array"}
        elif ref.shape != out.shape:
            res["compare"] = {"ok": False, "message": f"engine output shape {list(out.shape)} differs from the reference {list(ref.shape)}"}
        elif cmp_cfg.get("atol") is None:
            res["compare"] = {"ok": False, "message": "manifest records no tolerance"}
        else:
            r = ref.astype(np.float64)
            diff = np.abs(out.astype(np.float64) - r)
            bound = float(cmp_cfg["atol"]) + float(cmp_cfg.get("rtol") or 0.0) * np.abs(r)
            bad = ~(diff <= bound)  # NaN counts as bad
            worst = np.unravel_index(int(np.nanargmax(diff)) if np.isfinite(diff).any() else 0, diff.shape)
            c = {"ok": not bool(bad.any()), "samples": n, "max_abs_error": float(np.nanmax(diff)) if diff.size else 0.0,
                 "mismatches": int(bad.sum()), "elements": int(diff.size)}
            if bad.any():
                c["message"] = (f"{int(bad.sum())} of {diff.size} output values differ from the reference beyond "
                                f"atol {float(cmp_cfg['atol']):.3g} + rtol {float(cmp_cfg.get('rtol') or 0):.1g}; worst at "
                                f"sample {int(worst[0])}: |{float(out[worst]):.6g} - {float(ref[worst]):.6g}| = {float(diff[worst]):.3g}")
            res["compare"] = c
    if job.latency:
        feed, _ = next(batches(inputs, n, batch, axes))
        stats = measure(rt.bind(feed), _protocol(), sync=rt.synchronize)
        res["latency"] = stats.to_dict()
    return res


def main(argv: list[str]) -> int:
    from planner.measure.jobs import job_from_dict

    job = job_from_dict(json.loads(Path(argv[0]).read_text()))
    try:
        res = run_job(job)
    except Exception as e:
        traceback.print_exc()
        msg = str(e).strip().splitlines()[0][:400] if str(e).strip() else ""
        res = {"status": "error", "message": f"{type(e).__name__}: {msg}"}
    out = Path(job.result)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(res, indent=2, default=str))
    os.replace(tmp, out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
