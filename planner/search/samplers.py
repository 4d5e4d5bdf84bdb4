"""The search's samplers: how planner configures Optuna's, by name (``--sampler``)."""

from __future__ import annotations

from planner.errors import ConfigError

SAMPLERS = ("tpe", "nsga2", "random", "grid")


def make_sampler(name: str, seed: int | None, n_objectives: int):
    import warnings

    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True, n_startup_trials=8)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=10)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        return _ExhaustiveSampler(seed=seed)
    from planner.errors import did_you_mean

    raise ConfigError(f"--sampler {name!r}; {did_you_mean(name, SAMPLERS)}")


def _exhaustive_sampler_cls():
    import optuna

    class Exhaustive(optuna.samplers.BruteForceSampler):
        """Brute force over the (conditional) space; flags exhaustion instead of calling study.stop()
        outside optimize(), which Optuna forbids in the ask/tell loop."""

        exhausted = False

        def _populate_tree(self, tree, trials, params):
            # a finished trial without params (a surplus trial of a shared study, told PRUNED before sampling)
            # sits at the tree's root, where Optuna's brute force sees a parameter mismatch and raises
            super()._populate_tree(tree, [t for t in trials if t.params or not t.state.is_finished()], params)

        def after_trial(self, study, trial, state, values):
            try:
                super().after_trial(study, trial, state, values)
            except RuntimeError as e:
                if "Study.stop" not in str(e):
                    raise
                self.exhausted = True

    return Exhaustive


def _ExhaustiveSampler(seed=None):
    return _exhaustive_sampler_cls()(seed=seed)


def warm_start_params(space, target, model_format: str, backends: list[str]) -> list[dict]:
    """The Optuna params of a warm start: the space's own seeds first, then each usable backend as it comes
    (no quantization, no pruning; its options and the batch size left to the sampler).  Seeds this target or
    model cannot run are left out (as `planner.space.seed_params` says)."""
    from planner.space import Seed, seed_params

    seeds = list(space.seeds) + [Seed(backend=b, quant="none", prune={"method": "none"} if "none" in space.prune.methods
                                      else {}) for b in backends]
    out: list[dict] = []
    for seed in seeds:
        params, _ = seed_params(seed, space, target, model_format, backends)
        if params is not None and params not in out:
            out.append(params)
    return out
