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
  serving.instances, serving.threads, serving.max_batch, serving.max_queue_delay_us   (only with traffic)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

from planner.config import DistillConfig, PruneConfig, QuantConfig, ServingConfig, TrialConfig, freeze_options
from planner.errors import ConfigError, did_you_mean
from planner.schemes import SCHEMES, STRUCTURED_PRUNE_METHODS
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


class ServingSpace(BaseModel):
    """Serving parameters, sampled only when the target declares traffic and only for a backend that declares
    `Backend.serving` (others are served as one instance without batching)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    instances: Param = Param(choices=[1, 2, 4])  # capped at the target's threads
    threads: Param = Param(choices=[0])  # per instance; 0: the target's threads shared out among the instances
    max_batch: Param = Param(choices=[1, 4, 8])  # requests per engine call (1: no dynamic batching)
    max_queue_delay_us: Param = Param(choices=[500, 2000])  # sampled only with max_batch > 1


BEST = "best"  # a seed's backend: the host's best engine (`planner.backends.registry.best_engine`)


class Seed(BaseModel):
    """A deployment the study measures first, before the sampler explores: known-good points (an Olive-style
    recipe) that a short budget must not miss.  Backend and scheme options it leaves open take the engine's and the
    scheme's own defaults (where the space's values include them); other unnamed dimensions are left to the sampler."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    backend: str = Field(description=f"a backend of the space, or {BEST!r}: the host's best engine the study can use "
                                     "(planner.backends.registry.BEST_ENGINES), at its own defaults")
    options: dict[str, Scalar] = Field(default_factory=dict, description="backend options")
    quant: Optional[str] = None
    quant_options: dict[str, Scalar] = Field(default_factory=dict)
    batch_size: Optional[int] = None
    prune: dict[str, Scalar] = Field(default_factory=dict, description="method, ratio, round_to")
    distill: dict[str, Scalar] = Field(default_factory=dict, description="steps, lr, batch")
    serving: dict[Literal["instances", "threads", "max_batch", "max_queue_delay_us"], int] = Field(
        default_factory=dict, description="how it is served, when the target declares traffic (ignored otherwise)")


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
    seed_order: Literal["cheap_first", "as_written"] = Field(
        default="cheap_first", description="cheap_first: seeds that distill run after the others (by steps); "
                                           "as_written: in the order listed")
    serving: ServingSpace = Field(default_factory=ServingSpace, description="searched when the target declares traffic")

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
    for name, least in (("instances", 1), ("threads", 0), ("max_batch", 1), ("max_queue_delay_us", 0)):
        p = getattr(space.serving, name)
        vals = p.values()
        if vals is None or any(isinstance(v, bool) or not float(v).is_integer() or v < least for v in vals):
            errors.append(f"{source}: serving.{name}: must be whole numbers ≥ {least}")
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
    if seed.backend == BEST:
        return _best_seed_errors(seed, space)
    if seed.backend not in space.backends:
        return [f"backend: {seed.backend!r} is not one of the space's backends ({', '.join(space.backends)}) "
                f"nor {BEST!r} (the host's best engine)"]
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
    return errors + _common_seed_errors(seed, space)


def _best_seed_errors(seed: Seed, space: SearchSpace) -> list[str]:
    """A `best` seed runs the resolved engine at its own defaults: no options; a scheme of the space."""
    errors = []
    if seed.options:
        errors.append(f"options: a {BEST!r} seed runs the engine's own defaults; name a backend of the space "
                      f"({', '.join(space.backends)}) to set its options")
    if seed.quant_options:
        errors.append(f"quant_options: a {BEST!r} seed takes none (which options an engine acts on depends on it)")
    if seed.quant is not None and seed.quant not in space.quantize.schemes:
        errors.append(f"quant: {seed.quant!r} is not one of the space's schemes ({', '.join(space.quantize.schemes)})")
    return errors + _common_seed_errors(seed, space)


def _common_seed_errors(seed: Seed, space: SearchSpace) -> list[str]:
    errors = []
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


def seed_cost(seed: Seed, space: SearchSpace) -> int:
    """How expensive a seed is to measure, as the distillation steps it asks for (a pruned seed that leaves
    the steps open counts the space's most); 0 for one without pruning."""
    if seed.prune.get("method", "none") == "none" and not seed.distill:
        return 0
    if "steps" in seed.distill:
        return int(seed.distill["steps"])
    steps = space.distill.steps.values()
    return int(max(steps) if steps else space.distill.steps.high or 0)


def ordered_seeds(space: SearchSpace) -> list[tuple[int, Seed]]:
    """(index, seed) in the order a study measures them: cheap first (a short study does not spend its budget
    on long distillation before the deployments that are seconds away), unless ``seed_order: as_written``."""
    pairs = list(enumerate(space.seeds))
    if space.seed_order == "as_written":
        return pairs
    return sorted(pairs, key=lambda p: seed_cost(p[1], space))


def seed_params(seed: Seed, space: SearchSpace, target, model_format: str, backends: list[str]) -> tuple[dict | None, str]:
    """The Optuna params that make `sample` draw ``seed``, or None and why the seed cannot run with this
    target/model.  A `best` seed takes the first engine of `planner.backends.registry.BEST_ENGINES` among
    ``backends``.  Backend and scheme options the seed leaves open take the engine's and the scheme's own defaults
    where the space searches them and has the default among its values; the rest it leaves open (batch size,
    pruning, distillation, serving) the sampler fills in."""
    import planner.backends.registry as registry

    backend = seed.backend
    if backend == BEST:
        backend = registry.best_engine(target.device.kind, backends)
        if backend is None:
            return None, (f"no engine of the host's best ({', '.join(registry.BEST_ENGINES.get(target.device.kind, ()))}) "
                          f"is usable here")
    elif backend not in backends:
        return None, f"backend {backend} is not usable here"
    # what a seed leaves open of its engine, it takes at the engine's own defaults: a seed stands for a deployment a
    # user of that engine would run (digits-cnn: ONNX Runtime's seed drew graph_optimization_level 'basic' and timed
    # 40 us where the default 'all' takes 24 us, experiments/results/budget-2026-12-06-*)
    defaults = registry.get(backend).resolve_options({})
    options = {k: defaults[k] for k, p in space.backends[backend].items() if k in defaults and _in(p, defaults[k])}
    options.update(seed.options)
    params: dict[str, Any] = {"backend": backend}
    params.update({f"{backend}.{k}": v for k, v in options.items()})
    if seed.batch_size is not None:
        if seed.batch_size not in batch_sizes(space, target):
            if seed.batch_size > target.max_batch_size:
                return None, f"batch size {seed.batch_size} exceeds target max_batch_size {target.max_batch_size}"
            return None, f"batch size {seed.batch_size} is not among this study's batch sizes {batch_sizes(space, target)}"
        params["batch_size"] = seed.batch_size
    if seed.quant is not None:
        if seed.quant not in (schemes_for(backend, space, target) or ["none"]):
            from planner.schemes import precision_of

            if precision_of(seed.quant) not in target.precisions:
                return None, (f"{seed.quant} needs precision {precision_of(seed.quant)}, which target '{target.name}' "
                              f"lacks (its precisions: {', '.join(target.precisions)})")
            return None, f"{backend} cannot run {seed.quant} on target '{target.name}'"
        params[f"{backend}.quant"] = seed.quant
        qdefaults = {k: vals[0] for k, vals in SCHEMES[seed.quant].options.items()} if seed.quant in SCHEMES else {}
        qopts = {k: qdefaults[k] for k, p in space.quantize.options.get(seed.quant, {}).items()
                 if k in qdefaults and _in(p, qdefaults[k])}
        qopts.update(seed.quant_options)
        params.update({f"quant.{seed.quant}.{k}": v for k, v in qopts.items()})
    if seed.prune or seed.distill:
        if model_format != "torch" and seed.prune.get("method", "none") != "none":
            return None, "pruning needs a PyTorch model"
        if "method" in seed.prune and seed.prune["method"] not in space.prune.methods:
            return None, f"pruning method {seed.prune['method']} does not apply to this model (left out of the space)"
        params.update({f"prune.{k}": v for k, v in seed.prune.items()})
        params.update({f"distill.{k}": v for k, v in seed.distill.items()})
    if seed.serving and getattr(target, "traffic", None) is not None:  # e.g. a server's own default configuration
        for k, v in seed.serving.items():
            allowed = getattr(space.serving, k).values()
            if allowed and v not in allowed:
                return None, f"serving.{k}={v} is not among the space's serving.{k} values {allowed}"
        params.update({f"serving.{k}": v for k, v in seed.serving.items()})
    return params, ""


def probe_ratio(space: SearchSpace) -> float:
    """The pruning ratio a study tries each method at once when it prepares: the space's largest."""
    vals = space.prune.ratio.values()
    hi = max(vals) if vals else space.prune.ratio.high
    return float(hi) if hi and 0 < hi < 1 else 0.5


def drop_prune_methods(space: SearchSpace, methods: list[str]) -> SearchSpace:
    """``space`` without the pruning ``methods`` (those that cannot apply to the model); 'none' stays searched."""
    kept = [m for m in space.prune.methods if m not in methods] or ["none"]
    return space.model_copy(update={"prune": space.prune.model_copy(update={"methods": kept})})


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


def pruned_widths(widths: dict | None, prune: PruneConfig) -> list[int]:
    """The input widths of the layers ``prune`` narrows, predicted from the model's `widths` (the study's
    ``model_info["prune_widths"]``, `planner.transforms.prune.transformer_widths`): each attention output
    projection takes kept heads x head_dim, each FFN output projection the kept neurons.  [] when unknown."""
    from planner.config import round_keep

    if not widths or not prune.active or prune.method not in STRUCTURED_PRUNE_METHODS:
        return []
    out = [round_keep(int(h), prune.ratio) * int(hd) for h, hd in widths.get("heads", [])]
    return out + [round_keep(int(d), prune.ratio, prune.round_to) for d in widths.get("ffn", [])]


def fit_group_size(value: Any, param: Param, dims: list[int]) -> Any:
    """A group size that divides every pruned width in ``dims`` (int4 weight-only quantizes groups of input
    channels; NNCF refuses a group size that does not divide a layer's): ``value`` when it does, else the
    largest of the space's values below it that does, else the smallest that does, else ``value`` (none fits).
    Deterministic in (value, space, dims), so a trial's config is rebuilt as it was searched."""
    if not dims or all(int(d) % int(value) == 0 for d in dims):
        return value
    fits = sorted(int(v) for v in (param.values() or []) if all(int(d) % int(v) == 0 for d in dims))
    below = [v for v in fits if v < int(value)]
    return below[-1] if below else (fits[0] if fits else value)


def kept_units(prune: PruneConfig, widths: dict | None) -> list[tuple[int, int]]:
    """(width, kept) of each layer ``prune``'s structured pruning narrows, in the order of the model's `widths`
    (channels, heads per attention module, FFN neurons): what `planner.transforms.prune` keeps
    (`planner.config.round_keep`).  [] when unknown or not structured."""
    from planner.config import round_keep

    if not widths or not prune.active or prune.method not in STRUCTURED_PRUNE_METHODS:
        return []
    return ([(int(n), round_keep(int(n), prune.ratio, prune.round_to)) for n in widths.get("channels", [])]
            + [(int(h), round_keep(int(h), prune.ratio)) for h, _ in widths.get("heads", [])]
            + [(int(d), round_keep(int(d), prune.ratio, prune.round_to)) for d in widths.get("ffn", [])])


def pruned_network(prune: PruneConfig, widths: dict | None) -> tuple | None:
    """What ``prune`` makes of the model whose prunable widths are ``widths``: the norm its units are ranked by
    (`planner.schemes.PRUNE_NORMS`) and the units kept per layer.  Two prunings with the same value build the same
    network (l1 at 0.5 and at 0.6 keep 16 of 32 channels at round_to 8; on a transformer ``heads`` is ``l1``), so a
    config is measured once (`planner.search.trials`).  None when unknown or not structured."""
    from planner.schemes import PRUNE_NORMS

    kept = kept_units(prune, widths)
    return ("norm", PRUNE_NORMS[prune.method], "kept", tuple(k for _, k in kept)) if kept else None


def prunes_nothing(cfg: TrialConfig, widths: dict | None) -> str | None:
    """Why ``cfg``'s structured pruning would remove nothing from the model whose prunable widths are ``widths``
    (every layer keeps all its channels, heads and neurons at that ratio and round_to: the unpruned model, with a
    distillation on top), known before any worker starts; None when it removes something or is unknown."""
    p = cfg.prune
    kept = kept_units(p, widths)
    if not kept or any(k < n for n, k in kept):
        return None
    sizes = sorted({n for n, _ in kept})
    return (f"prune {p.method} {p.ratio:g} at round_to {p.round_to} keeps every unit of this model's prunable layers "
            f"(widths {sizes[:6]}): nothing is pruned; the unpruned model is its own candidate")


def shape_misfit(cfg: TrialConfig, widths: dict | None) -> str | None:
    """Why ``cfg`` cannot compile for the pruned shapes (a group size that divides no pruned width; the space
    offered none that does, `fit_group_size`), known before any worker starts; None when it can or is unknown."""
    g = cfg.quant.opts().get("group_size")
    dims = pruned_widths(widths, cfg.prune) if g else []
    bad = sorted({d for d in dims if int(d) % int(g) != 0})
    if not bad:
        return None
    return (f"{cfg.quant.scheme} group_size {g} does not divide the pruned layer widths {bad[:4]} "
            f"({cfg.prune.method} {cfg.prune.ratio:g}, round_to {cfg.prune.round_to}); no group size of the space does")


def sample(trial, space: SearchSpace, target, model_format: str = "torch", backends: list[str] | None = None,
           widths: dict | None = None) -> TrialConfig:
    """Draw one TrialConfig.  Only combinations the target and backend can run are offered.  ``widths`` (the
    model's prunable widths, `pruned_widths`) lets a group-size option follow the pruned shapes."""
    import planner.backends.registry as registry

    if backends is None:
        backends, skipped = usable_backends(space, target, model_format)
        if not backends:
            why = "; ".join(f"{b}: {r}" for b, r in skipped.items())
            raise ConfigError(f"search space '{space.name}': no backend usable on target '{target.name}' ({why})")
    backend = trial.suggest_categorical("backend", backends) if len(backends) > 1 else backends[0]
    options = {k: p.suggest(trial, f"{backend}.{k}") for k, p in space.backends[backend].items()}

    traffic = getattr(target, "traffic", None)
    if traffic is not None:  # requests come as the traffic sends them: the server forms the batches
        batch = int(traffic.request_batch)
    else:
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

    if "group_size" in qopts and prune.active:  # a group size the pruned layers cannot take is not measured
        qopts["group_size"] = fit_group_size(qopts["group_size"], space.quantize.options[scheme]["group_size"],
                                             pruned_widths(widths, prune))

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
        serving=sample_serving(trial, space, target, backend) if traffic is not None else None,
    )


def sample_serving(trial, space: SearchSpace, target, backend: str) -> ServingConfig:
    """The serving config of a trial under traffic: instances (at most the target's threads), threads per
    instance, and dynamic batching (requests per call within the target's max_batch_size), as far as the
    backend's `Backend.serving` declares them; parameters ``serving.<name>``."""
    import planner.backends.registry as registry

    decl = registry.get(backend).serving
    if decl is None:
        return ServingConfig()
    sv = space.serving
    n_threads = target.thread_count()
    inst = [int(v) for v in (sv.instances.values() or [1]) if 1 <= int(v) <= n_threads] or [1]
    instances = int(sv.instances.suggest(trial, "serving.instances", restrict=inst))
    threads = int(sv.threads.suggest(trial, "serving.threads"))
    max_batch, delay = 1, 0
    if decl.dynamic_batch:
        req = target.traffic.request_batch
        mb = [int(v) for v in (sv.max_batch.values() or [1]) if int(v) * req <= target.max_batch_size] or [1]
        max_batch = int(sv.max_batch.suggest(trial, "serving.max_batch", restrict=mb))
        if max_batch > 1:
            delay = int(sv.max_queue_delay_us.suggest(trial, "serving.max_queue_delay_us"))
    return ServingConfig(instances=instances, threads=threads, max_batch=max_batch, max_queue_delay_us=delay)


def rebuild(params: dict[str, Any], space: SearchSpace, target, model_format: str = "torch",
            widths: dict | None = None) -> TrialConfig:
    """The TrialConfig of a past trial, from its Optuna params, by the same `sample` function (``widths``: the
    study's ``model_info["prune_widths"]``)."""
    import optuna

    backends = [params["backend"]] if "backend" in params else None
    return sample(optuna.trial.FixedTrial(params), space, target, model_format, backends=backends, widths=widths)
