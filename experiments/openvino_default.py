"""The "OpenVINO default" baseline of the benchmarks: what a user who picks OpenVINO instead of planner gets with one
line, `openvino.Core().compile_model(openvino.convert_model(model), "CPU")` and no options at all (on a CPU with
AVX512-BF16/AMX, OpenVINO then infers in bf16; elsewhere in fp32).

Two ways in, both with openvino imported lazily (no import when the column is left out):

* `OpenVINODefault`, a planner backend *plugin* (not a searched backend): the planner-study benchmarks
  (bench_baselines, bench_compression) register it in their measurement workers with `worker_env` below, and measure
  ``TrialConfig("openvino_default", b)`` through `planner.measure.runner.run_job` like every other variant (same
  process isolation, quality check against the study's reference, timing protocol).  Its model is the same cached
  ONNX export the ONNX Runtime fp32 baseline runs.
* `session`, an object with ONNX Runtime's ``run(None, feed)``, for the ORT micro-benchmarks that time sessions in
  interleaved rounds (ort_rounds.time_rounds).

`missing_reason()` says why the column cannot be measured here (None when it can): openvino not importable.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from planner.backends.base import Backend, BuildResult, Runtime

NAME = "openvino_default"
TITLE = "OpenVINO default"
INSTALL_HINT = "pip install openvino"
PLUGIN = f"{NAME}=openvino_default:OpenVINODefault"
# what the compiled model chose by itself (recorded beside the latency: the default differs from CPU to CPU)
PROPERTIES = ("INFERENCE_PRECISION_HINT", "PERFORMANCE_HINT", "NUM_STREAMS", "INFERENCE_NUM_THREADS")


def missing_reason() -> str | None:
    """Why the OpenVINO default column cannot be measured here, or None."""
    if importlib.util.find_spec("openvino") is None:
        return f"openvino is not importable here ({INSTALL_HINT}); column left out"
    return None


def version() -> str | None:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as v

    try:
        return v("openvino")
    except PackageNotFoundError:
        return None


def worker_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` (a measurement worker's environment) with this plugin registered and importable."""
    here = str(Path(__file__).resolve().parent)
    plugins = [p for p in env.get("PLANNER_BACKENDS", "").split(",") if p.strip() and not p.startswith(f"{NAME}=")]
    env["PLANNER_BACKENDS"] = ",".join(plugins + [PLUGIN])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [here, env.get("PYTHONPATH")]))
    return env


def compile_default(model_path: Path):
    """convert + compile, no options: ``(compiled_model, {property: value})``."""
    import openvino as ov

    compiled = ov.Core().compile_model(ov.convert_model(str(model_path)), "CPU")
    props: dict[str, Any] = {}
    for k in PROPERTIES:
        try:
            v = compiled.get_property(k)
            props[k] = v.get_type_name() if hasattr(v, "get_type_name") else str(v)  # an element type: 'f32', 'bf16'
        except Exception:  # a property this version does not report
            continue
    return compiled, props


class OVRuntime(Runtime):
    """One infer request of a compiled model; inputs are given in the model's input order."""

    def __init__(self, compiled):
        self.compiled = compiled
        self.request = compiled.create_infer_request()

    def _set(self, request, inputs: dict[str, np.ndarray]) -> list:
        import openvino as ov

        arrays = [np.ascontiguousarray(v) for v in inputs.values()]
        for i, a in enumerate(arrays):
            request.set_input_tensor(i, ov.Tensor(a))
        return arrays  # kept alive by the caller

    def bind(self, inputs: dict[str, np.ndarray]) -> Callable[[], Any]:
        request = self.compiled.create_infer_request()
        self._bound = (request, self._set(request, inputs))
        return request.infer

    def infer(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        keep = self._set(self.request, inputs)  # noqa: F841 - the tensors share these arrays' memory
        self.request.infer()
        outs = [self.request.get_output_tensor(i).data for i in range(len(self.compiled.outputs))]
        return [np.array(o, dtype=np.float32) if np.issubdtype(o.dtype, np.floating) else np.array(o) for o in outs]


class OpenVINODefault(Backend):
    """Bench-only baseline: OpenVINO with no options on the planner's cached fp32 ONNX export."""

    name = NAME
    modules = ("openvino",)
    install_hint = INSTALL_HINT
    devices = ("cpu",)
    input_format = "torch"
    accepts_onnx = True
    quant_schemes = ("none",)

    def compile(self, source, cfg, target, workdir: Path) -> BuildResult:
        import time

        src = source.onnx_path(cfg)
        t0 = time.perf_counter()
        compiled, props = compile_default(src)
        return BuildResult(OVRuntime(compiled), [], time.perf_counter() - t0,
                           {"device": "cpu", "openvino": version(), "model": str(src), **{f"ov.{k}": v for k, v in props.items()}})


class _Session:
    """``run(None, feed)`` like an ONNX Runtime session, on OpenVINO's default compile (for ort_rounds)."""

    def __init__(self, model_path: Path):
        self.compiled, self.properties = compile_default(model_path)
        self.runtime = OVRuntime(self.compiled)

    def run(self, output_names, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.runtime.infer(feed)


def session(model_path: Path) -> _Session:
    return _Session(model_path)
