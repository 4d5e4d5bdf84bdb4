"""Composing what the study measured apart (issue 28): the fastest engine configuration found on the unpruned
model, run on the best pruned student found, as the study's next trial.

A study's seeds measure the levers one at a time: engines and precisions on the unpruned model, and a pruned,
distilled student on one engine.  The deployment that wins is often both at once (digits-cnn at batch 64: the 3x
study's best was OpenVINO's NNCF int8 on an l1-0.5 student, 0.35-0.37 ms, where the budget study's seeds gave
OpenVINO int8 unpruned 0.54 ms and ONNX Runtime's l1-0.5 student 0.57 ms and its sampler never paired them in 20
trials).  A sampler finds such a pair only by chance; an engineer tries it next.  So after every measured trial, at
each batch size, the study pairs

* the **engine** of its fastest feasible unpruned trial (backend, its options, scheme and scheme options, serving
  parameters: every sampled parameter outside ``prune.*`` and ``distill.*``), with
* the **student** of its fastest feasible pruned trial (its ``prune.*`` and ``distill.*`` parameters),

and, where that student does not already run on that engine and the pair was not composed before, queues the pair
(Optuna ``enqueue_trial``) ahead of the sampler's next proposal, unless the two halves' quality losses add up to
more than the bound.  The composite is an ordinary trial of the space
(both halves were sampled from it; the same `planner.space.sample` rebuilds it for export), measured, judged and
counted like any other; the hopeless rules and the config cache apply to it.  "Fastest" is the study's first
objective (latency by default; served p99 or the sustained rate under traffic), its direction respected.  Each new
fastest engine or student yields at most one composite per batch size, so a study spends a few trials on them.
"""

from __future__ import annotations

from typing import Any

STUDENT = ("prune.", "distill.")  # the parameters that make the student; every other sampled one is the engine's
COMPOSED = "composed_of"  # the queued trial's user attr: {"engine": trial number, "student": trial number}


def _split(params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    engine = {k: v for k, v in params.items() if not k.startswith(STUDENT)}
    student = {k: v for k, v in params.items() if k.startswith(STUDENT)}
    return engine, student


def _loss(t) -> float:
    return float((t.user_attrs.get("metrics") or {}).get("quality_loss", 0.0))


def _pruned(t) -> bool:
    return ((t.user_attrs.get("config") or {}).get("prune") or {}).get("method", "none") != "none"


def composites(trials, metric: str, maximize: bool, done: set[tuple[int, int]],
               bound: float | None = None) -> list[tuple[dict[str, Any], dict[str, int]]]:
    """(params, {"engine": n, "student": m}) for each batch size whose fastest feasible unpruned trial (the engine)
    and fastest feasible pruned trial (the student) run on different engine configurations and were not paired
    before (``done``); ``trials``: the study's COMPLETE trials.  With the quality ``bound``, a pair whose two
    losses add up to more than it is left out (a student at the edge of the bound gains an engine's int8 loss on
    top: digits-cnn students at 1-2 digits of 540 over the teacher, run on NNCF int8, lost 3)."""
    from planner.select.pareto import feasible_trials

    best: dict[tuple[int, bool], Any] = {}
    for t in feasible_trials(trials):
        value = (t.user_attrs.get("metrics") or {}).get(metric)
        if value is None:
            continue
        key = (int((t.user_attrs.get("config") or {}).get("batch_size", 1)), _pruned(t))
        held = best.get(key)
        if held is None or (value > held[0] if maximize else value < held[0]):
            best[key] = (value, t)
    out = []
    for (batch, pruned), (_, student) in sorted(best.items(), key=lambda kv: kv[0]):
        if not pruned or (batch, False) not in best:
            continue
        engine = best[(batch, False)][1]
        if (engine.number, student.number) in done:
            continue
        e_params, _ = _split(engine.params)
        s_engine, s_params = _split(student.params)
        if s_engine == e_params:  # the best student already runs on the best engine
            continue
        if bound is not None and _loss(engine) + _loss(student) > bound:
            continue
        out.append(({**e_params, **s_params}, {"engine": engine.number, "student": student.number}))
    return out


def queue_composites(study, objective, bound: float | None = None) -> int:
    """Queue this study's new composites (none while trials it queued before, seeds included, wait to run: the
    seeds are measured first); returns how many were queued."""
    from optuna.trial import TrialState

    if study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        return 0
    done = {(int(p[0]), int(p[1])) for p in study.user_attrs.get("composed", [])}
    new = composites(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), objective.metric,
                     objective.direction == "maximize", done, bound)
    for params, pair in new:
        study.enqueue_trial(params, user_attrs={COMPOSED: pair}, skip_if_exists=True)
        done.add((pair["engine"], pair["student"]))
    if new:
        study.set_user_attr("composed", sorted([list(p) for p in done]))
    return len(new)
