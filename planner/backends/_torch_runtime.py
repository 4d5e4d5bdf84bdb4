"""Shared pieces of the torch-based backends: the runtime and the exported-program artifact."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from planner.backends.base import Runtime


class TorchRuntime(Runtime):
    def __init__(self, module, device: str = "cpu", input_dtype=None):
        import torch

        self.module = module
        self.device = device
        self.input_dtype = input_dtype  # e.g. torch.float16 when the model was cast
        self._torch = torch

    def _tensors(self, inputs: dict[str, np.ndarray]):
        torch = self._torch
        out = []
        for v in inputs.values():
            t = torch.from_numpy(np.ascontiguousarray(v)).to(self.device)
            if self.input_dtype is not None and t.is_floating_point():
                t = t.to(self.input_dtype)
            out.append(t)
        return out

    def bind(self, inputs: dict[str, np.ndarray]) -> Callable[[], Any]:
        torch = self._torch
        with torch.inference_mode():  # same dispatch keys as `infer`, so torch.compile does not recompile here
            args = self._tensors(inputs)
        module = self.module

        def run():
            with torch.inference_mode():
                return module(*args)

        return run

    def infer(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        torch = self._torch
        with torch.inference_mode():
            out = self.module(*self._tensors(inputs))
        outs = out if isinstance(out, (tuple, list)) else [out]
        return [o.detach().float().cpu().numpy() for o in outs]

    def synchronize(self) -> None:
        if self.device.startswith("cuda"):
            self._torch.cuda.synchronize()

    def timing_stream(self):
        return self._torch.cuda.current_stream() if self.device.startswith("cuda") else None

    def bind_host(self, inputs: dict[str, np.ndarray]) -> Callable[[], Any] | None:
        if not self.device.startswith("cuda"):
            return None
        torch = self._torch
        host = [torch.from_numpy(np.ascontiguousarray(v)) for v in inputs.values()]
        module, device, dtype = self.module, self.device, self.input_dtype

        def run():
            with torch.inference_mode():
                args = [t.to(device) for t in host]
                if dtype is not None:
                    args = [a.to(dtype) if a.is_floating_point() else a for a in args]
                out = module(*args)
                outs = out if isinstance(out, (tuple, list)) else [out]
                return [o.cpu() for o in outs if isinstance(o, torch.Tensor)]

        return run


def save_exported_program(module, example: dict[str, np.ndarray], path: Path, input_dtype=None) -> str | None:
    """Save ``torch.export`` of the module (dynamic batch) as ``.pt2``; return an error note instead of raising."""
    import torch

    try:
        args = tuple(
            (torch.from_numpy(v).to(input_dtype) if input_dtype is not None and v.dtype.kind == "f" else torch.from_numpy(v))
            for v in example.values()
        )
        batch = torch.export.Dim("batch", min=1, max=4096)
        try:
            ep = torch.export.export(module, args, dynamic_shapes=tuple({0: batch} for _ in args))
        except Exception:
            ep = torch.export.export(module, args)  # static batch as a fallback
        torch.export.save(ep, str(path))
        return None
    except Exception as e:  # the engine still runs; only the portable artifact is missing
        return f"torch.export failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}"


def prepare_torch_module(source, cfg, target):
    """The transformed, quantized module on the target device, and the input dtype it expects."""
    from planner.transforms.quantize import input_dtype, quantize_torch, record_quant_info

    import torch

    module = source.torch_module(cfg)
    example = tuple(torch.from_numpy(v) for v in source.example_inputs(2, seed=11).values())
    if cfg.quant.active:
        import copy

        module = quantize_torch(copy.deepcopy(module), cfg.quant, example)
        record_quant_info(module, source.transform_info)
    device = "cuda" if target.is_gpu else "cpu"
    module = module.to(device).eval()
    return module, device, input_dtype(cfg.quant)
