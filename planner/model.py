"""ModelSpec: what the user asked to optimize, validated without importing torch.

Accepted references:
  * a zoo name: ``tiny-mlp``, ``resnet18``, ``bert-mini`` (see ``planner models``)
  * ``path/to/file.py:factory`` or ``package.module:factory`` returning an eval-mode ``nn.Module``
  * ``path/to/model.onnx``
  * ``hf:DIR``: a local Hugging Face model directory (``config.json`` and weights, as ``save_pretrained`` writes it)
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
    """One model input: its shape without the batch axis, and where the batch axis goes (None: the input has none,
    a scalar or a constant given once per call, such as a sample rate).  ``length_axis``: an axis of ``shape`` that
    holds a sequence padded to its size (token ids, an attention mask): a request may be shorter, padded with 0 after
    its end; served traffic with ``lengths: data`` sends each request at its own length (`planner.target.Traffic`)."""

    name: str
    shape: tuple[int, ...]  # without the batch axis
    dtype: str = "float32"
    low: int = 0  # integer inputs: values drawn from [low, high)
    high: int = 2
    batch_axis: Optional[int] = 0
    length_axis: Optional[int] = None  # an axis of `shape` (no batch axis) padded to its size; None: fixed

    def to_dict(self) -> dict:
        d = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype, "low": self.low, "high": self.high,
             "batch_axis": self.batch_axis}
        if self.length_axis is not None:
            d["length_axis"] = self.length_axis
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "InputSpec":
        return cls(d["name"], tuple(int(x) for x in d["shape"]), d.get("dtype", "float32"), int(d.get("low", 0)),
                   int(d.get("high", 2)), d.get("batch_axis", 0), d.get("length_axis"))

    def full_length_axis(self) -> int | None:
        """`length_axis` in the full shape (the batch axis in place)."""
        if self.length_axis is None:
            return None
        return self.length_axis + (1 if self.batch_axis is not None and self.batch_axis <= self.length_axis else 0)

    def full_shape(self, batch: int) -> tuple[int, ...]:
        """The shape the model takes at ``batch``."""
        if self.batch_axis is None:
            return self.shape
        return (*self.shape[:self.batch_axis], batch, *self.shape[self.batch_axis:])


def length_axes(inputs) -> dict[str, int]:
    """Each input's `InputSpec.length_axis` in the model's layout (full shape), for those that have one."""
    return {i.name: ax for i in inputs if (ax := i.full_length_axis()) is not None}


@dataclass(frozen=True)
class ModelSpec:
    ref: str  # as the user gave it (or the YAML's source)
    kind: Literal["zoo", "file", "module", "onnx", "hf"]
    name: str  # short name for experiment / registry names
    inputs: tuple[InputSpec, ...] = ()  # empty: the factory or zoo entry provides them
    output_kind: str = "auto"
    data: Optional[str] = None  # .npz with evaluation/calibration inputs (and optional labels)
    seed: int = 0
    extra: tuple = field(default=())
    evaluator: Optional[str] = None  # file.py:fn / module:fn returning task metrics (planner.measure.evaluator)
    evaluator_metric: Optional[str] = None  # NAME[:max|min]: the metric whose drop is the quality loss
    outputs: tuple[str, ...] = ()  # the outputs quality is judged on (planner.outputs names); () = the default
    task: Optional[str] = None  # hf: models: the transformers task (its Auto class) where the config names none

    def to_dict(self) -> dict:
        return {
            "ref": self.ref, "kind": self.kind, "name": self.name,
            "inputs": [i.to_dict() for i in self.inputs], "output_kind": self.output_kind,
            "data": self.data, "seed": self.seed, "evaluator": self.evaluator, "evaluator_metric": self.evaluator_metric,
            "outputs": list(self.outputs), "task": self.task,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "ModelSpec":
        return cls(d["ref"], d["kind"], d["name"], tuple(InputSpec.from_dict(i) for i in d.get("inputs", ())),
                   d.get("output_kind", "auto"), d.get("data"), int(d.get("seed", 0)),
                   evaluator=d.get("evaluator"), evaluator_metric=d.get("evaluator_metric"),
                   outputs=tuple(d.get("outputs") or ()), task=d.get("task"))

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
    batch_axis: Optional[int] = Field(0, ge=0, description="where the batch axis goes in the full shape; null: none")
    length_axis: Optional[int] = Field(None, ge=0, description="an axis of `shape` holding a sequence padded with 0 "
                                                               "to its size (token ids, a mask); null: fixed")


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
    outputs: list[str] = Field(default_factory=list, description="the outputs quality is judged on (default: logits, "
                                                                  "last_hidden_state or the first)")
    task: Optional[str] = None


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


INPUTS_SYNTAX = "NAME:DIMxDIM[:DTYPE][:batch=AXIS|none], e.g. x:3x224x224:float32, state:2x128:float32:batch=1, sr::int64:batch=none"


def parse_input_shapes(text: str) -> tuple[InputSpec, ...]:
    """``name:3x224x224:float32,ids:128:int64,state:2x128:float32:batch=1,sr::int64:batch=none`` -> InputSpecs.

    DIMS exclude the batch axis; ``batch=AXIS`` puts it at AXIS of the full shape (default 0), ``batch=none`` says
    the input has none (a scalar or a constant)."""
    out = []
    for i, part in enumerate(p for p in text.split(",") if p.strip()):
        bits = part.strip().split(":")
        axis: int | None = 0
        if len(bits) == 4 or (len(bits) == 3 and bits[2].startswith("batch=")):
            flag = bits.pop()
            value = flag.removeprefix("batch=")
            if not flag.startswith("batch=") or not (value == "none" or value.isdigit()):
                raise ConfigError(f"--inputs: {part!r}: {flag!r}: expected batch=AXIS or batch=none; {INPUTS_SYNTAX}")
            axis = None if value == "none" else int(value)
        if len(bits) not in (2, 3):
            raise ConfigError(f"--inputs: {part!r}: expected {INPUTS_SYNTAX}")
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
        if axis is not None and axis > len(shape):
            raise ConfigError(f"--inputs: {part!r}: batch={axis} is past the {len(shape) + 1} axes of the full shape")
        out.append(InputSpec(name or f"input{i}", shape, dtype, 0, 2, axis))
    return tuple(out)


# hf:DIR models: the transformers Auto class of each task (used where the directory's config names no architecture)
HF_TASKS = {
    "feature-extraction": "AutoModel",
    "text-classification": "AutoModelForSequenceClassification",
    "token-classification": "AutoModelForTokenClassification",
    "fill-mask": "AutoModelForMaskedLM",
    "question-answering": "AutoModelForQuestionAnswering",
    "image-classification": "AutoModelForImageClassification",
    "text-generation": "AutoModelForCausalLM",
}


def parse_model(ref: str, inputs: tuple[InputSpec, ...] = (), output_kind: str = "auto", data: str | None = None,
                outputs: tuple[str, ...] = (), task: str | None = None) -> ModelSpec:
    """Validate a model reference (syntax, file existence, zoo name) without running user code."""
    import dataclasses

    spec = _parse_model(ref, inputs, output_kind, data, tuple(outputs), task)
    if task is not None and spec.kind != "hf":
        raise ConfigError(f"--task {task}: only for hf:DIR models")
    if (spec.task or task) is not None and (spec.task or task) not in HF_TASKS:
        raise ConfigError(f"--task {spec.task or task!r}; {did_you_mean(spec.task or task, HF_TASKS)}")
    return dataclasses.replace(spec, outputs=spec.outputs or tuple(outputs), task=spec.task or task)


def _parse_model(ref: str, inputs: tuple[InputSpec, ...], output_kind: str, data: str | None,
                 outputs: tuple[str, ...], task: str | None) -> ModelSpec:
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
        elif src.startswith("hf:") and not Path(src[3:]).is_absolute():
            src = "hf:" + str((base / src[3:]).resolve())
        bad_axes = [f"{ref}: inputs: {i.name}: batch_axis {i.batch_axis} is past the {len(i.shape) + 1} axes of its full shape"
                    for i in y.inputs if i.batch_axis is not None and i.batch_axis > len(i.shape)]
        bad_axes += [f"{ref}: inputs: {i.name}: length_axis {i.length_axis} is past the {len(i.shape)} axes of its shape "
                     f"(without the batch axis)" for i in y.inputs if i.length_axis is not None and i.length_axis >= len(i.shape)]
        if bad_axes:
            raise ConfigError(bad_axes)
        d = y.data
        if d is not None and not Path(d).is_absolute():
            d = str((base / d).resolve())
        try:
            spec = parse_model(src, tuple(InputSpec(i.name, tuple(i.shape), i.dtype, i.low, i.high, i.batch_axis,
                                                    i.length_axis)
                                          for i in y.inputs) or inputs,
                               y.output_kind if y.output_kind != "auto" else output_kind, d or data,
                               tuple(y.outputs) or outputs, y.task or task)
        except ConfigError as e:
            raise ConfigError([f"{ref}: source: {line.removeprefix('--model ')}" for line in e.errors]) from None
        ev = y.evaluator
        if ev is not None and ev.partition(":")[0].endswith(".py") and not Path(ev.partition(":")[0]).is_absolute():
            ev = str((base / ev.partition(":")[0]).resolve()) + ":" + ev.partition(":")[2]
        out = ModelSpec(spec.ref, spec.kind, y.name or spec.name, spec.inputs, spec.output_kind, spec.data, y.seed,
                        outputs=spec.outputs, task=spec.task)
        try:
            return out.with_evaluator(ev, y.evaluator_metric) if ev else out
        except ConfigError as e:
            raise ConfigError([f"{ref}: {line.lstrip('-')}" for line in e.errors]) from None
    if ref in ZOO:
        return ModelSpec(ref, "zoo", ref, inputs, output_kind, data)
    if ref.startswith("hf:"):
        p = Path(ref[3:])
        if not ref[3:] or not p.is_dir():
            raise ConfigError(f"--model {ref}: no such directory (hf:DIR takes a local model directory, as "
                              "save_pretrained writes it; nothing is downloaded)")
        if not (p / "config.json").is_file():
            raise ConfigError(f"--model {ref}: {p / 'config.json'} not found (hf:DIR takes a directory that "
                              "save_pretrained wrote: config.json and its weights)")
        return ModelSpec(f"hf:{p.resolve()}", "hf", p.resolve().name, inputs, output_kind, data)
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
