"""Winner's curse: re-measure the fastest feasible deployments in interleaved rounds before one is named.

A study measures each candidate once.  The minimum of many noisy measurements is biased low, so the
study's fastest deployment is often one that was measured on a lucky window (on this 2-core host a
resnet18 torch.compile trial measured 45.9 ms in its study and 54–57 ms in every later round).  After
the trial loop, the ``top_k`` fastest feasible trials are rebuilt in fresh workers (transforms come from
the cache) and measured again in ``rounds`` rounds: in each round every candidate runs the target's full
latency protocol in turn while the others are paused, and the order rotates from round to round, so
slow drift of the machine falls on all of them alike.  A candidate's confirmed latency is the median
of its rounds.

The result is stored in the Optuna study (user attribute ``confirmation``) and on the trials' MLflow
runs (metrics ``confirmed.*``); `planner.select.pareto.pareto_front` reads it, so the front, the
policies' picks and the registry aliases use confirmed figures wherever there are some.
"""

from __future__ import annotations

import statistics
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from planner.record.metrics import per_sample
from planner.select.pareto import Point, feasible_points, trial_point

ATTR = "confirmation"  # the study user attribute


def candidates(study, top_k: int) -> list[Point]:
    """The ``top_k`` fastest feasible trials by the latency objective, one per distinct config."""
    seen: set[str] = set()
    out: list[Point] = []
    for p in sorted(feasible_points(study), key=lambda p: (p.latency_ms, p.quality_loss, p.number)):
        key = str(p.config)
        if key in seen or "latency_ms" not in p.metrics:
            continue
        seen.add(key)
        out.append(p)
        if len(out) >= top_k:
            break
    return out


SERVED_CONSTRAINTS = ("served_slo", "served_rate")  # planner.record.objectives.constraints under traffic


def closest_served(study, top_k: int) -> list[Point]:
    """When no trial serves the traffic within its SLO: the ``top_k`` trials closest to it, to be re-measured and
    shown as such (each meets every other constraint, the quality bound first; those that kept the rate before
    those that did not, then the lowest served percentile), one per distinct config."""
    from optuna.trial import TrialState

    near = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if t.user_attrs.get("duplicate_of") is not None or "served_slo" not in t.constraints and "served_rate" not in t.constraints:
            continue
        if all(v <= 0 for k, v in t.constraints.items() if k not in SERVED_CONSTRAINTS):
            near.append((t.constraints.get("served_rate", 0.0) > 0, trial_point(t)))
    seen: set[str] = set()
    out: list[Point] = []
    for _, p in sorted(near, key=lambda x: (x[0], x[1].latency_ms, x[1].quality_loss, x[1].number)):
        if str(p.config) in seen or "latency_ms" not in p.metrics:
            continue
        seen.add(str(p.config))
        out.append(p)
        if len(out) >= top_k:
            break
    return out


def estimated_seconds(p: Point, trial_seconds: float | None, rounds: int, warmup_seconds: float = 0.0,
                      traffic=None) -> float | None:
    """What re-measuring ``p`` should cost: its rebuild (the trial's wall time less its measurement and its
    transforms, which the rebuild takes from the cache) plus ``rounds`` measurements like the
    trial's (samples x mean latency, plus the warm-up; under ``traffic`` (`planner.target.Traffic`) one load
    point each, the trial having measured its sustained-rate points too).  None when the trial's time is unknown."""
    if trial_seconds is None:
        return None
    m = p.metrics
    # the rebuild takes the transforms from the cache (pruned and distilled students, quantized models, ONNX
    # exports): a distilled trial's training time is not paid again (a rebuild the deadline overtakes is stopped)
    trial_seconds = max(0.0, trial_seconds - float(m.get("time.transforms_s", 0.0)))
    if traffic is not None:
        single = m.get("latency_samples", 0.0) * m.get("latency_p50_ms", 0.0) / 1e3 + warmup_seconds
        points = 1 + (traffic.rate_search_steps if traffic.arrival != "closed" else 0)
        return max(0.0, trial_seconds - single - points * traffic.point_seconds) + rounds * traffic.point_seconds
    measure = m.get("latency_samples", 0.0) * m.get("latency_mean_ms", m.get("latency_ms", 0.0)) / 1e3 + warmup_seconds
    return max(0.0, trial_seconds - measure) + rounds * measure


def fit_budget(points: list[Point], costs: dict[int, float | None], budget_s: float | None) -> tuple[list[Point], dict[int, str]]:
    """The candidates, fastest first, whose estimated costs (``costs``, seconds) add up within ``budget_s``; the
    others with the reason they are skipped.  ``budget_s`` None: no budget (all of them)."""
    if budget_s is None:
        return list(points), {}
    kept, skipped, spent = [], {}, 0.0
    for p in points:
        cost = costs.get(p.number)
        if budget_s <= 0:
            skipped[p.number] = "the study's --timeout was spent by the search"
        elif cost is None or spent + cost <= budget_s:
            kept.append(p)
            spent += cost or 0.0
        else:
            skipped[p.number] = f"needs ~{cost:.0f} s to rebuild and re-measure; {max(0.0, budget_s - spent):.0f} s of --timeout left"
    return kept, skipped


def run_rounds(points: list[Point], make_job: Callable[[Point], tuple[Any, Path]], env: dict[str, str],
               rounds: int, timeout: float, on_progress: Callable[[str], None] | None = None,
               deadline: float | Callable[[], bool] | None = None, server=None) -> dict[int, dict]:
    """Build every candidate in its own worker, then measure them in ``rounds`` interleaved rounds.

    Returns ``{trial number: worker result}``: ``{"status": "ok", "rounds": [LatencyStats dicts]}`` or a
    failure (``status``/``reason``/``message``) for a candidate that did not rebuild or crashed.
    ``deadline`` (``time.monotonic()``): a rebuild not done by then is stopped (``status`` "skipped"), and
    no round starts after it; the candidates keep the complete rounds they have (``rounds_cut`` says so).
    A callable ``deadline`` says itself whether the time is up.  ``server``: the study's worker fork server
    (`planner.measure.forkserver.ForkServer`), None to spawn each worker."""
    from planner.measure.runner import Runner

    say = on_progress or (lambda msg: None)
    runner = Runner(env, timeout, server=server)
    jobs: dict = {}
    results: dict[int, dict] = {}
    late = deadline if callable(deadline) else (lambda: deadline is not None and time.monotonic() > deadline)
    try:
        for p in points:
            job, jobdir = make_job(p)
            jobs[p.number] = runner.submit(job, jobdir, p.number)
        say(f"rebuilding {len(jobs)} candidates")
        building = set(jobs)
        while building:  # a built candidate waits (paused) for its first round
            for n in sorted(building):
                j = jobs[n]
                if j.ready:
                    j.pause()
                    building.discard(n)
                elif j.poll() is not None or j.active_seconds() > timeout:
                    results[n] = j.collect(timed_out=timeout if j.poll() is None else None)
                    building.discard(n)
                elif late():
                    runner.kill(j)
                    results[n] = {"status": "skipped", "reason": "budget",
                                  "message": "its rebuild was not done when the study's --timeout ran out"}
                    building.discard(n)
            time.sleep(0.02)
        live = [p.number for p in points if p.number not in results]
        for r in range(rounds):
            if r > 0 and late():
                for n in live:
                    if n not in results:
                        runner.kill(jobs[n])
                        results[n] = {"status": "ok", "rounds": [jobs[n].gate.round_result(k) for k in range(r)],
                                      "rounds_cut": f"{r} of {rounds} rounds: the study's --timeout ran out"}
                break
            shift = r % len(live) if live else 0
            for n in live[shift:] + live[:shift]:
                if n in results:
                    continue
                say(f"round {r + 1}/{rounds}: trial {n}")
                j = jobs[n]
                runner.give_turn(j, r)  # every other candidate paused while this one measures
                t0 = time.monotonic()
                while j.gate.round_result(r) is None:
                    if j.poll() is not None or time.monotonic() - t0 > timeout:
                        results[n] = j.collect(timed_out=timeout if j.poll() is None else None)
                        break
                    time.sleep(0.005)
                else:
                    j.pause()
        for n in live:
            if n not in results:
                jobs[n].resume()
                try:
                    jobs[n].proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    results[n] = jobs[n].collect(timed_out=timeout)
                    continue
                results[n] = jobs[n].collect()
    finally:
        runner.close()  # Ctrl-C or a fault above: no worker left behind, none left stopped
    return results


def summarize_served(rounds: list[dict[str, Any]], percentile: str, slo_ms: float | None) -> dict[str, Any]:
    """Confirmed served metrics (rounds measured under the target's traffic): the median over rounds of each
    load point's figures; ``slo_violated`` when the median percentile breaks the served SLO or most rounds did
    not serve the rate (dropped requests, the rate not achieved)."""
    from planner.measure.serving import ServedStats

    pts = [ServedStats(**r["served"]) for r in rounds]

    def med(key: str) -> float:
        return float(statistics.median(getattr(s, key) for s in pts))

    served = med(f"{percentile}_ms")
    rate_kept = 2 * sum(s.meets(None) for s in pts) > len(pts)
    return {
        "latency_ms": served, "served_latency_ms": served, "served_p50_ms": med("p50_ms"), "served_p90_ms": med("p90_ms"),
        "served_p99_ms": med("p99_ms"), "served_achieved_rate": med("achieved_rate"),
        "rounds": len(rounds), "round_p50_ms": [float(s.p50_ms) for s in pts],
        "round_served_ms": [float(getattr(s, f"{percentile}_ms")) for s in pts], "round_cv": [],
        "served_rate_kept": rate_kept,
        "slo_violated": (slo_ms is not None and served > slo_ms) or not rate_kept,
    }


def summarize(rounds: list[dict[str, Any]], percentile: str, batch_size: int) -> dict[str, Any]:
    """Confirmed metrics: the median over rounds of each round's statistic."""
    def med(key: str) -> float:
        return float(statistics.median(r[key] for r in rounds))

    p50 = med("p50_ms")
    return {
        "latency_ms": med(f"{percentile}_ms"),
        "latency_p50_ms": p50, "latency_p90_ms": med("p90_ms"), "latency_p99_ms": med("p99_ms"),
        **per_sample(p50, batch_size),
        "rounds": len(rounds),
        "round_p50_ms": [float(r["p50_ms"]) for r in rounds],
        "round_cv": [float(r["cv"]) for r in rounds],
    }


def record(study, points: list[Point], results: dict[int, dict], percentile: str, rounds: int,
           latency_slo_ms: float | None, skipped: dict[str, str] | None = None, served: str | None = None,
           closest: bool = False) -> dict[str, Any]:
    """Store the confirmation as the study's user attribute ``confirmation`` and return it.  ``skipped``:
    ``{trial number: why}`` for candidates left out to fit the study's budget (kept in ``skipped``, with
    those whose rebuild the deadline stopped).  ``served``: the traffic the rounds were served (its
    description), when the target declares one; ``percentile`` and ``latency_slo_ms`` are then the served ones.
    ``closest``: no trial was feasible under the traffic; ``points`` are the closest ones (`closest_served`)."""
    trials: dict[str, Any] = {}
    failed: dict[str, Any] = {}
    skipped: dict[str, str] = dict(skipped or {})
    for p in points:
        res = results.get(p.number) or {}
        got = res.get("rounds") or []
        if str(p.number) in skipped:
            continue
        if res.get("status") == "skipped":
            skipped[str(p.number)] = res.get("message", "")
        elif res.get("status") == "ok" and got and (len(got) == rounds or res.get("rounds_cut")):
            if "served" in got[0]:  # under the target's traffic: latency_slo_ms is the served SLO
                c = summarize_served(got, percentile, latency_slo_ms)
            else:
                c = summarize(got, percentile, p.batch_size or 1)
                c["slo_violated"] = latency_slo_ms is not None and c["latency_ms"] > latency_slo_ms
            c["study_latency_ms"] = p.latency_ms
            c["ratio_to_study"] = c["latency_ms"] / p.latency_ms if p.latency_ms else None
            if res.get("build_seconds") is not None:
                c["rebuild_seconds"] = float(res["build_seconds"])
            info = res.get("build_info") or {}
            reused = {k: info[k] for k in ("fxgraph_cache_hit", "fxgraph_cache_miss", "fxgraph_cache_bypass",
                                            "timing_cache_status", "reused_records") if k in info}
            if reused:  # what the rebuild took from the trial's caches (Inductor, TensorRT timing cache, TVM records)
                c["rebuild_reused"] = reused
            if res.get("rounds_cut"):
                c["rounds_cut"] = res["rounds_cut"]
            trials[str(p.number)] = c
        else:
            failed[str(p.number)] = {"reason": res.get("reason", "crash"),
                                     "message": str(res.get("message") or f"{len(got)} of {rounds} rounds measured")[:500]}
    summary = {"top_k": len(points), "rounds": rounds, "percentile": percentile, "served": served,
               "at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "trials": trials, "failed": failed,
               "skipped": skipped}
    if closest:
        summary["closest"] = True
        summary["slo_ms"] = latency_slo_ms
    study.set_user_attr(ATTR, summary)
    return summary


def rows(summary: dict[str, Any], points: list[Point]) -> list[dict[str, Any]]:
    """One row per candidate, fastest confirmed first, for the console and MLflow."""
    by_n = {p.number: p for p in points}
    out = []
    for n, c in summary["trials"].items():
        p = by_n.get(int(n))
        out.append({"trial": int(n), "deployment": p.label if p else "", "batch": p.batch_size if p else None,
                    "study_ms": c["study_latency_ms"], "confirmed_ms": c["latency_ms"], "ratio": c["ratio_to_study"],
                    "rounds_p50_ms": c["round_p50_ms"], "slo_violated": c["slo_violated"]})
    for n, f in summary["failed"].items():
        p = by_n.get(int(n))
        out.append({"trial": int(n), "deployment": p.label if p else "", "batch": p.batch_size if p else None,
                    "study_ms": p.latency_ms if p else None, "confirmed_ms": None, "ratio": None,
                    "failed": f"{f['reason']}: {f['message']}"})
    for n, why in summary.get("skipped", {}).items():
        p = by_n.get(int(n))
        out.append({"trial": int(n), "deployment": p.label if p else "", "batch": p.batch_size if p else None,
                    "study_ms": p.latency_ms if p else None, "confirmed_ms": None, "ratio": None,
                    "failed": f"skipped: {why}"})
    return sorted(out, key=lambda r: (r["confirmed_ms"] is None, r["confirmed_ms"] or 0.0))


def markdown(summary: dict[str, Any], points: list[Point]) -> str:
    pct = summary["percentile"]
    how = f"served {pct} latency under {summary['served']}" if summary.get("served") else f"{pct} latency"
    which = (f"trials closest to the served SLO (no trial served the traffic within it: {summary['top_k']} with the "
             "lowest served latency within the other constraints)" if summary.get("closest")
             else f"{summary['top_k']} fastest feasible trials")
    head = (f"Re-measured {which} in {summary['rounds']} interleaved rounds "
            f"({how}, median over rounds).\n\n"
            f"| trial | deployment | batch | study {pct} ms | confirmed {pct} ms | confirmed / study | round p50s ms |\n"
            "|---:|---|---:|---:|---:|---:|---|\n")
    lines = []
    for r in rows(summary, points):
        if r["confirmed_ms"] is None:
            lines.append(f"| {r['trial']} | {r['deployment']} | {r['batch']} | {r['study_ms']:.3f} | failed | – | {r['failed']} |")
        else:
            lines.append(f"| {r['trial']} | {r['deployment']} | {r['batch']} | {r['study_ms']:.3f} | {r['confirmed_ms']:.3f} | "
                         f"{r['ratio']:.2f} | {', '.join(f'{x:.3f}' for x in r['rounds_p50_ms'])}"
                         f"{' (breaks the latency SLO)' if r['slo_violated'] else ''} |")
    return head + "\n".join(lines) + "\n"
