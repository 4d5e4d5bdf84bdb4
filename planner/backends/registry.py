"""Backend name -> implementing class, imported lazily on first use.

This table is the one list of backends: target validation, `planner probe`, sampling, export,
verify and the LLM decoders read it (and each class's declarations) instead of keeping their own.
A new backend is its module plus one line here.
"""

from __future__ import annotations

import importlib

from planner.errors import ConfigError, did_you_mean

REGISTRY: dict[str, str] = {
    "torch": "planner.backends.torch_eager:TorchEager",
    "torch_compile": "planner.backends.torch_compile:TorchCompile",
    "onnxruntime": "planner.backends.onnxruntime:OnnxRuntime",
    "tvm": "planner.backends.tvm:TVM",
    "tensorrt": "planner.backends.tensorrt:TensorRT",
    "openvino": "planner.backends.openvino:OpenVINO",
    "llamacpp": "planner.backends.llamacpp:LlamaCpp",
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


def get(name: str) -> type:
    """The backend class (a `planner.backends.base.Backend` subclass) registered as ``name``."""
    known = all_backends()
    if name not in known:
        raise ConfigError(f"unknown backend {name!r}; {did_you_mean(name, known)}")
    module, _, cls = known[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def classes() -> dict[str, type]:
    """Every registered backend class by name (imports each backend module; they are light)."""
    return {n: get(n) for n in all_backends()}


def names_for_device(kind: str) -> list[str]:
    """The built-in backends that declare device kind ``kind`` (e.g. the backends a probed CPU lists)."""
    return [n for n in REGISTRY if kind in get(n).devices]


def by_engine_file(filename: str) -> type | None:
    """The backend class whose main engine file is named ``filename`` (None: no backend writes it)."""
    for cls in classes().values():
        if cls.engine_files and cls.engine_files[0] == filename:
            return cls
    return None
