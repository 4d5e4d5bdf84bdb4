"""Backend name -> implementing class, imported lazily on first use.

This table is the one list of backends: target validation, `planner probe`, sampling, export,
verify and the LLM decoders read it (and each class's declarations) instead of keeping their own.
A new backend is its module plus one line here.
"""

from __future__ import annotations

import functools
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

# The host's best engine per device kind, best first: what a seed `backend: best` resolves to (the first of these
# the study can use), at that engine's own defaults -- the deployment a user would pick instead of searching
# (OpenVINO's defaults beat the rest on CPU, issue 18; TensorRT on NVIDIA GPUs).  Declared here, once.
BEST_ENGINES: dict[str, tuple[str, ...]] = {
    "cpu": ("openvino", "onnxruntime", "torch_compile", "torch"),
    "cuda": ("tensorrt", "torch_compile", "onnxruntime", "torch"),
}


def best_engine(device_kind: str, usable: list[str]) -> str | None:
    """The first of `BEST_ENGINES` for ``device_kind`` among ``usable`` (None: none of them is)."""
    return next((b for b in BEST_ENGINES.get(device_kind, ()) if b in usable), None)


ENTRY_POINT_GROUP = "planner.backends"


def _entry_points() -> dict[str, str]:
    """Backends that installed packages register: ``[project.entry-points."planner.backends"]`` with
    ``name = "module:Class"`` in the plugin's pyproject.toml (read from package metadata; nothing is imported)."""
    import sys

    return dict(_scan(tuple(sys.path)))


@functools.lru_cache(maxsize=4)
def _scan(path: tuple[str, ...]) -> tuple[tuple[str, str], ...]:  # keyed by sys.path: a new folder is a new scan
    from importlib.metadata import entry_points

    return tuple((ep.name, ep.value) for ep in entry_points(group=ENTRY_POINT_GROUP))


def _plugins() -> dict[str, str]:
    """Extra backends from ``PLANNER_BACKENDS="name=module:Class,..."`` (inherited by workers): for a backend that
    is not a package yet (a test, an experiment); a package registers through the entry point group instead."""
    import os

    out = {}
    for item in filter(None, (x.strip() for x in os.environ.get("PLANNER_BACKENDS", "").split(","))):
        name, _, ref = item.partition("=")
        if not ref or ":" not in ref:
            raise ConfigError(f"PLANNER_BACKENDS: {item!r}: expected name=module:Class")
        out[name.strip()] = ref.strip()
    return out


def all_backends() -> dict[str, str]:
    """Built-in backends, then those of installed packages (entry points), then ``PLANNER_BACKENDS``; a plugin
    cannot replace a built-in one."""
    extra = {**_entry_points(), **_plugins()}
    clash = sorted(set(extra) & set(REGISTRY))
    if clash:
        raise ConfigError(f"plugin backend(s) {', '.join(clash)}: the name is a built-in backend's; register under "
                          f"another name")
    return {**REGISTRY, **extra}


def names() -> list[str]:
    return list(all_backends())


def get(name: str) -> type:
    """The backend class (a `planner.backends.base.Backend` subclass) registered as ``name``."""
    known = all_backends()
    if name not in known:
        raise ConfigError(f"unknown backend {name!r}; {did_you_mean(name, known)}")
    module, _, cls = known[name].partition(":")
    try:
        return getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError) as e:
        if name in REGISTRY:
            raise
        raise ConfigError(f"plugin backend {name!r} = {known[name]!r} cannot be loaded: {type(e).__name__}: {e}") from None


def classes() -> dict[str, type]:
    """Every registered backend class by name (imports each backend module; they are light)."""
    return {n: get(n) for n in all_backends()}


def names_for_device(kind: str) -> list[str]:
    """The built-in backends that declare device kind ``kind`` (e.g. the backends a probed CPU lists)."""
    return [n for n in REGISTRY if kind in get(n).devices]


def by_engine_file(filename: str) -> type | None:
    """The backend class whose main engine file is named ``filename`` (None: no backend writes it)."""
    for cls in classes().values():
        if filename in cls.main_engine_names():
            return cls
    return None
