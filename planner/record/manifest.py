"""Self-describing artifacts: manifest.json with config, metrics, environment and checksums."""

from __future__ import annotations

import json
import platform
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
LIBRARIES = ("planner", "torch", "onnx", "onnxruntime", "onnxruntime-gpu", "apache-tvm", "tensorrt", "openvino", "nncf", "optuna", "mlflow", "numpy", "torch-pruning", "torchao")


def library_versions() -> dict[str, str]:
    out = {}
    for lib in LIBRARIES:
        try:
            out[lib] = version(lib)
        except PackageNotFoundError:
            continue
    return out


def environment() -> dict[str, Any]:
    from planner.target import _cpu_isa, _cpu_name, gpu_environment, probe_gpus

    import os

    env: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "cpu_isa": _cpu_isa(),
        "gpus": probe_gpus(),
        "libraries": library_versions(),
    }
    if env["gpus"]:  # driver, clocks, power state at recording time; the CUDA runtime torch was built for
        env["gpu_state"] = gpu_environment()
        torch = sys.modules.get("torch")  # only when already loaded: recording must not import it
        if torch is not None:
            env["cuda_runtime"] = getattr(torch.version, "cuda", None)
    return env


def file_checksums(directory: Path, files: list[str]) -> dict[str, dict[str, Any]]:
    from planner.search.cache import sha256_file

    return {f: {"sha256": sha256_file(directory / f), "bytes": (directory / f).stat().st_size} for f in sorted(files)}


def build_manifest(*, directory: Path, files: list[str], model: dict, target: dict, trial: dict, metrics: dict,
                   backend_info: dict, reproduce: str, env: dict | None = None) -> dict[str, Any]:
    from planner import __version__

    return {
        "schema_version": SCHEMA_VERSION,
        "planner_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": model,
        "target": target,
        "trial": trial,
        "metrics": metrics,
        "backend": backend_info,
        "environment": env or environment(),
        "files": file_checksums(directory, files),
        "reproduce": reproduce,
    }


def write_manifest(path: Path, manifest: dict) -> Path:
    path.write_text(json.dumps(manifest, indent=2, sort_keys=False, default=str))
    return path
