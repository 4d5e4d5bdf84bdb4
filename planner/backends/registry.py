"""Backend name -> implementing class, imported lazily on first use."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from planner.errors import ConfigError, did_you_mean

if TYPE_CHECKING:  # pragma: no cover
    from planner.backends.base import Backend

REGISTRY: dict[str, str] = {
    "torch": "planner.backends.torch_eager:TorchEager",
    "torch_compile": "planner.backends.torch_compile:TorchCompile",
    "onnxruntime": "planner.backends.onnxruntime:OnnxRuntime",
    "tvm": "planner.backends.tvm:TVM",
    "tensorrt": "planner.backends.tensorrt:TensorRT",
    "openvino": "planner.backends.openvino:OpenVINO",
}



def _plugins() -> dict[str, str]:
    """Extra backends from ``PLANNER_BACKENDS="name=module:Class,..."`` (inherited by workers)."""
    import os

    out = {}
    for item in filter(None, (x.strip() for x in os.environ.get("PLANNER_BACKENDS", "").split(","))):
        name, _, ref = item.partition("=")
        if not ref or ":" not in ref:
            raise ConfigError(f"PLANNER_BACKENDS: {item!r}: expected name=module:Class")
        out[name.strip()] = ref.strip()
    return out


def all_backends() -> dict[str, str]:
    return {**REGISTRY, **_plugins()}


def names() -> list[str]:
    return list(all_backends())


def get(name: str) -> type["Backend"]:
    known = all_backends()
    if name not in known:
        raise ConfigError(f"unknown backend {name!r}; {did_you_mean(name, known)}")
    module, _, cls = known[name].partition(":")
    return getattr(importlib.import_module(module), cls)
