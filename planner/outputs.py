"""A model's outputs as named tensors, whatever structure its forward returns.

One flattening serves the fp32 reference, the ONNX export, every engine's runtime and the quality check, so an
output keeps its name and its place everywhere: a tensor is ``output``; the items of a tuple or list
``output0``, ``output1``…; the fields of a dict or a transformers ``ModelOutput`` (an ordered dict whose unset
fields are absent) their keys; nested structures join the names with dots (``hidden_states.0``).  ``None`` and
what is not a tensor (a transformers cache object, a Python number) are left out.

Duck-typed (a tensor is anything with ``shape`` and ``dtype``): importing this module imports no torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

PREFERRED = ("logits", "last_hidden_state")  # what quality is judged on by default, when a model returns it
EMBEDDINGS = ("last_hidden_state", "pooler_output", "text_embeds", "image_embeds", "sentence_embedding")


def _is_tensor(x: Any) -> bool:
    return hasattr(x, "shape") and hasattr(x, "dtype") and not isinstance(x, (Mapping, list, tuple))


def flatten_outputs(out: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """``[(name, tensor), …]`` in a fixed order (see the module's docstring)."""
    if out is None:
        return []
    if _is_tensor(out):
        return [(prefix or "output", out)]
    if isinstance(out, Mapping):
        items = [(f"{prefix}.{k}" if prefix else str(k), v) for k, v in out.items()]
    elif isinstance(out, (list, tuple)):
        items = [(f"{prefix}.{i}" if prefix else f"output{i}", v) for i, v in enumerate(out)]
    else:
        return []
    flat: list[tuple[str, Any]] = []
    for name, v in items:
        flat += flatten_outputs(v, name)
    return flat


def is_plain(out: Any) -> bool:
    """A tensor, or a tuple/list of tensors: engines return these as they are, no flattening needed."""
    return _is_tensor(out) or (isinstance(out, (list, tuple)) and all(_is_tensor(o) for o in out))


def default_outputs(names: list[str]) -> list[str]:
    """The outputs quality is judged on when the user names none: ``logits``, else ``last_hidden_state``, else the
    first; a model returning a tensor or a tuple of tensors is judged on all of them."""
    for p in PREFERRED:
        if p in names:
            return [p]
    if all(n == "output" or (n.startswith("output") and n[6:].isdigit()) for n in names):
        return list(names)
    return list(names[:1])


def select_outputs(names: list[str], wanted: tuple[str, ...] | list[str], where: str) -> list[int]:
    """Indices of ``wanted`` (default: `default_outputs`) among ``names``; an unknown name is a one-line error."""
    from planner.errors import ConfigError

    chosen = list(wanted) or default_outputs(names)
    missing = [w for w in chosen if w not in names]
    if missing:
        raise ConfigError(f"{where}: --output {','.join(missing)}: no such output; the model's outputs are "
                          f"{', '.join(names) or 'none'}")
    return [names.index(w) for w in chosen]


def output_kind_of(chosen: list[str]) -> str:
    """The output kind (the quality metrics it gets) of the outputs quality is judged on, when the user says none:
    ``embedding`` for hidden states and embeddings, else ``logits``."""
    return "embedding" if chosen and all(c in EMBEDDINGS for c in chosen) else "logits"


def judged_on(model_info: dict) -> str | None:
    """The sentence that says which outputs quality is judged on (for the console and the study's note); None for
    a model with a single output."""
    names, chosen = model_info.get("output_names") or [], model_info.get("quality_outputs") or []
    if len(names) < 2 and names == chosen:
        return None
    return (f"quality is judged on output {', '.join(chosen)} (of {', '.join(names)}; --output NAME picks others)"
            if chosen != names else f"quality is judged on all outputs ({', '.join(names)}; --output NAME picks some)")
