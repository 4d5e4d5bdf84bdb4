"""TensorRT through its Python API and ONNX parser (NVIDIA GPUs only).

TensorRT wheels are not reachable on CPU build machines, so this backend is
behind the availability check: `planner backends` says how to install it, and
sampling never offers it where `import tensorrt` fails or the target is a CPU.

Precision: TensorRT >= 10.12 networks are strongly typed (precision comes from
the ONNX graph itself: casts and Q/DQ nodes from the compression transforms);
older releases take builder flags (FP16/BF16/INT8).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from planner.backends.base import Backend, BuildResult, Runtime
from planner.errors import CandidateFailed, FailReason


def _version_tuple(v: str) -> tuple[int, int]:
    parts = v.split(".")
    return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0


class TrtRuntime(Runtime):
    device = "cuda"

    def __init__(self, engine, batch: int, use_cuda_graph: bool = False):
        import torch

        self.torch = torch
        self.engine = engine
        self.context = engine.create_execution_context()
        self.batch = batch
        self.use_cuda_graph = use_cuda_graph
        self.stream = torch.cuda.Stream()
        import tensorrt as trt

        self.names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.inputs = [n for n in self.names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in self.names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self._trt = trt

    def _prepare(self, inputs: dict[str, np.ndarray]):
        torch, trt = self.torch, self._trt
        bufs = {}
        for name, arr in zip(self.inputs, inputs.values()):
            t = torch.from_numpy(np.ascontiguousarray(arr)).cuda()
            self.context.set_input_shape(name, tuple(t.shape))
            bufs[name] = t
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            dtype = torch.from_numpy(np.empty(0, dtype=trt.nptype(self.engine.get_tensor_dtype(name)))).dtype
            bufs[name] = torch.empty(shape, dtype=dtype, device="cuda")
        for name, t in bufs.items():
            self.context.set_tensor_address(name, t.data_ptr())
        return bufs

    def bind(self, inputs: dict[str, np.ndarray]) -> Callable[[], Any]:
        self._bufs = self._prepare(inputs)
        handle = self.stream.cuda_stream
        ctx = self.context
        if self.use_cuda_graph:
            torch = self.torch
            ctx.execute_async_v3(handle)  # one launch before capture, as TensorRT requires
            self.stream.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=self.stream):
                ctx.execute_async_v3(self.stream.cuda_stream)
            return graph.replay
        return lambda: ctx.execute_async_v3(handle)

    def infer(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        bufs = self._prepare(inputs)
        self.context.execute_async_v3(self.stream.cuda_stream)
        self.stream.synchronize()
        return [bufs[n].float().cpu().numpy() for n in self.outputs]

    def synchronize(self) -> None:
        self.stream.synchronize()


class TensorRT(Backend):
    name = "tensorrt"
    modules = ("tensorrt",)
    install_hint = "pip install 'planner[tensorrt]' on a machine with an NVIDIA GPU and driver"
    devices = ("cuda",)
    input_format = "onnx"
    quant_schemes = ("none", "fp16", "bf16", "int8_static")
    options = {
        "optimization_level": (0, 1, 2, 3, 4, 5),
        "workspace_mb": int,
        "sparse_weights": (True, False),
        "cuda_graph": (True, False),
    }

    def compile(self, source, cfg, target, workdir: Path) -> BuildResult:
        import tensorrt as trt

        t0 = time.perf_counter()
        opts = cfg.options()
        onnx_path = source.onnx_path(cfg)
        if cfg.quant.scheme in ("fp16", "int8_static"):
            # precision lives in the graph (strongly typed TensorRT): casts or Q/DQ from the ONNX transforms
            from planner.transforms.quantize import quantize_onnx

            q = workdir / "model.qdq.onnx"
            calib = source.calibration_inputs(32, seed=21) if cfg.quant.scheme == "int8_static" else None
            quantize_onnx(onnx_path, q, cfg.quant, calib)
            onnx_path = q
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        strongly_typed = _version_tuple(trt.__version__) >= (10, 12)
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed else 0
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(onnx_path)):
            errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise CandidateFailed(FailReason.COMPILE, f"TensorRT ONNX parser: {errs[:500]}")
        config = builder.create_builder_config()
        config.builder_optimization_level = int(opts.get("optimization_level", 3))
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(opts.get("workspace_mb", 4096)) << 20)
        if not strongly_typed:
            if cfg.quant.scheme == "fp16":
                config.set_flag(trt.BuilderFlag.FP16)
            elif cfg.quant.scheme == "bf16":
                config.set_flag(trt.BuilderFlag.BF16)
            elif cfg.quant.scheme == "int8_static":
                config.set_flag(trt.BuilderFlag.INT8)
        if opts.get("sparse_weights") or cfg.prune.method == "2:4":
            config.set_flag(trt.BuilderFlag.SPARSE_WEIGHTS)
        # one optimization profile covering the trial's batch size (dynamic batch axis in the ONNX)
        profile = builder.create_optimization_profile()
        for spec in source.inputs:
            shape = (cfg.batch_size, *spec.shape)
            profile.set_shape(spec.name, (1, *spec.shape), shape, shape)
        config.add_optimization_profile(profile)
        # persisted timing cache shared by every trial on this target
        cache_file = Path(source.cache_dir) / "tensorrt" / f"timing-{target.name}-{trt.__version__}.cache"
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        cache = config.create_timing_cache(cache_file.read_bytes() if cache_file.is_file() else b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise CandidateFailed(FailReason.COMPILE, "TensorRT failed to build the engine (see worker.log)")
        from planner.search.cache import atomic_path

        with atomic_path(cache_file) as tmp:
            tmp.write_bytes(memoryview(config.get_timing_cache().serialize()))
        engine_path = workdir / "model.plan"
        engine_path.write_bytes(memoryview(plan))
        engine = trt.Runtime(logger).deserialize_cuda_engine(plan)
        rt = TrtRuntime(engine, cfg.batch_size, bool(opts.get("cuda_graph", False)))
        info = {"tensorrt_version": trt.__version__, "strongly_typed": strongly_typed, "timing_cache": str(cache_file)}
        return BuildResult(rt, [engine_path], time.perf_counter() - t0, info)


def load_artifact(directory: Path, batch: int = 1, cuda_graph: bool = False) -> TrtRuntime:
    """Load ``model.plan`` with the TensorRT runtime API alone."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    engine = trt.Runtime(logger).deserialize_cuda_engine((Path(directory) / "model.plan").read_bytes())
    return TrtRuntime(engine, batch, cuda_graph)
