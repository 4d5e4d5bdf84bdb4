"""A plugin backend for search-loop tests (registered through PLANNER_BACKENDS)."""

import time
from typing import Literal

import numpy as np
from pydantic import Field

from planner.backends.base import DECISIVE, Backend, BackendOptions, BuildResult, Runtime
from planner.errors import CandidateFailed, FailReason


class _Identity(Runtime):
    def __init__(self, scale):
        self.scale = scale

    def bind(self, inputs):
        return lambda: time.sleep(0.0005 * self.scale)

    def infer(self, inputs):
        x = next(iter(inputs.values())).astype(np.float32)
        return [x[:, :10] * 0 + self.scale]


class _Eager(Runtime):
    """The model's real outputs (so quality is feasible), at a latency set by the test: ``delay_s`` per call."""

    def __init__(self, module, delay_s):
        self.module, self.delay_s = module, delay_s

    def bind(self, inputs):
        return lambda: time.sleep(self.delay_s)

    def infer(self, inputs):
        import torch

        with torch.no_grad():
            out = self.module(*[torch.from_numpy(v) for v in inputs.values()])
        return [out.numpy()]


class Fake(Backend):
    name = "fake"
    modules = ("numpy",)
    devices = ("cpu",)
    input_format = "torch"
    # steady / lucky: real outputs.  steady takes 2 ms a call.  lucky takes 0.4 ms when first built (its study
    # trial) and 10 ms on every later build (a deployment whose study measurement was a lucky window)
    # flaky: real outputs, 1 ms a call, and every build after the first fails
    # build_delay: seconds compile() sleeps (a trial that surely outlasts a short --timeout, however fast workers start)
    class Options(BackendOptions):
        # what it does decides its speed by orders: trials of another behaviour are another slow region
        behaviour: Literal["ok", "compile_error", "slow", "steady", "lucky", "flaky"] = Field("ok", json_schema_extra=DECISIVE)
        build_delay: float = 0.0

    def compile(self, source, cfg, target, workdir):
        opts = self.resolve_options(cfg.options())
        b = opts["behaviour"]
        time.sleep(opts["build_delay"])
        if b == "compile_error":
            raise CandidateFailed(FailReason.COMPILE, "fake compiler rejected the graph")
        (workdir / "engine.bin").write_bytes(b"fake")
        if b in ("steady", "lucky", "flaky"):
            delay = {"steady": 0.002, "flaky": 0.001}.get(b)
            marker = source.cache_dir / f"fake-{b}-built"
            if b == "lucky":
                delay = 0.01 if marker.exists() else 0.0004
            if b == "flaky" and marker.exists():
                raise CandidateFailed(FailReason.COMPILE, "fake compiler fails on a rebuild")
            marker.touch()
            return BuildResult(_Eager(source.torch_module(cfg).eval(), delay), [workdir / "engine.bin"], 0.0, {"fake": 1})
        return BuildResult(_Identity(1 if b == "ok" else 50), [workdir / "engine.bin"], 0.0, {"fake": 1})


class Missing(Backend):
    """A registered backend whose package is not installed (as openvino without planner[openvino])."""

    name = "ghost"
    modules = ("planner_no_such_module",)
    pip_extra = "ghost"
    devices = ("cpu",)
    input_format = "torch"
    class Options(BackendOptions):
        hint: Literal["fast", "slow"] = "fast"

    def compile(self, source, cfg, target, workdir):  # pragma: no cover - never sampled
        raise AssertionError("a backend that is not installed was compiled")
