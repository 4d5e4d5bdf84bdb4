"""planner: a measured joint search over pruning, quantization, compilers and batch sizes.

The public API is small and loads lazily: ``import planner`` imports no torch,
ONNX Runtime, TVM, TensorRT or MLflow.

    >>> import planner
    >>> target = planner.load_target("targets/cpu.yaml")
    >>> space = planner.load_space("search_spaces/default.yaml")
    >>> result = planner.optimize("tiny-mlp", target, space, trials=8)
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__", "load_target", "load_space", "load_model", "optimize"]


def load_target(ref):
    from planner.target import load_target as _load

    return _load(ref)


def load_space(ref):
    from planner.space import load_space as _load

    return _load(ref)


def load_model(ref: str, **kwargs):
    from planner.model import parse_model

    return parse_model(ref, **kwargs)


def optimize(model, target, space, *, home=None, reporter=None, **options):
    """Run or resume a study.  ``model``/``target``/``space`` may be references (str) or loaded objects;
    ``options`` are fields of `planner.search.study.StudyOptions` (trials, timeout, sampler, ...)."""
    from planner.paths import Home
    from planner.search.study import StudyOptions
    from planner.search.study import optimize as _optimize

    if isinstance(model, str):
        model = load_model(model)
    if isinstance(target, str):
        target = load_target(target)
    if isinstance(space, str):
        space = load_space(space)
    return _optimize(model, target, space, Home.resolve(home), StudyOptions(**options), reporter)
