"""torch.compile (Inductor).  Cold compiles take tens of seconds: counted as compile time, never latency."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

from pydantic import Field

from planner.backends.base import DECISIVE, Backend, BuildResult, Serving
from planner.backends.pt2 import load_pt2
from planner.backends.torch_eager import TorchOptions


class TorchCompileOptions(TorchOptions):
    mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = Field(
        "default", description="torch.compile's mode", json_schema_extra=DECISIVE)
    freezing: bool = Field(False, description="Inductor constant-folds the weights (a big win for CPU inference)",
                           json_schema_extra=DECISIVE)
    dynamic: bool = Field(False, description="compile for dynamic shapes")


class TorchCompile(Backend):
    name = "torch_compile"
    modules = ("torch",)
    install_hint = "pip install torch==2.13.0"
    devices = ("cpu", "cuda")
    input_format = "torch"
    quant_schemes = ("none", "int8_dynamic", "int8_weight_only", "int4_weight_only", "fp16", "bf16")
    scheme_devices = {"int4_weight_only": ("cpu",)}  # torch's CPU int4 kernel (planner.transforms.int4)
    # quantize_dynamic on nn.Linear: op/weight types are fixed; int4: planner.transforms.int4's layout is asymmetric
    scheme_options = {"int8_dynamic": ("per_channel", "reduce_range"), "int4_weight_only": ("group_size",)}
    quantizer = "torch"  # planner's torch transforms (prepare_torch_module), shared with the other torch backend
    engine_files = ("model.pt2",)  # torch.export program (planner.backends.pt2); Triton: Python backend
    fallback_engine = "model.ts"  # TorchScript where torch.export cannot hold the module (its dynamic int8 Linear)
    load_artifact = classmethod(load_pt2)
    decoder_schemes = quant_schemes  # planner.llm.runtimes runs decoders with the same transforms
    # server threads share the compiled module, each with its own intra-op team; no dynamic batching: every batch
    # size a batcher forms would be a recompilation (Dynamo guards on the shape) inside the served latency
    serving = Serving(instance="a thread running the compiled module (one copy of the weights)",
                      threads="torch.set_num_threads in that thread (its own intra-op team)", dynamic_batch=False)
    Options = TorchCompileOptions

    def compile(self, source, cfg, target, workdir: Path) -> BuildResult:
        import torch

        from planner.backends._torch_runtime import (TorchRuntime, prepare_torch_module, save_torch_engine,
                                                     uses_channels_last)

        opts = self.resolve_options(cfg.options())
        module, device, in_dtype = prepare_torch_module(source, cfg, target)
        cl = uses_channels_last(cfg)
        info = {"device": device, "mode": opts["mode"], "memory_format": "channels_last" if cl else "contiguous"}
        artifacts = []
        engine, note = save_torch_engine(module, source.example_inputs(cfg.batch_size), workdir, in_dtype, cl)
        if note:
            info["artifact_note"] = note
        if engine is not None:
            artifacts.append(engine)

        import torch._inductor.config as inductor_config

        inductor_config.freezing = opts["freezing"]
        from torch._dynamo.utils import counters

        cache_before = dict(counters["inductor"])
        t0 = time.perf_counter()
        compiled = torch.compile(module, mode=opts["mode"], dynamic=opts["dynamic"])
        rt = TorchRuntime(compiled, device, in_dtype, cl)
        if cfg.serving is not None and device == "cpu":
            rt.serve_threads = cfg.serving.threads_per_instance(target.thread_count())
        example = source.example_inputs(cfg.batch_size, seed=3)
        rt.infer(example)  # triggers compilation for this shape
        run = rt.bind(example)  # and through the timed path, so no recompilation lands in the measurement
        run()
        run()
        rt.synchronize()
        compile_s = time.perf_counter() - t0
        # what Inductor's FX graph cache (TORCHINDUCTOR_CACHE_DIR, in the planner cache) saved this build: a rebuild
        # of a measured config (the re-measurement after the search) hits it; freezing=True graphs bypass it
        for k in ("fxgraph_cache_hit", "fxgraph_cache_miss", "fxgraph_cache_bypass"):
            info[k] = int(counters["inductor"].get(k, 0) - cache_before.get(k, 0))
        return BuildResult(rt, artifacts, compile_s, info)
