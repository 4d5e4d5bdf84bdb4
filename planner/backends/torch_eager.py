"""PyTorch eager execution: the baseline every other backend is compared with."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

from pydantic import Field

from planner.backends.base import Backend, BackendOptions, BuildResult, Serving
from planner.backends.pt2 import load_pt2


class TorchOptions(BackendOptions):
    memory_format: Literal["contiguous", "channels_last"] = Field(
        "contiguous", description="channels_last: 4-d weights and inputs in NHWC layout (what cuDNN's tensor-core "
                                  "convolutions prefer)")


class TorchEager(Backend):
    name = "torch"
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
    Options = TorchOptions
    serving = Serving(instance="a thread running the module (one copy of the weights)",
                      threads="torch.set_num_threads in that thread (its own intra-op team)")

    def compile(self, source, cfg, target, workdir: Path) -> BuildResult:
        from planner.backends._torch_runtime import (TorchRuntime, prepare_torch_module, save_torch_engine,
                                                     uses_channels_last)

        t0 = time.perf_counter()
        module, device, in_dtype = prepare_torch_module(source, cfg, target)
        compile_s = time.perf_counter() - t0
        cl = uses_channels_last(cfg)
        info = {"device": device, "memory_format": "channels_last" if cl else "contiguous"}
        artifacts = []
        engine, note = save_torch_engine(module, source.example_inputs(cfg.batch_size), workdir, in_dtype, cl)
        if note:
            info["artifact_note"] = note
        if engine is not None:
            artifacts.append(engine)
        rt = TorchRuntime(module, device, in_dtype, cl)
        if cfg.serving is not None and device == "cpu":
            rt.serve_threads = cfg.serving.threads_per_instance(target.thread_count())
        return BuildResult(rt, artifacts, compile_s, info)
