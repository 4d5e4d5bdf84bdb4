"""ModelSpec: what the user asked to optimize, validated without importing torch.

Accepted references:
  * a zoo name: ``tiny-mlp``, ``resnet18``, ``bert-mini`` (see ``planner models``)
  * ``path/to/file.py:factory`` or ``package.module:factory`` returning an eval-mode ``nn.Module``
  * ``path/to/model.onnx``
  * ``path/to/model.yaml`` holding ``source`` plus optional ``inputs``, ``output_kind``, ``data``

The user's code is only ever run inside worker processes (see ``source.py``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from planner.errors import ConfigError, did_you_mean

DTYPES = ("float32", "float16", "int64", "int32", "bool")
OUTPUT_KINDS = ("auto", "logits", "embedding")


@dataclass(frozen=True)
class InputSpec:
    """One model input; axis 0 is the batch axis."""

    name: str
    shape: tuple[int, ...]  # without the batch axis
    dtype: str = "float32"
    low: int = 0  # integer inputs: values drawn from [low, high)
    high: int = 2

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype, "low": self.low, "high": self.high}

    @classmethod
    def from_dict(cls, d: dict) -> "InputSpec":
        return cls(d["name"], tuple(int(x) for x in d["shape"]), d.get("dtype", "float32"), int(d.get("low", 0)), int(d.get("high", 2)))


@dataclass(frozen=True)
class ModelSpec:
    ref: str  # as the user gave it (or the YAML's source)
    kind: Literal["zoo", "file", "module", "onnx"]
    name: str  # short name for experiment / registry names
    inputs: tuple[InputSpec, ...] = ()  # empty: the factory or zoo entry provides them
    output_kind: str = "auto"
    data: Optional[str] = None  # .npz with evaluation/calibration inputs (and optional labels)
    seed: int = 0
    extra: tuple = field(default=())
    evaluator: Optional[str] = None  # file.py:fn / module:fn returning task metrics (planner.measure.evaluator)
    evaluator_metric: Optional[str] = None  # NAME[:max|min]: the metric whose drop is the quality loss

    def to_dict(self) -> dict:
        return {
            "ref": self.ref, "kind": self.kind, "name": self.name,
            "inputs": [i.to_dict() for i in self.inputs], "output_kind": self.output_kind,
            "data": self.data, "seed": self.seed, "evaluator": self.evaluator, "evaluator_metric": self.evaluator_metric,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "ModelSpec":
        return cls(d["ref"], d["kind"], d["name"], tuple(InputSpec.from_dict(i) for i in d.get("inputs", ())),
                   d.get("output_kind", "auto"), d.get("data"), int(d.get("seed", 0)),
                   evaluator=d.get("evaluator"), evaluator_metric=d.get("evaluator_metric"))

    def with_evaluator(self, evaluator: str | None, metric: str | None) -> "ModelSpec":
        """This spec with a user evaluator (validated, not run); None keeps the current one."""
        import dataclasses

        if evaluator is None:
            if metric is not None and self.evaluator is None:
                raise ConfigError("--evaluator-metric needs --evaluator (or a model YAML with 'evaluator')")
            return dataclasses.replace(self, evaluator_metric=metric or self.evaluator_metric) if metric else self
        parse_metric(metric)
        return dataclasses.replace(self, evaluator=parse_evaluator(evaluator)[0], evaluator_metric=metric)


class _InputYAML(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    shape: list[int] = Field(description="shape without the batch axis")
    dtype: Literal["float32", "float16", "int64", "int32", "bool"] = "float32"
    low: int = 0
    high: int = 2


class _ModelYAML(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: str
    name: Optional[str] = None
    inputs: list[_InputYAML] = Field(default_factory=list)
    output_kind: Literal["auto", "logits", "embedding"] = "auto"
    data: Optional[str] = None
    seed: int = 0
    evaluator: Optional[str] = None
    evaluator_metric: Optional[str] = None


_MODULE_RE = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_]\w*$")


GOALS = ("max", "min")


def parse_evaluator(ref: str) -> tuple[str, str]:
    """(normalised ref, kind) for ``file.py:function`` or ``package.module:function``; checked without running it."""
    path, sep, name = ref.rpartition(":")
    if not sep or not name.isidentifier():
        raise ConfigError(f"--evaluator {ref!r}: expected file.py:function or package.module:function")
    if path.endswith(".py"):
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"--evaluator {ref}: file {path} not found")
        return f"{p.resolve()}:{name}", "file"
    if _MODULE_RE.match(ref):
        return ref, "module"
    raise ConfigError(f"--evaluator {ref!r}: expected file.py:function or package.module:function")


def parse_metric(text: str | None) -> tuple[str | None, str]:
    """``accuracy`` / ``accuracy:max`` / ``wer:min`` -> (name, goal); None -> (first metric, max)."""
    if not text:
        return None, "max"
    name, _, goal = text.partition(":")
    goal = goal or "max"
    if not name.strip() or goal not in GOALS:
        raise ConfigError(f"--evaluator-metric {text!r}: expected NAME, NAME:max (higher is better) or NAME:min")
    return name.strip(), goal


def parse_input_shapes(text: str) -> tuple[InputSpec, ...]:
    """``name:3x224x224:float32,ids:128:int64`` -> InputSpecs (batch axis excluded)."""
    out = []
    for i, part in enumerate(p for p in text.split(",") if p.strip()):
        bits = part.strip().split(":")
        if len(bits) not in (2, 3):
            raise ConfigError(f"--inputs: {part!r}: expected NAME:DIMxDIM[:DTYPE], e.g. x:3x224x224:float32")
        name, dims = bits[0], bits[1]
        dtype = bits[2] if len(bits) == 3 else "float32"
        if dtype not in DTYPES:
            raise ConfigError(f"--inputs: {part!r}: dtype {dtype!r}; {did_you_mean(dtype, DTYPES)}")
        try:
            shape = tuple(int(d) for d in dims.split("x") if d)
        except ValueError:
            raise ConfigError(f"--inputs: {part!r}: dimensions must be integers joined by 'x'") from None
        if any(d <= 0 for d in shape):
            raise ConfigError(f"--inputs: {part!r}: dimensions must be positive")
        out.append(InputSpec(name or f"input{i}", shape, dtype, 0, 2))
    return tuple(out)


def parse_model(ref: str, inputs: tuple[InputSpec, ...] = (), output_kind: str = "auto", data: str | None = None) -> ModelSpec:
    """Validate a model reference (syntax, file existence, zoo name) without running user code."""
    from planner.zoo import ZOO

    if output_kind not in OUTPUT_KINDS:
        raise ConfigError(f"--output-kind: {output_kind!r}; {did_you_mean(output_kind, OUTPUT_KINDS)}")
    if data is not None:
        dpath = data.rpartition(":")[0] if not data.endswith(".npz") and ":" in data else data
        if (data.endswith(".npz") or dpath.endswith(".py")) and not Path(dpath).is_file():
            raise ConfigError(f"--data {data}: file not found (expected an .npz of inputs, or file.py:function)")
        if not data.endswith(".npz") and ":" not in data:
            raise ConfigError(f"--data {data}: expected an .npz file or file.py:function / package.module:function")
    if ref.endswith((".yaml", ".yml")):
        from planner.yamlio import read_yaml, validate

        y = validate(_ModelYAML, read_yaml(ref), ref)
        base = Path(ref).resolve().parent
        src = y.source
        if (":" in src and src.split(":")[0].endswith(".py")) or src.endswith(".onnx"):
            src = str((base / src).resolve()) if not Path(src).is_absolute() else src
        d = y.data
        if d is not None and not Path(d).is_absolute():
            d = str((base / d).resolve())
        try:
            spec = parse_model(src, tuple(InputSpec(i.name, tuple(i.shape), i.dtype, i.low, i.high) for i in y.inputs) or inputs,
                               y.output_kind if y.output_kind != "auto" else output_kind, d or data)
        except ConfigError as e:
            raise ConfigError([f"{ref}: source: {line.removeprefix('--model ')}" for line in e.errors]) from None
        ev = y.evaluator
        if ev is not None and ev.partition(":")[0].endswith(".py") and not Path(ev.partition(":")[0]).is_absolute():
            ev = str((base / ev.partition(":")[0]).resolve()) + ":" + ev.partition(":")[2]
        out = ModelSpec(spec.ref, spec.kind, y.name or spec.name, spec.inputs, spec.output_kind, spec.data, y.seed)
        try:
            return out.with_evaluator(ev, y.evaluator_metric) if ev else out
        except ConfigError as e:
            raise ConfigError([f"{ref}: {line.lstrip('-')}" for line in e.errors]) from None
    if ref in ZOO:
        return ModelSpec(ref, "zoo", ref, inputs, output_kind, data)
    if ref.endswith(".onnx"):
        p = Path(ref)
        if not p.is_file():
            raise ConfigError(f"--model {ref}: ONNX file not found")
        return ModelSpec(str(p.resolve()), "onnx", p.stem, inputs, output_kind, data)
    if ":" in ref:
        path, _, factory = ref.rpartition(":")
        if path.endswith(".py"):
            p = Path(path)
            if not p.is_file():
                raise ConfigError(f"--model {ref}: file {path} not found")
            if not factory.isidentifier():
                raise ConfigError(f"--model {ref}: {factory!r} is not a Python function name")
            return ModelSpec(f"{p.resolve()}:{factory}", "file", p.stem, inputs, output_kind, data)
        if _MODULE_RE.match(ref):
            return ModelSpec(ref, "module", path.rsplit(".", 1)[-1], inputs, output_kind, data)
    raise ConfigError(
        f"--model {ref!r}: not a zoo model, a file.py:factory, a package.module:factory, an .onnx or a model .yaml; "
        f"zoo models: {', '.join(sorted(ZOO))}" + (f" (did you mean '{m}'?)" if (m := _close(ref, ZOO)) else "")
    )


def _close(name, choices):
    import difflib

    c = difflib.get_close_matches(name, list(choices), n=1)
    return c[0] if c else None
