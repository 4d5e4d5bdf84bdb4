"""What the study already knows about feasibility, used before a candidate is measured (issue 28).

Three parts:

* The samplers learn from the constraints every measured trial records with Optuna's public
  ``Trial.set_constraint`` (`Optimizer._complete`): Optuna 5's TPE puts trials with a positive constraint
  value among the "above" (bad) trials and NSGA-II ranks them by constrained domination.  Optuna 5 deprecated
  the samplers' ``constraints_func`` argument for exactly this, so planner does not pass one:
  `sampler_reads_constraints` says whether the installed Optuna works this way.
* Hopeless regions: a pruned candidate whose quality loss is bound to be far above the bound because a
  measured trial already showed it is not measured.  A measured trial with pruning method m at ratio r,
  s distillation steps and a precision p, whose loss was at least `HOPELESS_FACTOR` x the bound, covers every
  candidate with the same method (or, m being structured, another structured one: `same_widths`), a ratio >= r,
  rounding to a multiple <= its own (keeps no more units), <= s distillation steps at a learning rate no higher
  (on digits-cnn l1 0.4, 300 steps: 11 digits of 540 wrong at lr 0.001, 1 at 0.003) and a precision at least as
  lossy as p: pruning more, training less and quantizing more do not win back a loss that large.  Such a
  candidate is told to Optuna as PRUNED with the covering trial's quality violation as its constraint (so TPE
  learns the region too) and costs no trial of --trials.
  A quantized trial of the *unpruned* model that lost that much covers the candidates quantized the same way:
  the same scheme through the same quantizer (`Backend.quantizer`: torch and torch.compile share planner's torch
  transforms), its options no less lossy (`Scheme.lossier`: a larger int4 group, per-tensor scales) or picking
  only kernels for the same grid (`Scheme.same_grid`: int8_static's u8 or s8 activations), any pruning on top.
  The sampler cannot learn this alone: a scheme is a parameter per backend (``{backend}.quant``).
  Through *another* quantizer only a data-free weight-only scheme (`Scheme.data_free`: int4/int8 weights rounded
  to a grid, no calibration) is covered, and only by a loss of at least `CROSS_QUANTIZER_FACTOR` x the bound: the
  grid decides such a loss more than who rounds (MiniLM-L6's int4 at group 32 lost 0.033 through NNCF, 0.049
  through ONNX Runtime, 0.066 through torch: a 2x spread, so a quantizer twice as good as the one seen still misses
  the bound by 1.5x).  Calibrated schemes are not carried across (ONNX Runtime's int8_static per-tensor lost 0.07
  on MiniLM where NNCF's lost 0.003), nor to or from a backend with its own weight formats
  (`Backend.own_weight_formats`: llama.cpp's GGUF types).
  A staged distillation judges its student after each stage (`planner.transforms.distill.distill_staged`); a
  trial records that curve (user attr ``distill_curve``), and a stage whose loss was above the bound is
  evidence too, for the same pruning with no more steps than that stage: a student continued from a stage equals
  one trained through it, so a shorter request of the same student would be that very student.
  A pruned student is evidence as soon as it misses the bound at all (`STUDENT_FACTOR`), not only far above it:
  a student's loss on a small evaluation set is noisy (digits-cnn's l1-0.5 student, 3000 steps at a constant rate,
  trained on two seeds: 3 and 0 digits of 540 more wrong than its teacher, `experiments/results/student-stages-*`;
  the bound, 0.005, is 2.7 digits), so a
  student just past the bound is as likely a near miss of a feasible region as of an infeasible one; but every
  candidate it covers (more pruning, less training) is expected to lose at least as much, so it is no more likely
  to meet the bound than the student that just missed it, and each such miss is a measured trial spent.  A
  near miss (under `HOPELESS_FACTOR` x the bound) is overruled by a *feasible* measured student at least as hard
  (the same method or one of the same widths, as much pruning or more, no more steps at a learning rate no higher,
  a precision as lossy): then the miss was the noise, not the region.
* Slow regions: trials cut by the early exit (`FailReason.EARLY_EXIT`: many times slower than the best at their
  batch size) with the same backend, quantization scheme, batch size and decisive options (`region`: tuning, compile
  mode, execution provider, declared on the backend's options).  Once `SLOW_CUTS` of them were cut, a candidate of
  that region pruned no more than they were (or not at all) is not built again: its other options (threads, graph
  levels, hints: a few-fold at most) do not make up an order of magnitude.  One cut is not enough, but for the
  very config it cut: proposed again, it is not built again (the cut only tightens as the study finds faster
  deployments at that batch size).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from planner.config import QuantConfig, TrialConfig

HOPELESS_FACTOR = 2.0  # a loss this many times the bound is "far above" it
STUDENT_FACTOR = 1.0  # a pruned student's loss this many times the bound makes it evidence (any miss; see below)
CROSS_QUANTIZER_FACTOR = 3.0  # a data-free scheme's loss this many times the bound covers its other quantizers
SLOW_CUTS = 2  # early exits of one region (backend, scheme, batch) before its other candidates are known slow
# how much a precision loses, in order (a candidate at a rank >= the covering trial's loses at least as much)
PRECISION_RANK = {"fp32": 0, "fp16": 1, "bf16": 1, "fp8": 2, "int8": 2, "int4": 3}


def sampler_reads_constraints() -> bool:
    """True when the installed Optuna's samplers read the constraints set by ``Trial.set_constraint``."""
    import optuna

    return hasattr(optuna.trial.Trial, "set_constraint") and hasattr(optuna.trial.FrozenTrial, "constraints")


@dataclass(frozen=True)
class Evidence:
    """A measured (or stopped) pruned trial whose quality loss was far above the bound (``over``: the loss as a
    multiple of the bound; 0 when not known, and then it is never carried across quantizers)."""

    number: int
    config: TrialConfig
    loss: float
    over: float = 0.0
    stage: int | None = None  # the distillation steps of a judged stage of a longer trial (``distill_curve``)


def evidence(trials: Iterable[Any], bound: float, factor: float = HOPELESS_FACTOR,
             student_factor: float = STUDENT_FACTOR) -> list[Evidence]:
    """The pruned or quantized trials among ``trials`` (Optuna FrozenTrials) whose measured quality loss was above
    ``bound`` and at least ``student_factor`` x it (pruned) or ``factor`` x it (quantized only): COMPLETE trials
    measured by this study (not duplicates, not skipped), and trials a staged distillation stopped (user attr
    ``distill_stopped``: the loss at the steps it reached); and each judged stage of a measured trial's distillation
    (user attr ``distill_curve``) that far above, at its steps."""
    from dataclasses import replace

    out: list[Evidence] = []
    for t in trials:
        a = t.user_attrs
        if "config" not in a or a.get("duplicate_of") is not None or a.get("hopeless_like") is not None:
            continue
        if t.state.name == "COMPLETE" and a.get("distill_curve"):
            base = TrialConfig.from_dict(a["config"])
            for steps, q in a["distill_curve"]:
                if base.prune.active and q > bound and q >= student_factor * bound and int(steps) < base.distill.steps:
                    # judged in fp32 (eager torch), before any quantization: evidence for every precision
                    cfg = replace(base, distill=replace(base.distill, steps=int(steps)), quant=QuantConfig("none"))
                    out.append(Evidence(t.number, cfg, float(q), float(q) / bound if bound > 0 else 0.0, int(steps)))
        stopped = a.get("distill_stopped")
        if t.state.name == "COMPLETE":
            loss = (a.get("metrics") or {}).get("quality_loss")
        elif stopped:
            loss = stopped.get("quality_loss")
        else:
            continue
        if loss is None or not loss > bound:
            continue
        cfg = TrialConfig.from_dict(a["config"])
        if not cfg.prune.active and cfg.quant.scheme == "none":  # fp32 far off: the engine's numbers, not a region
            continue
        if loss < (student_factor if cfg.prune.active else factor) * bound:
            continue
        if stopped:  # what was shown is the loss at the steps reached, not at the steps asked
            cfg = replace(cfg, distill=replace(cfg.distill, steps=int(stopped.get("steps", 0))))
        out.append(Evidence(t.number, cfg, float(loss), float(loss) / bound if bound > 0 else 0.0))
    return out


def covers(e: Evidence, cfg: TrialConfig) -> bool:
    """Whether measured ``e`` shows that ``cfg`` cannot be within the bound either."""
    if not e.config.prune.active:  # the quantization alone lost it: the same quantization, pruned or not
        return (same_quantization_or_lossier(cfg, e.config)
                or (e.over >= CROSS_QUANTIZER_FACTOR and same_grid_or_lossier(cfg, e.config)))
    if not cfg.prune.active or not same_widths(cfg.prune.method, e.config.prune.method):
        return False
    if cfg.prune.ratio < e.config.prune.ratio or cfg.prune.round_to > e.config.prune.round_to:
        return False
    if cfg.distill.steps > e.config.distill.steps:
        return False
    if cfg.distill.steps > 0 and cfg.distill.lr > e.config.distill.lr:  # a faster learning rate may recover sooner
        return False
    return PRECISION_RANK.get(cfg.precision, 0) >= PRECISION_RANK.get(e.config.precision, 0)


def same_widths(a: str, b: str) -> bool:
    """Pruning methods ``a`` and ``b`` keep the same number of units per layer at a ratio and round_to: the same
    method, or two structured ones (`planner.schemes.PRUNE_NORMS`: they differ only in the norm that ranks which
    units stay; on digits-cnn l1 and l2 keep the same conv1 channels at ratios 0.3 and 0.4, and 15 of the same 16
    at 0.5)."""
    from planner.schemes import STRUCTURED_PRUNE_METHODS

    return a == b or (a in STRUCTURED_PRUNE_METHODS and b in STRUCTURED_PRUNE_METHODS)


def quantizer(backend: str) -> str:
    """Who quantizes for ``backend`` (`Backend.quantizer`, else the backend itself)."""
    import planner.backends.registry as registry

    try:
        return registry.get(backend).quantizer or backend
    except Exception:  # noqa: BLE001 -- a backend this run does not know shares nothing
        return backend


def same_quantization_or_lossier(cfg: TrialConfig, seen: TrialConfig) -> bool:
    """``cfg`` quantizes as ``seen`` did, or more lossily: the same scheme through the same quantizer, each option
    the quantizer acts on equal or, where the scheme orders its values (`Scheme.lossier`), no less lossy; on a
    backend that quantizes by itself (no shared `Backend.quantizer`), its decisive options equal too (llama.cpp's
    int4 type is one: a backend option that quantizes)."""
    import planner.backends.registry as registry
    from planner.schemes import SCHEMES

    scheme = cfg.quant.scheme
    if scheme == "none" or scheme != seen.quant.scheme or quantizer(cfg.backend) != quantizer(seen.backend):
        return False
    own = quantizer(cfg.backend) == cfg.backend  # a backend quantizing by itself: its options may quantize
    if own and cfg.backend == seen.backend and _decisive(cfg) != _decisive(seen):  # e.g. llama.cpp's int4 type
        return False
    spec = SCHEMES.get(scheme)
    if spec is None:
        return cfg.quant.opts() == seen.quant.opts()
    try:
        honours = registry.get(cfg.backend).honours
    except Exception:  # noqa: BLE001
        honours = lambda s, k: True  # noqa: E731
    return _no_less_lossy(spec, cfg, seen, lambda k: honours(scheme, k))


def same_grid_or_lossier(cfg: TrialConfig, seen: TrialConfig) -> bool:
    """``cfg`` rounds the weights of a data-free scheme (`Scheme.data_free`) to the grid ``seen`` used, or a
    coarser one, through another quantizer: each option both backends act on equal or no less lossy; neither backend
    has its own weight formats (`Backend.own_weight_formats`)."""
    import planner.backends.registry as registry
    from planner.schemes import SCHEMES

    scheme = cfg.quant.scheme
    spec = SCHEMES.get(scheme)
    if spec is None or not spec.data_free or scheme != seen.quant.scheme:
        return False
    try:
        mine, theirs = registry.get(cfg.backend), registry.get(seen.backend)
    except Exception:  # noqa: BLE001 -- a backend this run does not know shares nothing
        return False
    if mine.own_weight_formats or theirs.own_weight_formats:
        return False
    return _no_less_lossy(spec, cfg, seen, lambda k: mine.honours(scheme, k) and theirs.honours(scheme, k))


def _no_less_lossy(spec, cfg: TrialConfig, seen: TrialConfig, compared) -> bool:
    """Each option of ``spec`` (a `Scheme`) for which ``compared(option)`` holds is equal in ``cfg`` and ``seen``
    (defaults filled in) or, where the scheme orders its values (`Scheme.lossier`), no less lossy in ``cfg``; options
    that round to the same grid (`Scheme.same_grid`: they pick kernels) are not compared."""
    defaults = {k: vals[0] for k, vals in spec.options.items()}
    mine, theirs = {**defaults, **cfg.quant.opts()}, {**defaults, **seen.quant.opts()}
    for k in set(mine) | set(theirs):
        if not compared(k) or k in spec.same_grid:
            continue
        a, b = mine.get(k), theirs.get(k)
        order = spec.lossier.get(k)
        if order and a in order and b in order:
            if order.index(a) < order.index(b):
                return False
        elif a != b:
            return False
    return True


def explain(e: Evidence, bound: float) -> str:
    """Why ``e`` makes a candidate hopeless, for the skip message."""
    lost = f"hopeless: trial {e.number} ({e.config.describe()}) lost {e.loss:.3g} against the bound {bound:.3g}"
    if not e.config.prune.active:
        return lost + " with the same quantization (or its weight grid) and no less lossy options"
    if e.stage is not None:
        lost = (f"hopeless: trial {e.number}'s student lost {e.loss:.3g} against the bound {bound:.3g} after "
                f"{e.stage} distillation steps ({e.config.describe()})")
    return lost + (" with less pruning, at least as many distillation steps at a learning rate no lower and no "
                   "lossier precision")


def feasible_students(trials: Iterable[Any], bound: float) -> list[TrialConfig]:
    """The configs of the pruned trials among ``trials`` measured within ``bound`` (COMPLETE, not duplicates):
    what overrules a near miss (`hopeless`)."""
    out = []
    for t in trials:
        a = t.user_attrs
        if t.state.name != "COMPLETE" or "config" not in a or a.get("duplicate_of") is not None:
            continue
        loss = (a.get("metrics") or {}).get("quality_loss")
        if loss is not None and loss <= bound:
            cfg = TrialConfig.from_dict(a["config"])
            if cfg.prune.active:
                out.append(cfg)
    return out


def hopeless(cfg: TrialConfig, known: list[Evidence], feasible: Iterable[TrialConfig] = ()) -> Evidence | None:
    """The measured trial that shows ``cfg`` hopeless (the one with the smallest loss), or None.  A near miss
    (a student under `HOPELESS_FACTOR` x the bound) does not count where one of ``feasible`` (measured students
    within the bound) is at least as hard as ``cfg``: it met the bound where ``cfg`` is expected to lose no more."""
    harder = [f for f in feasible if cfg.prune.active and covers(Evidence(-1, cfg, 0.0), f)]
    hits = [e for e in known if covers(e, cfg) and not (harder and e.config.prune.active and e.over < HOPELESS_FACTOR)]
    return min(hits, key=lambda e: (e.loss, e.number)) if hits else None


def _prunes_no_more(cfg: TrialConfig, cut: TrialConfig) -> bool:
    """``cfg`` removes no more of the model than ``cut`` did, so it cannot be faster for its pruning."""
    if not cfg.prune.active:
        return True
    return (cut.prune.active and same_widths(cfg.prune.method, cut.prune.method) and cfg.prune.ratio <= cut.prune.ratio
            and cfg.prune.round_to >= cut.prune.round_to)


def slow_cuts(trials: Iterable[Any]) -> list[tuple[int, TrialConfig]]:
    """(number, config) of the trials among ``trials`` (Optuna FrozenTrials) that the early exit cut."""
    out = []
    for t in trials:
        a = t.user_attrs
        if a.get("fail_reason") == "early_exit" and "config" in a and a.get("duplicate_of") is None:
            out.append((t.number, TrialConfig.from_dict(a["config"])))
    return out


def _decisive(cfg: TrialConfig) -> tuple:
    return region(cfg)[3]


def region(cfg: TrialConfig) -> tuple:
    """What a slow region fixes: backend, batch size, scheme and the backend's decisive options
    (`Backend.decisive_options`: tuning, compile mode, execution provider: those can make it an order faster)."""
    import planner.backends.registry as registry

    try:
        cls = registry.get(cfg.backend)
        opts = cls.resolve_options(cfg.options())
    except Exception:  # noqa: BLE001 -- a backend (or its options) this run does not know: every option decides
        return (cfg.backend, cfg.batch_size, cfg.quant.scheme, tuple(sorted(cfg.options().items())))
    return (cfg.backend, cfg.batch_size, cfg.quant.scheme, tuple((k, opts.get(k)) for k in cls.decisive_options()))


def slow(cfg: TrialConfig, cuts: list[tuple[int, TrialConfig]], needed: int = SLOW_CUTS) -> list[int]:
    """The cut trials that together show ``cfg`` slow (at least ``needed`` of its `region`, pruned no less than
    ``cfg``, or one of this very config), or []."""
    again = [n for n, c in cuts if c.key() == cfg.key()]
    if again:  # this very config was cut: the bound it missed has not loosened since
        return again
    if len(cuts) < needed:
        return []
    mine = region(cfg)
    hits = [n for n, c in cuts if region(c) == mine and _prunes_no_more(cfg, c)]
    return hits if len(hits) >= needed else []
