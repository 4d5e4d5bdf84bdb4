"""Reading YAML data files into validated pydantic models, with every error at once."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from planner.errors import ConfigError

T = TypeVar("T")


def read_yaml(path: str | Path) -> dict:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: file not found")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{p}{where}: malformed YAML: {problem}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def validate(model_cls: type[T], data: dict, source: str) -> T:
    """Validate ``data`` into ``model_cls``; raise ConfigError listing every problem as 'source: field: message'."""
    from pydantic import ValidationError

    try:
        return model_cls.model_validate(data)  # type: ignore[attr-defined]
    except ValidationError as e:
        lines = []
        for err in e.errors():
            loc = ".".join(str(x) for x in err["loc"]) or "<root>"
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                allowed = _allowed_fields(model_cls, err["loc"][:-1])
                msg = "unknown key" + (f"; valid keys: {', '.join(allowed)}" if allowed else "")
            lines.append(f"{source}: {loc}: {msg}")
        raise ConfigError(lines) from None


def _allowed_fields(model_cls, loc) -> list[str]:
    """Best-effort list of valid keys at a location, for 'unknown key' messages."""
    cls = model_cls
    for part in loc:
        if isinstance(part, int):
            continue
        field = getattr(cls, "model_fields", {}).get(part)
        if field is None:
            return []
        ann = field.annotation
        args = getattr(ann, "__args__", ()) or ()
        nxt = next((a for a in (ann, *args) if hasattr(a, "model_fields")), None)
        if nxt is None:
            return []
        cls = nxt
    return sorted(getattr(cls, "model_fields", {}).keys())
