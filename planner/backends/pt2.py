"""``torch.export`` programs (``model.pt2``): the exportable engine of the torch and torch.compile backends, and
their fallback, a TorchScript module (``model.ts``) for a model torch.export cannot hold (torch's dynamic int8
``Linear`` keeps its weights in a packed object torch.export does not serialise; TorchScript does, and runs the
same fbgemm kernels that were measured).

Loaded by `TorchEager.load_artifact` / `TorchCompile.load_artifact` in a fresh process (``planner verify``,
Triton's Python backend) with torch alone.
"""

from __future__ import annotations

import json
from pathlib import Path


def _pt2_input_dtypes(ep) -> list:
    names = set(ep.graph_signature.user_inputs)
    out = []
    for n in ep.graph.nodes:
        if n.op == "placeholder" and n.name in names:
            val = n.meta.get("val")
            out.append(getattr(val, "dtype", None))
    return out


class Pt2Runtime:
    """A ``torch.export`` program (or a TorchScript module, ``.ts``) as a planner Runtime (float inputs cast to
    what the program expects)."""

    def __init__(self, path: Path, device: str):
        import torch

        from planner.backends._torch_runtime import TorchRuntime

        if Path(path).suffix == ".ts":
            extra = {"planner.json": ""}  # written by planner.backends._torch_runtime.trace_torchscript
            module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
            meta = json.loads(extra["planner.json"] or "{}")
            self.dtypes = [getattr(torch, meta["input_dtype"]) if meta.get("input_dtype") else None]
            self.dynamic_batch = bool(meta.get("dynamic_batch"))
        else:
            ep = torch.export.load(str(path))
            self.dtypes = _pt2_input_dtypes(ep)
            self.dynamic_batch = self._dynamic(ep)
            module = ep.module()
        if device != "cpu":
            try:
                module = module.to(device)
            except Exception:
                pass
        float_dtypes = {d for d in self.dtypes if d is not None and d.is_floating_point}
        in_dtype = next(iter(float_dtypes)) if len(float_dtypes) == 1 and torch.float32 not in float_dtypes else None
        self.rt = TorchRuntime(module, device, in_dtype)
        self.device = device

    @staticmethod
    def _dynamic(ep) -> bool:
        names = set(ep.graph_signature.user_inputs)
        for n in ep.graph.nodes:
            if n.op == "placeholder" and n.name in names:
                shape = getattr(n.meta.get("val"), "shape", ())
                return bool(shape) and not isinstance(shape[0], int)
        return False

    def __getattr__(self, name):
        return getattr(self.rt, name)


def load_pt2(cls, engine_dir: Path, batch: int, device: str) -> Pt2Runtime:
    """`Backend.load_artifact` of the torch backends: ``model.pt2`` (or its fallback ``model.ts``) from ``engine_dir``."""
    names = cls.main_engine_names()
    path = next((Path(engine_dir) / n for n in names if (Path(engine_dir) / n).is_file()), Path(engine_dir) / names[0])
    return Pt2Runtime(path, device)
