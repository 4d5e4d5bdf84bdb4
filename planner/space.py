"""Search spaces as data (search_spaces/*.yaml) and the one function that samples them.

`sample(trial, space, target, model_format)` is used both by the search (with a
live Optuna trial) and by export/rebuild (with `optuna.trial.FixedTrial(params)`),
so an exported engine is rebuilt by exactly the code that was measured.

Conditional parameters are named after what they depend on, so their value
space never changes within a study:
  backend                          which backend
  <backend>.<option>               that backend's options
  batch_size
  <backend>.quant                  quantization scheme among those the backend and target can run
  quant.<scheme>.<option>          that scheme's options (e.g. calibration method)
  prune.method, prune.ratio, prune.round_to, distill.steps
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

from planner.config import DistillConfig, PruneConfig, QuantConfig, TrialConfig, freeze_options
from planner.errors import ConfigError, did_you_mean
from planner.schemes import STRUCTURED_PRUNE_METHODS
from planner.yamlio import read_yaml, validate

Scalar = Union[bool, int, float, str]


class Param(BaseModel):
    """A searched value: ``{choices: [...]}`` or a range ``{low, high[, step][, log]}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    choices: Optional[list[Scalar]] = None
    low: Optional[float] = None
    high: Optional[float] = None
    step: Optional[float] = None
    log: bool = False
    integer: Optional[bool] = None  # default: integer when low/high/step are all whole numbers

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v):
        if isinstance(v, list):
            return {"choices": v}
        if isinstance(v, (bool, int, float, str)):
            return {"choices": [v]}
        return v

    @model_validator(mode="after")
    def _check(self):
        if self.choices is not None:
            if self.low is not None or self.high is not None:
                raise ValueError("give either 'choices' or 'low'/'high', not both")
            if not self.choices:
                raise ValueError("'choices' must not be empty")
        else:
            if self.low is None or self.high is None:
                raise ValueError("a range needs both 'low' and 'high' (or use 'choices')")
            if self.low > self.high:
                raise ValueError(f"low ({self.low}) > high ({self.high})")
            if self.log and self.low <= 0:
                raise ValueError("a log range needs low > 0")
        return self

    @property
    def is_int(self) -> bool:
        if self.integer is not None:
            return self.integer
        vals = [self.low, self.high] + ([self.step] if self.step is not None else [])
        return all(v is not None and float(v).is_integer() for v in vals)

    def values(self) -> list[Any] | None:
        """All values when finite, else None (for grid search and validation)."""
        if self.choices is not None:
            return list(self.choices)
        if self.step is not None:
            n = int(round((self.high - self.low) / self.step)) + 1  # type: ignore[operator]
            vals = [self.low + i * self.step for i in range(n)]  # type: ignore[operator]
            return [int(v) for v in vals] if self.is_int else [round(v, 10) for v in vals]
        if self.is_int:
            return list(range(int(self.low), int(self.high) + 1))  # type: ignore[arg-type]
        return None

    def suggest(self, trial, name: str, restrict: list[Any] | None = None):
        if self.choices is not None or restrict is not None:
            choices = restrict if restrict is not None else list(self.choices)  # type: ignore[arg-type]
            return choices[0] if len(choices) == 1 else trial.suggest_categorical(name, choices)
        if self.low == self.high:
            return int(self.low) if self.is_int else self.low  # type: ignore[arg-type]
        if self.is_int:
            return trial.suggest_int(name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)  # type: ignore[arg-type]
        return trial.suggest_float(name, self.low, self.high, step=self.step, log=self.log)  # type: ignore[arg-type]


class QuantSpace(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    schemes: list[str] = Field(default_factory=lambda: ["none"])
    options: dict[str, dict[str, Param]] = Field(default_factory=dict, description="scheme -> option -> Param")


class PruneSpace(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    methods: list[str] = Field(default_factory=lambda: ["none"])
    ratio: Param = Param(choices=[0.0])
    round_to: Param = Param(choices=[1])


class DistillSpace(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    steps: Param = Param(choices=[0])
    lr: Param = Param(choices=[1e-4])
    batch: Param = Param(choices=[16])
    max_seconds: Optional[float] = Field(default=None, gt=0, description="training time cap per trial (not searched)")


class Seed(BaseModel):
    """A deployment the study measures first, before the sampler explores: known-good points (an Olive-style
    recipe) that a short budget must not miss.  Unnamed dimensions are left to the sampler."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    backend: str
    options: dict[str, Scalar] = Field(default_factory=dict, description="backend options")
    quant: Optional[str] = None
    quant_options: dict[str, Scalar] = Field(default_factory=dict)
    batch_size: Optional[int] = None
    prune: dict[str, Scalar] = Field(default_factory=dict, description="method, ratio, round_to")
    distill: dict[str, Scalar] = Field(default_factory=dict, description="steps, lr, batch")


class SearchSpace(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    description: str = ""
    backends: dict[str, dict[str, Param]] = Field(description="backend -> option -> Param")
    batch_size: Param = Param(choices=[1])
    quantize: QuantSpace = Field(default_factory=QuantSpace)
    prune: PruneSpace = Field(default_factory=PruneSpace)
    distill: DistillSpace = Field(default_factory=DistillSpace)
    seeds: list[Seed] = Field(default_factory=list, description="deployments measured first, in order")

    @model_validator(mode="after")
    def _check(self):
        if not self.backends:
            raise ValueError("'backends' must name at least one backend")
        bs = self.batch_size.values()
        if bs is None or any((not float(b).is_integer()) or b < 1 for b in bs):
            raise ValueError("batch_size must be positive integers")
        return self


SPACES_DIR = Path(__file__).resolve().parent.parent / "search_spaces"


def builtin_spaces() -> dict[str, Path]:
    return {p.stem: p for p in sorted(SPACES_DIR.glob("*.yaml"))} if SPACES_DIR.is_dir() else {}


def load_space(ref: str | Path) -> SearchSpace:
    """Load and fully validate a search space (YAML path or built-in name)."""
    p = Path(ref)
    if not p.suffix and not p.exists():
        known = builtin_spaces()
        if str(ref) not in known:
            raise ConfigError(f"search space '{ref}': not a file nor a built-in space; {did_you_mean(str(ref), known)}")
        p = known[str(ref)]
    space = validate(SearchSpace, read_yaml(p), str(p))
    errors = check_space(space, str(p))
    if errors:
        raise ConfigError(errors)
    return space


def check_space(space: SearchSpace, source: str) -> list[str]:
    """Names the YAML schema cannot check: backends, their options, schemes, prune methods."""
    import planner.backends.registry as registry
    from planner.schemes import SCHEMES

    errors: list[str] = []
    for b, opts in space.backends.items():
        if b not in registry.all_backends():
            errors.append(f"{source}: backends.{b}: unknown backend; {did_you_mean(b, registry.all_backends())}")
            continue
        cls = registry.get(b)
        for k, p in opts.items():
            if k not in cls.options:
                errors.append(f"{source}: backends.{b}.{k}: unknown option; valid options: {', '.join(sorted(cls.options)) or 'none'}")
                continue
            # every value the space may give, checked by the backend's own declaration (`Backend.Options`)
            ends = p.choices if p.choices is not None else [int(x) if p.is_int else x for x in (p.low, p.high)]
            for v in ends:
                try:
                    cls.resolve_options({k: v})
                except ConfigError as e:
                    errors.extend(f"{source}: backends.{b}.{k}: {line}" for line in e.errors)
    for s in space.quantize.schemes:
        if s not in SCHEMES:
            errors.append(f"{source}: quantize.schemes: unknown scheme {s!r}; {did_you_mean(s, SCHEMES)}")
    for s, opts in space.quantize.options.items():
        if s not in SCHEMES:
            errors.append(f"{source}: quantize.options.{s}: unknown scheme; {did_you_mean(s, SCHEMES)}")
            continue
        valid_opts = SCHEMES[s].options
        for k, p in opts.items():
            if k not in valid_opts:
                errors.append(f"{source}: quantize.options.{s}.{k}: unknown option; valid options: {', '.join(sorted(valid_opts)) or 'none'}")
                continue
            for v in p.values() or []:
                if v not in valid_opts[k]:
                    errors.append(f"{source}: quantize.options.{s}.{k}: value {v!r} not allowed; valid choices: {', '.join(map(str, valid_opts[k]))}")
    from planner.schemes import PRUNE_METHODS

    for m in space.prune.methods:
        if m not in PRUNE_METHODS:
            errors.append(f"{source}: prune.methods: unknown method {m!r}; {did_you_mean(m, PRUNE_METHODS)}")
    ratios = space.prune.ratio.values()
    lo, hi = (min(ratios), max(ratios)) if ratios else (space.prune.ratio.low, space.prune.ratio.high)
    if lo is not None and (lo < 0 or (hi is not None and hi >= 1)):
        errors.append(f"{source}: prune.ratio: must lie in [0, 1)")
    for i, seed in enumerate(space.seeds):
        errors += [f"{source}: seeds[{i}].{e}" for e in _seed_errors(seed, space)]
    return errors


def _in(param: Param, value: Any) -> bool:
    vals = param.values()
    if vals is not None:
        return any(value == v and (type(value) is bool) == (type(v) is bool) for v in vals)
    return isinstance(value, (int, float)) and not isinstance(value, bool) and param.low <= value <= param.high  # type: ignore[operator]


def _seed_errors(seed: Seed, space: SearchSpace) -> list[str]:
    """A seed may name only what its space can sample: its backends, options, schemes and values."""
    if seed.backend not in space.backends:
        return [f"backend: {seed.backend!r} is not one of the space's backends ({', '.join(space.backends)})"]
    errors = []
    params = space.backends[seed.backend]
    for k, v in seed.options.items():
        if k not in params:
            errors.append(f"options.{k}: not searched for {seed.backend} (searched: {', '.join(params) or 'none'})")
        elif not _in(params[k], v):
            errors.append(f"options.{k}={v!r}: not among the space's values {params[k].values()}")
    if seed.quant is not None and seed.quant not in space.quantize.schemes:
        errors.append(f"quant: {seed.quant!r} is not one of the space's schemes ({', '.join(space.quantize.schemes)})")
    if seed.quant_options and seed.quant is None:
        errors.append("quant_options: given without quant (name the scheme they belong to)")
    qparams = space.quantize.options.get(seed.quant or "none", {})
    import planner.backends.registry as registry

    honours = registry.get(seed.backend).honours if seed.backend in registry.all_backends() else (lambda s, k: True)
    for k, v in seed.quant_options.items() if seed.quant is not None else ():
        if not honours(seed.quant, k):
            errors.append(f"quant_options.{k}: {seed.backend} does not act on it for {seed.quant} "
                          f"(it acts on: {', '.join(registry.get(seed.backend).scheme_options.get(seed.quant, ())) or 'none'})")
        elif k not in qparams:
            errors.append(f"quant_options.{k}: not searched for {seed.quant} (searched: {', '.join(qparams) or 'none'})")
        elif not _in(qparams[k], v):
            errors.append(f"quant_options.{k}={v!r}: not among the space's values {qparams[k].values()}")
    if seed.batch_size is not None and not _in(space.batch_size, seed.batch_size):
        errors.append(f"batch_size={seed.batch_size}: not among the space's {space.batch_size.values()}")
    fields = {"method": None, "ratio": space.prune.ratio, "round_to": space.prune.round_to}
    for k, v in seed.prune.items():
        if k not in fields:
            errors.append(f"prune.{k}: unknown; valid: method, ratio, round_to")
        elif k == "method" and v not in space.prune.methods:
            errors.append(f"prune.method={v!r}: not one of the space's methods ({', '.join(space.prune.methods)})")
        elif k != "method" and not _in(fields[k], v):  # type: ignore[arg-type]
            errors.append(f"prune.{k}={v!r}: not among the space's values")
    dfields = {"steps": space.distill.steps, "lr": space.distill.lr, "batch": space.distill.batch}
    for k, v in seed.distill.items():
        if k not in dfields:
            errors.append(f"distill.{k}: unknown; valid: steps, lr, batch")
        elif not _in(dfields[k], v):
            errors.append(f"distill.{k}={v!r}: not among the space's values")
    return errors


def seed_params(seed: Seed, space: SearchSpace, target, model_format: str, backends: list[str]) -> tuple[dict | None, str]:
    """The Optuna params that make `sample` draw ``seed`` (what it leaves open, the sampler fills in),
    or None and why the seed cannot run with this target/model."""
    if seed.backend not in backends:
        return None, f"backend {seed.backend} is not usable here"
    params: dict[str, Any] = {"backend": seed.backend}
    params.update({f"{seed.backend}.{k}": v for k, v in seed.options.items()})
    if seed.batch_size is not None:
        if seed.batch_size not in batch_sizes(space, target):
            return None, f"batch size {seed.batch_size} exceeds target max_batch_size {target.max_batch_size}"
        params["batch_size"] = seed.batch_size
    if seed.quant is not None:
        if seed.quant not in (schemes_for(seed.backend, space, target) or ["none"]):
            from planner.schemes import precision_of

            if precision_of(seed.quant) not in target.precisions:
                return None, (f"{seed.quant} needs precision {precision_of(seed.quant)}, which target '{target.name}' "
                              f"lacks (its precisions: {', '.join(target.precisions)})")
            return None, f"{seed.backend} cannot run {seed.quant} on target '{target.name}'"
        params[f"{seed.backend}.quant"] = seed.quant
        params.update({f"quant.{seed.quant}.{k}": v for k, v in seed.quant_options.items()})
    if seed.prune or seed.distill:
        if model_format != "torch" and seed.prune.get("method", "none") != "none":
            return None, "pruning needs a PyTorch model"
        params.update({f"prune.{k}": v for k, v in seed.prune.items()})
        params.update({f"distill.{k}": v for k, v in seed.distill.items()})
    return params, ""


# --------------------------------------------------------------------- sampling


def usable_backends(space: SearchSpace, target, model_format: str) -> tuple[list[str], dict[str, str]]:
    """Backends of the space this target and host can run, and why the others are left out."""
    import planner.backends.registry as registry

    ok, skipped = [], {}
    for b in space.backends:
        if b not in target.backends:
            skipped[b] = f"not allowed by target '{target.name}' (backends: {', '.join(target.backends)})"
            continue
        cls = registry.get(b)
        if target.device.kind not in cls.devices:
            skipped[b] = f"does not run on {target.device.kind}"
            continue
        if model_format == "onnx" and cls.input_format == "torch" and not cls.accepts_onnx:
            skipped[b] = "needs a PyTorch model"
            continue
        avail = cls.availability()
        if not avail.usable:
            skipped[b] = avail.detail
            continue
        ok.append(b)
    return ok, skipped


def schemes_for(backend: str, space: SearchSpace, target) -> list[str]:
    import planner.backends.registry as registry
    from planner.schemes import SCHEMES

    cls = registry.get(backend)
    return [
        s for s in space.quantize.schemes
        if s in SCHEMES and SCHEMES[s].precision in target.precisions and cls.runs_scheme(s, target.device.kind)
    ]


def batch_sizes(space: SearchSpace, target) -> list[int]:
    return [int(b) for b in (space.batch_size.values() or []) if int(b) <= target.max_batch_size]


def sample(trial, space: SearchSpace, target, model_format: str = "torch", backends: list[str] | None = None) -> TrialConfig:
    """Draw one TrialConfig.  Only combinations the target and backend can run are offered."""
    import planner.backends.registry as registry

    if backends is None:
        backends, skipped = usable_backends(space, target, model_format)
        if not backends:
            why = "; ".join(f"{b}: {r}" for b, r in skipped.items())
            raise ConfigError(f"search space '{space.name}': no backend usable on target '{target.name}' ({why})")
    backend = trial.suggest_categorical("backend", backends) if len(backends) > 1 else backends[0]
    options = {k: p.suggest(trial, f"{backend}.{k}") for k, p in space.backends[backend].items()}

    sizes = batch_sizes(space, target)
    if not sizes:
        raise ConfigError(f"search space '{space.name}': no batch size ≤ target max_batch_size {target.max_batch_size}")
    batch = int(space.batch_size.suggest(trial, "batch_size", restrict=sizes))

    schemes = schemes_for(backend, space, target) or ["none"]
    scheme = schemes[0] if len(schemes) == 1 else trial.suggest_categorical(f"{backend}.quant", schemes)
    honours = registry.get(backend).honours
    qopts = {k: p.suggest(trial, f"quant.{scheme}.{k}") for k, p in space.quantize.options.get(scheme, {}).items()
             if honours(scheme, k)}

    prune = PruneConfig()
    methods = space.prune.methods if model_format == "torch" else ["none"]
    method = methods[0] if len(methods) == 1 else trial.suggest_categorical("prune.method", methods)
    if method != "none":
        ratio = 0.0 if method == "2:4" else float(space.prune.ratio.suggest(trial, "prune.ratio"))
        round_to = int(space.prune.round_to.suggest(trial, "prune.round_to")) if method in STRUCTURED_PRUNE_METHODS else 1
        prune = PruneConfig(method=method, ratio=ratio, round_to=round_to)

    distill = DistillConfig()
    if model_format == "torch" and prune.active:
        steps = int(space.distill.steps.suggest(trial, "distill.steps"))
        if steps > 0:
            distill = DistillConfig(steps=steps, lr=float(space.distill.lr.suggest(trial, "distill.lr")),
                                    batch=int(space.distill.batch.suggest(trial, "distill.batch")),
                                    max_seconds=space.distill.max_seconds)

    return TrialConfig(
        backend=backend, batch_size=batch, backend_options=freeze_options(options),
        prune=prune, quant=QuantConfig(scheme=scheme, options=freeze_options(qopts)), distill=distill,
    )


def rebuild(params: dict[str, Any], space: SearchSpace, target, model_format: str = "torch") -> TrialConfig:
    """The TrialConfig of a past trial, from its Optuna params, by the same `sample` function."""
    import optuna

    backends = [params["backend"]] if "backend" in params else None
    return sample(optuna.trial.FixedTrial(params), space, target, model_format, backends=backends)
