"""Shared pieces of the torch-based backends: the runtime and the exported-program artifact."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Callable

import numpy as np

from planner.backends.base import Runtime


def place_inputs(inputs: dict[str, np.ndarray], device: str, input_dtype=None, channels_last: bool = False) -> list:
    """The tensors a torch engine is fed: on ``device``, float inputs cast to ``input_dtype``, 4-d float inputs in
    channels-last layout when the module is.  The runtime and the exported program take the same ones."""
    import torch

    out = []
    for v in inputs.values():
        t = torch.from_numpy(np.ascontiguousarray(v)).to(device)
        if input_dtype is not None and t.is_floating_point():
            t = t.to(input_dtype)
        if channels_last and t.dim() == 4 and t.is_floating_point():
            t = t.contiguous(memory_format=torch.channels_last)
        out.append(t)
    return out


def module_device(module) -> str:
    """Where a module's weights live ("cpu" for one without any)."""
    for t in list(module.parameters()) + list(module.buffers()):
        return str(t.device)
    return "cpu"


class TorchRuntime(Runtime):
    def __init__(self, module, device: str = "cpu", input_dtype=None, channels_last: bool = False):
        import torch

        self.module = module
        self.device = device
        self.input_dtype = input_dtype  # e.g. torch.float16 when the model was cast
        self.channels_last = channels_last  # 4-d inputs in channels-last layout (the module was converted)
        self._torch = torch

    def _tensors(self, inputs: dict[str, np.ndarray]):
        return place_inputs(inputs, self.device, self.input_dtype, self.channels_last)

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

    serve_threads: int | None = None  # intra-op threads of each served instance (set by a backend that serves)

    def serving_instances(self, n: int) -> list[Callable[[dict[str, np.ndarray]], list[np.ndarray]]]:
        """``n`` calls of the one module (one copy of the weights), each run by its own server thread, which sets
        its own intra-op team size on its first call (``torch.set_num_threads`` holds per calling thread)."""
        if self.serve_threads is None:
            return super().serving_instances(n)
        torch, threads = self._torch, self.serve_threads

        def instance():
            started = []

            def call(inputs):
                if not started:
                    torch.set_num_threads(threads)
                    started.append(True)
                return self.infer(inputs)

            return call

        return [instance() for _ in range(n)]

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
        module, device, dtype, cl = self.module, self.device, self.input_dtype, self.channels_last

        def run():
            with torch.inference_mode():
                args = [t.to(device) for t in host]
                if dtype is not None:
                    args = [a.to(dtype) if a.is_floating_point() else a for a in args]
                if cl:
                    args = [a.contiguous(memory_format=torch.channels_last) if a.dim() == 4 and a.is_floating_point() else a
                            for a in args]
                out = module(*args)
                outs = out if isinstance(out, (tuple, list)) else [out]
                return [o.cpu() for o in outs if isinstance(o, torch.Tensor)]

        return run


def save_torch_engine(module, example: dict[str, np.ndarray], workdir: Path, input_dtype=None,
                      channels_last: bool = False) -> tuple[Path | None, str | None]:
    """The torch backends' deployable engine: ``model.pt2`` (torch.export), or where torch.export cannot hold the
    module, ``model.ts`` (TorchScript, `trace_torchscript`); (None, why) when neither can.  Returns (file, note)."""
    pt2 = Path(workdir) / "model.pt2"
    note = save_exported_program(module, example, pt2, input_dtype, channels_last)
    if note is None:
        return pt2, None
    ts = Path(workdir) / "model.ts"
    why = trace_torchscript(module, example, ts, input_dtype, channels_last)
    if why is None:
        return ts, f"{note}; saved as TorchScript (model.ts) instead"
    return None, f"{note}; TorchScript: {why}"


def _outputs(out) -> list:
    return list(out) if isinstance(out, (tuple, list)) else [out]


def trace_torchscript(module, example: dict[str, np.ndarray], path: Path, input_dtype=None,
                      channels_last: bool = False) -> str | None:
    """``torch.jit.trace`` of the module saved at ``path`` with what a loader needs in ``planner.json`` (its float
    input dtype; whether the trace takes another batch: checked by running it at batch + 1 against the module).
    Returns an error note instead of raising."""
    import json

    import torch

    try:
        device = module_device(module)
        args = tuple(place_inputs(example, device, input_dtype, channels_last))
        with torch.no_grad():
            traced = torch.jit.trace(module, args, check_trace=False, strict=False)
            more = {k: np.concatenate([v, v[:1]]) for k, v in example.items()}
            other = tuple(place_inputs(more, device, input_dtype, channels_last))
            try:
                got, want = _outputs(traced(*other)), _outputs(module(*other))
                dynamic = len(got) == len(want) and all(
                    g.shape == w.shape and torch.allclose(g.float(), w.float(), rtol=1e-3, atol=1e-4)
                    for g, w in zip(got, want))
            except Exception:  # noqa: BLE001 -- the trace fixed the batch
                dynamic = False
        meta = {"input_dtype": str(input_dtype).replace("torch.", "") if input_dtype is not None else None,
                "dynamic_batch": dynamic}
        torch.jit.save(traced, str(path), _extra_files={"planner.json": json.dumps(meta)})
        return None
    except Exception as e:  # noqa: BLE001
        return f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"


def save_exported_program(module, example: dict[str, np.ndarray], path: Path, input_dtype=None,
                          channels_last: bool = False) -> str | None:
    """Save ``torch.export`` of the module (dynamic batch) as ``.pt2``; return an error note instead of raising.

    The example inputs are placed where the module's weights are (`module_device`), as the runtime places
    them: a CUDA module traced with host inputs fails to export, which left GPU trials without an artifact."""
    import torch

    try:
        args = tuple(place_inputs(example, module_device(module), input_dtype, channels_last))
        batch = torch.export.Dim("batch", min=1, max=4096)
        try:
            dynamic = tuple({0: batch} for _ in args)
            if any(p.kind == p.VAR_POSITIONAL for p in inspect.signature(module.forward).parameters.values()):
                dynamic = (dynamic,)  # forward(*args) (`planner.source.FlatOutputs`): one structure for all of them
            ep = torch.export.export(module, args, dynamic_shapes=dynamic)
        except Exception:
            ep = torch.export.export(module, args)  # static batch as a fallback
        torch.export.save(ep, str(path))
        return None
    except Exception as e:  # the engine still runs; only the portable artifact is missing
        return f"torch.export failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}"


def prepare_torch_module(source, cfg, target):
    """The transformed, quantized module on the target device, and the input dtype it expects.  With the
    ``memory_format: channels_last`` option the module's 4-d weights are laid out channels-last (NHWC), which
    cuDNN's tensor-core convolutions prefer; its 4-d inputs must then be too (`TorchRuntime(channels_last=...)`)."""
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
    if uses_channels_last(cfg):
        module = module.to(memory_format=torch.channels_last)
    return module, device, input_dtype(cfg.quant)


def uses_channels_last(cfg) -> bool:
    """Whether the config asks for channels-last memory format (the torch backends' `memory_format` option)."""
    return cfg.options().get("memory_format", "contiguous") == "channels_last"
