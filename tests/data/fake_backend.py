"""A plugin backend for search-loop tests (registered through PLANNER_BACKENDS)."""

import time

import numpy as np

from planner.backends.base import Backend, BuildResult, Runtime
from planner.errors import CandidateFailed, FailReason


class _Identity(Runtime):
    def __init__(self, scale):
        self.scale = scale

    def bind(self, inputs):
        return lambda: time.sleep(0.0005 * self.scale)

    def infer(self, inputs):
        x = next(iter(inputs.values())).astype(np.float32)
        return [x[:, :10] * 0 + self.scale]


class Fake(Backend):
    name = "fake"
    modules = ("numpy",)
    devices = ("cpu",)
    input_format = "torch"
    options = {"behaviour": ("ok", "compile_error", "slow")}

    def compile(self, source, cfg, target, workdir):
        b = cfg.options().get("behaviour", "ok")
        if b == "compile_error":
            raise CandidateFailed(FailReason.COMPILE, "fake compiler rejected the graph")
        (workdir / "engine.bin").write_bytes(b"fake")
        return BuildResult(_Identity(1 if b == "ok" else 50), [workdir / "engine.bin"], 0.0, {"fake": 1})
