"""The backend protocol: compile a (transformed) model for one config, return a runtime.

Backends run inside the isolated worker process.  Module-level code here and in
every backend module must stay light: import torch/onnxruntime/tvm inside methods.
Failures are data: `compile` returns a `BuildResult` whose `error` is set, or
raises `CandidateFailed`; it never kills the study.
"""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from types import UnionType
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, ValidationError

from planner.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from planner.config import TrialConfig
    from planner.source import ModelSource
    from planner.target import Target


class Runtime(ABC):
    """A loaded, compiled engine ready to run batches."""

    device: str = "cpu"

    @abstractmethod
    def bind(self, inputs: dict[str, "np.ndarray"]) -> Callable[[], Any]:
        """Place ``inputs`` where the engine reads them; return a zero-argument call that runs
        one batch (what the timer times).  Host-to-device copies happen here, not in the call."""

    @abstractmethod
    def infer(self, inputs: dict[str, "np.ndarray"]) -> list["np.ndarray"]:
        """Run one batch and return the outputs as float32/numeric numpy arrays on the host."""

    def synchronize(self) -> None:
        """Wait for queued device work (GPU backends); no-op on CPU."""

    def timing_stream(self) -> Any:
        """The ``torch.cuda.Stream`` the bound call queues its work on, so the timer can record CUDA
        events around it; None: time with the host clock (CPU engines, or a runtime whose call
        returns only when its device work is done, such as ONNX Runtime's)."""
        return None

    def bind_host(self, inputs: dict[str, "np.ndarray"]) -> Callable[[], Any] | None:
        """A call that starts from host arrays and ends with the outputs in host memory: the
        host-to-device and device-to-host copies included.  None where the engine runs on the host
        (there are no copies to measure)."""
        return None

    def serving_instances(self, n: int) -> list[Callable[[dict[str, "np.ndarray"]], Any]]:
        """``n`` calls like `infer`, each an engine instance a server thread owns (its own infer request or
        session), built with the config's serving settings; a backend that declares `Backend.serving` overrides
        it.  The default serves one instance: this runtime."""
        if n != 1:
            raise NotImplementedError(f"{type(self).__name__} serves one instance (its backend declares no `serving`)")
        return [self.infer]

    def close(self) -> None:
        """Release resources."""


@dataclass
class BuildResult:
    runtime: Runtime | None = None
    artifacts: list[Path] = field(default_factory=list)  # engine files to log/export
    compile_seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)  # backend facts for the manifest
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.runtime is not None


class BackendOptions(BaseModel):
    """A backend's own options, declared once as a pydantic model: one field per option, its type or its
    choices (``Literal[...]``), its default and its description.  Validation, the defaults a trial fills in,
    the values a search space may name (`Backend.options`) and the docs table (`options_table`) all read it.
    Strict: ``"4"`` is not 4 and ``True`` is not 1.  An option that can change a deployment's speed by an order of
    magnitude (tuning, a compile mode, an execution provider) is declared ``Field(..., json_schema_extra=DECISIVE)``:
    trials that differ in it are never judged by each other's early exit (`Backend.decisive_options`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


DECISIVE = {"decisive": True}  # json_schema_extra of an option that can change latency by an order of magnitude


def option_values(field) -> Any:
    """What a search space may give one option: a tuple of its choices (a ``Literal`` or ``bool``), else its
    type (``int``, ``float``, ``str``) for an open range."""
    ann = field.annotation
    if get_origin(ann) in (Union, UnionType):  # Optional[...]: None means "the target decides"
        ann = next(a for a in get_args(ann) if a is not type(None))
    if get_origin(ann) is Literal:
        return tuple(get_args(ann))
    if ann is bool:
        return (False, True) if field.default is False else (True, False)
    return ann


@dataclass(frozen=True)
class Serving:
    """What a backend's engine offers a server (planner.measure.serving), declared once on its class: what one
    instance is, what the threads per instance set, and whether it builds an engine for the batches a dynamic
    batcher forms (a dynamic batch axis).  The search samples instances, threads and batching only where declared."""

    instance: str  # e.g. "an OpenVINO stream with its own infer request"
    threads: str  # e.g. "INFERENCE_NUM_THREADS / NUM_STREAMS"
    dynamic_batch: bool = True


@dataclass(frozen=True)
class Availability:
    usable: bool
    detail: str  # version when usable, install hint otherwise


class Backend(ABC):
    """One compiler/runtime.  Class attributes are the capability declaration."""

    # True: `compile` takes ``batch_sizes=`` (the batch sizes the search may deploy), e.g. for an engine
    # whose optimization profile fixes the batch range it accepts (TensorRT)
    profile_batch_sizes: ClassVar[bool] = False
    name: ClassVar[str]
    modules: ClassVar[tuple[str, ...]] = ()  # Python modules it needs
    # whether the study's worker fork server may import `modules` before any job (planner.measure.forkserver);
    # False when importing them starts a thread (a forked worker would lack it) or touches a device
    preload: ClassVar[bool] = True
    # module -> the pip distribution that provides it (absent: the module's own name), for versions and hints
    distributions: ClassVar[dict[str, str]] = {}
    pip_extra: ClassVar[str | None] = None  # the pyproject extra that installs it: pip install 'planner[<extra>]'
    install_hint: ClassVar[str] = ""  # how to install it, when `pip_extra` does not say it all
    # the deployable engine's files in the trial's work dir (the first is the main file `planner verify` loads);
    # empty: the backend leaves no engine to export
    engine_files: ClassVar[tuple[str, ...]] = ()
    # a one-file engine it writes instead, for a model its `engine_files` cannot hold (torch: TorchScript
    # ``model.ts`` where torch.export fails, e.g. torch's dynamic int8 Linear); None: none
    fallback_engine: ClassVar[str | None] = None
    # the head line of a Triton config.pbtxt for its engine ('platform: "onnxruntime_onnx"', 'backend: "openvino"');
    # None: the engine runs in Triton's Python backend around `load_artifact`
    triton: ClassVar[str | None] = None
    # quantization schemes its LLM decoder runtime implements (planner.llm.runtimes); None: no decoder runtime
    decoder_schemes: ClassVar[tuple[str, ...] | None] = None
    decoder_note: ClassVar[str] = ""  # why there is no decoder runtime (shown when a decoder study asks for it)
    decoder_only: ClassVar[bool] = False  # True: it builds LLM decoders only (a study without a workload fails it)
    devices: ClassVar[tuple[str, ...]] = ("cpu",)
    input_format: ClassVar[str] = "torch"  # "torch" (nn.Module) or "onnx"
    quant_schemes: ClassVar[tuple[str, ...]] = ("none",)
    # scheme -> the device kinds where this backend implements it (absent: wherever the scheme runs, per SCHEMES)
    scheme_devices: ClassVar[dict[str, tuple[str, ...]]] = {}
    # scheme -> the scheme options (planner.schemes.SCHEMES[scheme].options) this backend acts on; absent:
    # all of them.  Only these are sampled, so a label never shows an option the engine ignored.
    scheme_options: ClassVar[dict[str, tuple[str, ...]]] = {}
    accepts_onnx: ClassVar[bool] = False  # a torch-input backend that can also import ONNX files
    # who quantizes its models, when backends share one implementation (the same scheme and options give the same
    # quantized model, e.g. "torch": planner's torch transforms); None: its own.  The search's hopeless rule
    # (planner.search.feasibility) carries a quantization's loss across the backends that share it
    quantizer: ClassVar[str | None] = None
    # its quantized weights follow its own formats (llama.cpp's GGUF types), not the scheme's options: the hopeless
    # rule never carries a data-free scheme's loss between it and another quantizer (`Scheme.data_free`)
    own_weight_formats: ClassVar[bool] = False
    # its options: the one declaration (a `BackendOptions` subclass; none by default)
    Options: ClassVar[type[BackendOptions]] = BackendOptions
    # derived from `Options` (never written by hand): option name -> its choices (tuple, default first) or its type
    options: ClassVar[dict[str, Any]] = {}
    # how its engine is served under traffic (instances, threads, dynamic batching); None: one instance, no batching
    serving: ClassVar[Serving | None] = None
    # its engine, built from the ONNX export with each input's `length_axis` dynamic (`ModelSource.variable_length`),
    # takes requests shorter than the model's input length (traffic ``lengths: data``); False: they are padded to it
    variable_length: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "options" in cls.__dict__:
            raise TypeError(f"{cls.__name__}: declare its options as `class Options(BackendOptions)` (pydantic fields "
                            "with defaults), not as an `options` dict: `options` is derived from `Options`")
        cls.options = {k: option_values(f) for k, f in cls.Options.model_fields.items()}

    @classmethod
    def decisive_options(cls) -> tuple[str, ...]:
        """The options declared ``DECISIVE``: a slow region (`planner.search.feasibility.slow`) keeps them fixed."""
        return tuple(k for k, f in cls.Options.model_fields.items() if (f.json_schema_extra or {}).get("decisive"))

    @classmethod
    def resolve_options(cls, opts: dict[str, Any]) -> dict[str, Any]:
        """``opts`` with every default filled in; `ConfigError` with one line per bad option, naming the valid
        values."""
        try:
            return cls.Options.model_validate(dict(opts)).model_dump()
        except ValidationError as e:
            raise ConfigError([_option_error(cls, err) for err in e.errors()]) from None

    @classmethod
    def install_command(cls) -> str:
        """What a user runs to make this backend usable."""
        if cls.install_hint:
            return cls.install_hint
        if cls.pip_extra:
            return f"pip install 'planner[{cls.pip_extra}]'"
        return "pip install " + " ".join(cls.distributions.get(m, m) for m in cls.modules)

    @classmethod
    def availability(cls) -> Availability:
        missing = [m for m in cls.modules if importlib.util.find_spec(m) is None]
        if missing:
            return Availability(False, f"missing {', '.join(missing)}: {cls.install_command()}")
        return Availability(True, cls.version())

    @classmethod
    def main_engine_names(cls) -> tuple[str, ...]:
        """The names its main engine file may have: ``engine_files[0]``, then its `fallback_engine`."""
        return cls.engine_files[:1] + ((cls.fallback_engine,) if cls.fallback_engine else ())

    @classmethod
    def load_artifact(cls, engine_dir: Path, batch: int, device: str) -> Runtime:
        """Load the engine files this backend wrote into ``engine_dir`` (an exported bundle's engine folder)
        with the engine's own runtime, as `planner verify` and the Triton Python backend do."""
        raise NotImplementedError(f"{cls.name} has no exportable engine")

    @classmethod
    def describe_engine(cls, rt: Runtime) -> dict[str, Any]:
        """Facts of a loaded engine a Triton config needs and the files do not state (e.g. its tensors)."""
        return {}

    @classmethod
    def triton_parameters(cls, engine_dir: Path, gpu: bool, notes: list[str]) -> str:
        """Lines for its Triton ``config.pbtxt`` that carry the measured engine settings (session options,
        compile properties) from the files in ``engine_dir``; notes for what Triton cannot reproduce."""
        return ""

    @classmethod
    def version(cls) -> str:
        from importlib.metadata import PackageNotFoundError, version

        out = []
        for m in cls.modules:
            dist = cls.distributions.get(m, m)
            try:
                out.append(f"{dist} {version(dist)}")
            except PackageNotFoundError:
                out.append(m)
        return ", ".join(out)

    @classmethod
    def scheme_device_kinds(cls, scheme: str) -> tuple[str, ...]:
        """The device kinds where this backend implements quantization ``scheme`` (empty: nowhere)."""
        from planner.schemes import SCHEMES

        if scheme not in cls.quant_schemes or scheme not in SCHEMES:
            return ()
        return cls.scheme_devices.get(scheme, SCHEMES[scheme].devices)

    @classmethod
    def honours(cls, scheme: str, option: str) -> bool:
        """Whether this backend acts on quantization ``scheme``'s ``option`` (so the search samples it)."""
        names = cls.scheme_options.get(scheme)
        return names is None or option in names

    @classmethod
    def runs_scheme(cls, scheme: str, device: str) -> bool:
        """Whether this backend implements quantization ``scheme`` on device kind ``device``."""
        return device in cls.scheme_device_kinds(scheme)

    @classmethod
    def check(cls, cfg: "TrialConfig", target: "Target", model_format: str) -> str | None:
        """Why this config cannot run here (None when it can).  Called before compiling."""
        if target.device.kind not in cls.devices:
            return f"{cls.name} does not run on {target.device.kind}"
        if model_format == "onnx" and cls.input_format == "torch" and not cls.accepts_onnx:
            return f"{cls.name} needs a PyTorch model; this model is an ONNX file"
        if cfg.quant.scheme not in cls.quant_schemes:
            return f"{cls.name} does not implement quantization scheme {cfg.quant.scheme!r}"
        from planner.schemes import SCHEMES

        scheme = SCHEMES.get(cfg.quant.scheme)
        if scheme and scheme.precision not in target.precisions:
            return (f"{cfg.quant.scheme} needs precision {scheme.precision}, which target '{target.name}' lacks "
                    f"(its precisions: {', '.join(target.precisions)})")
        if scheme and not cls.runs_scheme(cfg.quant.scheme, target.device.kind):
            where = ", ".join(cls.scheme_device_kinds(cfg.quant.scheme))
            return f"{cls.name} implements {cfg.quant.scheme} on {where} only, not {target.device.kind}"
        if (cfg.prune.active or cfg.distill.active) and model_format == "onnx":
            return "pruning and distillation need a PyTorch model"
        try:
            cls.resolve_options(cfg.options())
        except ConfigError as e:
            return "; ".join(e.errors)
        return None

    @abstractmethod
    def compile(self, source: "ModelSource", cfg: "TrialConfig", target: "Target", workdir: Path) -> BuildResult:
        """Build an engine for ``cfg`` in ``workdir``; artifacts are files under it."""


def _option_error(cls: type[Backend], err: dict) -> str:
    """One line for one pydantic error of ``cls.Options``: the option, the value, what is valid."""
    key = ".".join(str(x) for x in err.get("loc", ())) or "?"
    if err.get("type") == "extra_forbidden" or key not in cls.Options.model_fields:
        return f"{cls.name} option {key!r}: unknown; valid: {', '.join(cls.options) or 'none'}"
    valid = cls.options[key]
    what = ("valid values: " + ", ".join(map(str, valid))) if isinstance(valid, tuple) else \
        "must be " + _values_text(cls, key)
    return f"{cls.name} option {key}={err.get('input')!r}: {what}"


_BOUND = {"Ge": "≥", "Gt": ">", "Le": "≤", "Lt": "<"}


def _values_text(cls: type[Backend], key: str) -> str:
    """What option ``key`` takes, in words: its choices, or its type with its bounds."""
    valid = cls.options[key]
    if isinstance(valid, tuple):
        return ", ".join(f"`{v}`" for v in valid)
    field = cls.Options.model_fields[key]
    bounds = [f"{_BOUND[type(m).__name__]} {getattr(m, type(m).__name__.lower())}" for m in field.metadata
              if type(m).__name__ in _BOUND]
    return ("an " if valid.__name__[0] in "aeiou" else "a ") + valid.__name__ + (f" {', '.join(bounds)}" if bounds else "")


def options_table(cls: type[Backend]) -> list[tuple[str, str, str, str]]:
    """(option, values, default, description) for each of a backend's options, as docs/backends.md shows them."""
    return [(k, _values_text(cls, k), f"`{f.default}`", f.description or "")
            for k, f in cls.Options.model_fields.items()]
