#!/usr/bin/env python
"""Search efficiency as a tabular benchmark: every configuration of a small space measured once (the grid), then each
sampler replayed against that table over many seeds, with the hypervolume of its feasible front after k measured
trials.

    .venv/bin/python experiments/bench_search.py --measure      # measure the grids (real studies, --sampler grid)
    .venv/bin/python experiments/bench_search.py                 # replay every sampler against the stored grids
    .venv/bin/python experiments/bench_search.py --confirm 2     # and confirm the replay with 2 real studies per sampler

Cases (experiments/configs/search-bench-*.yaml, target experiments/configs/cpu-bench.yaml):

  cnn     digits-cnn (trained, 540 held-out digits), 72 configurations, bound: accuracy drop <= 0.5 point
  resnet  resnet18 (random weights), 60 configurations, bound: quality_loss <= 0.02

The grid is measured by the planner itself (`sampler=grid`, no early exit, no re-measurement): each row is a
trial's config key, its label, and its latency / quality loss or its failure.  The replay is the planner's own
sampling (`planner.space.sample` under the sampler `planner.search.samplers.make_sampler` builds) on an in-memory
Optuna study: a proposal whose config was already measured is answered from the table and does not count
(as in a study); a new one costs one measured trial.  Hypervolume: feasible points only (quality loss within the
bound, losses under the noise floor tied), objectives (log10 latency, quality loss: a latency is judged by its
ratio, so 0.2 ms against 0.1 ms counts as much as 20 ms against 10 ms), reference point (just past the grid's
slowest feasible latency, the bound); reported as the fraction of the grid's own hypervolume.

Writes experiments/results/search-grid-<case>.json (the tables) and search-<date>.md/.json/.png (the replay).
No machine noise enters the comparison: every sampler reads the same table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
RESULTS = REPO / "experiments" / "results"
CONFIGS = REPO / "experiments" / "configs"

CASES: dict[str, dict[str, Any]] = {
    "cnn": {"model": "digits-cnn", "space": "search-bench-cnn.yaml", "bound": 0.005, "eval_samples": 64},
    "resnet": {"model": "resnet18", "space": "search-bench-resnet.yaml", "bound": 0.02, "eval_samples": 16},
}
NOISE_FLOOR = 1e-6  # quality losses below this are ties (numerical noise, not quality)


def _target(case: str):
    from planner.target import load_target

    t = load_target(CONFIGS / "cpu-bench.yaml")
    return t.model_copy(update={"constraints": t.constraints.model_copy(update={"max_quality_loss": CASES[case]["bound"]})})


def _space(case: str):
    from planner.space import load_space

    return load_space(CONFIGS / CASES[case]["space"])


# --------------------------------------------------------------------------- the grid (real measurements)


def measure_grid(case: str, home: Path) -> dict[str, Any]:
    import planner
    from optuna.trial import TrialState

    import optuna

    c = CASES[case]
    target, space = _target(case), _space(case)
    name = f"grid-{case}"
    t0 = time.monotonic()
    planner.optimize(c["model"], target, space, home=home, study_name=name, sampler="grid", trials=1000,
                     confirm_top_k=0, early_exit_factor=None, max_duplicates=1000, eval_samples=c["eval_samples"],
                     trial_timeout=600)
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{home / 'optuna.db'}")
    rows: dict[str, dict[str, Any]] = {}
    for t in study.get_trials(deepcopy=False):
        key = t.user_attrs.get("config_key")
        if not key or "duplicate_of" in t.user_attrs or key in rows:
            continue
        row = {"label": t.user_attrs.get("label"), "config": t.user_attrs.get("config"),
               "seconds": (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete else None}
        if t.state == TrialState.COMPLETE:
            m = t.user_attrs.get("metrics", {})
            row.update(status="ok", latency_ms=m["latency_ms"], quality_loss=m["quality_loss"])
        else:
            row.update(status="failed", reason=t.user_attrs.get("fail_reason"))
        rows[key] = row
    out = {"case": case, "model": c["model"], "space": space.name, "bound": c["bound"], "rows": rows,
           "measured_seconds": time.monotonic() - t0, "date": dt.datetime.now().isoformat(timespec="seconds"),
           "host": host_facts()}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"search-grid-{case}.json").write_text(json.dumps(out, indent=1))
    return out


def host_facts() -> dict[str, Any]:
    try:
        flags = next(line.split(":", 1)[1].split() for line in subprocess.run(
            ["lscpu"], capture_output=True, text=True).stdout.splitlines() if line.startswith("Flags"))
    except (StopIteration, OSError):
        flags = []
    keep = [f for f in flags if f.startswith(("avx", "amx", "fma", "f16c", "sse4")) or f in ("vnni",)]
    return {"cpu_flags": keep}


# --------------------------------------------------------------------------- replay (no measurement)


def front_hypervolume(points: list[tuple[float, float]], ref: tuple[float, float]) -> float:
    """Area dominated by ``points`` (both objectives minimised) up to ``ref``: sweep by latency, each point that
    improves the best quality so far adds the strip from its latency to the reference."""
    area, best_q = 0.0, ref[1]
    for lat, q in sorted(p for p in points if p[0] < ref[0] and p[1] < ref[1]):
        if q < best_q:
            area += (ref[0] - lat) * (best_q - q)
            best_q = q
    return area


def feasible_points(rows: dict[str, dict], keys, bound: float) -> list[tuple[float, float]]:
    """(log10 latency, quality loss) of the feasible rows among ``keys``; losses under the noise floor tie."""
    out = []
    for k in keys:
        r = rows[k]
        if r["status"] == "ok" and r["quality_loss"] <= bound:
            out.append((math.log10(r["latency_ms"]), max(r["quality_loss"], NOISE_FLOOR)))
    return out


def reference_point(table: dict) -> tuple[float, float]:
    """Just beyond the grid's slowest feasible point (in log latency), and the quality bound."""
    pts = feasible_points(table["rows"], table["rows"], table["bound"])
    lo, hi = min(p[0] for p in pts), max(p[0] for p in pts)
    return (hi + 0.1 * (hi - lo), table["bound"])


def replay(table: dict, sampler: str, seed: int, budget: int, warm: bool = False,
           keys_out: list[str] | None = None) -> list[float]:
    """Hypervolume fraction after each measured trial (index k-1), for one sampler and seed."""
    import optuna

    from planner.search.samplers import make_sampler
    from planner.space import sample, usable_backends

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    case = table["case"]
    space, target = _space(case), _target(case)
    backends, _ = usable_backends(space, target, "torch")
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=make_sampler(sampler, seed, 2))
    if warm:
        from planner.search.samplers import warm_start_params

        for params in warm_start_params(space, target, "torch", backends):
            study.enqueue_trial(params, skip_if_exists=True)
    rows, ref = table["rows"], reference_point(table)
    full = front_hypervolume(feasible_points(rows, rows, table["bound"]), ref)
    measured: list[str] = []
    curve: list[float] = []
    dup_run = 0
    while len(measured) < budget and dup_run < 50:
        trial = study.ask()
        cfg = sample(trial, space, target, "torch", backends)
        key = cfg.key()
        if key not in rows:
            raise SystemExit(f"{case}: config {cfg.describe()} is not in the grid (re-measure it with --measure)")
        r = rows[key]
        if key in measured:
            dup_run += 1
        else:
            dup_run = 0
            measured.append(key)
            curve.append(front_hypervolume(feasible_points(rows, measured, table["bound"]), ref) / full)
        if r["status"] == "ok":
            study.tell(trial, [r["latency_ms"], r["quality_loss"]])
        else:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
    if keys_out is not None:
        keys_out.extend(measured)
    while len(curve) < budget:  # the space was exhausted (or the sampler stuck): the front stays as it is
        curve.append(curve[-1] if curve else 0.0)
    return curve


# --------------------------------------------------------------------------- confirmation (real studies)


def study_rows(home: Path, name: str) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """(config keys in the order the study measured them, its own rows) of a finished study."""
    import optuna
    from optuna.trial import TrialState

    study = optuna.load_study(study_name=name, storage=f"sqlite:///{home / 'optuna.db'}")
    order: list[str] = []
    rows: dict[str, dict[str, Any]] = {}
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        key = t.user_attrs.get("config_key")
        if not key or "duplicate_of" in t.user_attrs or key in rows:
            continue
        order.append(key)
        if t.state == TrialState.COMPLETE:
            m = t.user_attrs.get("metrics", {})
            rows[key] = {"status": "ok", "latency_ms": m["latency_ms"], "quality_loss": m["quality_loss"]}
        else:
            rows[key] = {"status": "failed", "reason": t.user_attrs.get("fail_reason")}
    return order, rows


def confirm(table: dict, samplers: list[str], n_studies: int, home: Path, replays: dict[str, list[list[float]]],
            first_seed: int = 0) -> list[dict]:
    """Run ``n_studies`` real studies per sampler (seeds 0..n-1), each measuring k = 25 % of the grid's
    configurations with the grid's settings (no early exit, no re-measurement), and set each beside the replay of
    the same sampler and seed: the configurations both measured, and the hypervolume fraction at k scored three
    ways (the study's configurations on the grid's table; the study's own measurements; the replay)."""
    import planner

    case, c = table["case"], CASES[table["case"]]
    grid_rows, n = table["rows"], len(table["rows"])
    k = max(1, round(0.25 * n))
    ref = reference_point(table)
    full = front_hypervolume(feasible_points(grid_rows, grid_rows, table["bound"]), ref)
    out = []
    for sampler in samplers:
        base = sampler.removesuffix("+warm")
        if sampler != base:
            continue  # warm start is a replay option; real studies run the planner's default
        for seed in range(first_seed, first_seed + n_studies):
            name = f"confirm-{case}-{base}-s{seed}"
            t0 = time.monotonic()
            planner.optimize(c["model"], _target(case), _space(case), home=home, study_name=name, sampler=base, seed=seed,
                             trials=k, confirm_top_k=0, early_exit_factor=None, max_duplicates=1000,
                             eval_samples=c["eval_samples"], trial_timeout=600)
            order, own = study_rows(home, name)
            unknown = [key for key in order if key not in grid_rows]
            on_grid = front_hypervolume(feasible_points(grid_rows, [x for x in order if x in grid_rows], table["bound"]), ref) / full
            merged = {**grid_rows, **own}  # the study's own measurements where it has them
            own_hv = front_hypervolume(feasible_points(merged, order, table["bound"]), ref) / full
            curves = replays[base]
            rep = curves[seed][k - 1]
            replay_order = replay_keys(table, base, seed, k)
            feasible_own = {x for x in order if own[x]["status"] == "ok" and own[x]["quality_loss"] <= table["bound"]}
            feasible_grid = {x for x in order if grid_rows.get(x, {}).get("status") == "ok"
                             and grid_rows[x]["quality_loss"] <= table["bound"]}
            row = {"case": case, "sampler": base, "seed": seed, "k": k, "measured": len(order),
                   "hv_study_configs_on_grid": on_grid, "hv_study_own": own_hv, "hv_replay_same_seed": rep,
                   "replay_min": min(c_[k - 1] for c_ in curves), "replay_max": max(c_[k - 1] for c_ in curves),
                   "same_configs_as_replay": len(set(order) & set(replay_order)),
                   "same_prefix_as_replay": next((i for i, (a, b) in enumerate(zip(order, replay_order)) if a != b),
                                                 min(len(order), len(replay_order))),
                   "feasibility_disagreements": len(feasible_own ^ feasible_grid), "not_in_grid": len(unknown),
                   "seconds": time.monotonic() - t0}
            print(f"confirm {case} {base} seed {seed}: HV@{k} study {own_hv:.3f} (its configs on the grid {on_grid:.3f}), "
                  f"replay {rep:.3f} [{row['replay_min']:.3f}, {row['replay_max']:.3f}]; "
                  f"{row['same_configs_as_replay']}/{k} configs shared, first {row['same_prefix_as_replay']} in the same order",
                  flush=True)
            out.append(row)
    return out


def confirm_report(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    lines = ["## Confirmation with real studies", "",
             "Each row is a real study (the planner measuring, sampler and seed as named, k = 25 % of the grid, the grid's "
             "settings) beside the replay of the same sampler and seed. HV fractions at k: the study's configurations "
             "scored on the grid's table; the study's own measurements (fresh latencies: machine noise enters here); the "
             "replay. `[min, max]`: the replay's spread over all seeds. Shared: configurations both measured; prefix: "
             "how many of the first proposals came in the same order (TPE's start-up trials are random draws of the "
             "seeded sampler; after them the proposals follow the measured values, which differ by noise). Feasibility "
             "disagreements: configurations the study and the grid judged differently against the bound.", "",
             "| case | sampler | seed | k | HV study configs on grid | HV study own | HV replay (same seed) | replay [min, max] | shared | prefix | feasibility disagreements | minutes |",
             "|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['case']} | {r['sampler']} | {r['seed']} | {r['k']} | {r['hv_study_configs_on_grid']:.3f} | "
                     f"{r['hv_study_own']:.3f} | {r['hv_replay_same_seed']:.3f} | [{r['replay_min']:.3f}, {r['replay_max']:.3f}] | "
                     f"{r['same_configs_as_replay']}/{r['k']} | {r['same_prefix_as_replay']} | {r['feasibility_disagreements']} | "
                     f"{r['seconds'] / 60:.1f} |")
    inside = sum(r["replay_min"] - 0.02 <= r["hv_study_configs_on_grid"] <= r["replay_max"] + 0.02 for r in rows)
    lines += ["", f"{inside} of {len(rows)} studies' HV (their configurations on the grid) fall within the replay's "
              "spread over seeds (± 0.02).", ""]
    return lines


def replay_keys(table: dict, sampler: str, seed: int, budget: int) -> list[str]:
    """The configuration keys a replay measures, in order (as `replay`, keeping the keys)."""
    keys: list[str] = []
    replay(table, sampler, seed, budget, keys_out=keys)
    return keys


def run_replays(tables: dict[str, dict], samplers: list[str], seeds: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for case, table in tables.items():
        n = len(table["rows"])
        out[case] = {"configs": n, "samplers": {}}
        for name in samplers:
            warm = name.endswith("+warm")
            curves = [replay(table, name.removesuffix("+warm"), s, n, warm) for s in range(seeds)]
            out[case]["samplers"][name] = curves
            k25 = max(1, round(0.25 * n))
            mean25 = statistics.mean(c[k25 - 1] for c in curves)
            print(f"{case:7s} {name:12s} HV after {k25}/{n} measured: {mean25:.3f}", flush=True)
    return out


def report(result: dict[str, Any], tables: dict[str, dict], seeds: int, stamp: str) -> str:
    lines = [f"# Sampler benchmark ({stamp})", "",
             f"Replay of each sampler against an exhaustively measured grid, {seeds} seeds; hypervolume of the feasible "
             "front as a fraction of the grid's, after k measured (distinct) configurations. Mean (min) over seeds.", ""]
    for case, res in result.items():
        n = res["configs"]
        ks = sorted({max(1, round(f * n)) for f in (0.1, 0.15, 0.25, 0.5)})
        t = tables[case]
        ok = sum(1 for r in t["rows"].values() if r["status"] == "ok")
        feas = len(feasible_points(t["rows"], t["rows"], t["bound"]))
        lines += [f"## {case}: {t['model']} on {t['space']} ({n} configurations, {ok} measured ok, {feas} within the bound "
                  f"{t['bound']}; grid measured in {t['measured_seconds'] / 60:.0f} min on {t['host']['cpu_flags']})", "",
                  "| sampler | " + " | ".join(f"k={k} ({k / n:.0%})" for k in ks) + " | k for 95 % (mean) |",
                  "|---|" + "---:|" * (len(ks) + 1)]
        for name, curves in res["samplers"].items():
            cells = []
            for k in ks:
                vals = [c[k - 1] for c in curves]
                cells.append(f"{statistics.mean(vals):.3f} ({min(vals):.2f})")
            reach = [next((i + 1 for i, v in enumerate(c) if v >= 0.95), n) for c in curves]
            cells.append(f"{statistics.mean(reach):.1f}")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(result), figsize=(6 * len(result), 4), squeeze=False)
    for ax, (case, res) in zip(axes[0], result.items()):
        n = res["configs"]
        for name, curves in res["samplers"].items():
            ks = list(range(1, n + 1))
            mean = [statistics.mean(c[k - 1] for c in curves) for k in ks]
            lo = [min(c[k - 1] for c in curves) for k in ks]
            hi = [max(c[k - 1] for c in curves) for k in ks]
            ax.plot(ks, mean, label=name)
            ax.fill_between(ks, lo, hi, alpha=0.15)
        ax.axvline(0.25 * n, color="grey", ls=":", lw=1)
        ax.axhline(0.95, color="grey", ls=":", lw=1)
        ax.set_title(f"{case} ({n} configurations)")
        ax.set_xlabel("measured configurations")
        ax.set_ylabel("hypervolume / grid")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--measure", action="store_true", help="measure the grids first (real studies)")
    ap.add_argument("--measure-only", action="store_true", help="measure the grids and stop")
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--samplers", default="random,nsga2,tpe,tpe+warm")
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--home", default=str(REPO / ".planner-bench-search"))
    ap.add_argument("--confirm", type=int, default=0, metavar="N",
                    help="after the replay, run N real studies per sampler (seeds 0..N-1, k = 25 %% of the grid) and set "
                         "each beside the replay of the same seed")
    ap.add_argument("--confirm-first-seed", type=int, default=0, metavar="K",
                    help="seeds of the confirming studies start at K (to add studies to an earlier run)")
    args = ap.parse_args(argv)
    cases = [c for c in args.cases.split(",") if c]
    tables = {}
    for case in cases:
        path = RESULTS / f"search-grid-{case}.json"
        if args.measure or args.measure_only or not path.is_file():
            print(f"measuring the {case} grid ...", flush=True)
            tables[case] = measure_grid(case, Path(args.home))
        else:
            tables[case] = json.loads(path.read_text())
    if args.measure_only:
        return 0
    stamp = dt.datetime.now().strftime("%Y-%m-%d-%H%M%S")
    samplers = [s for s in args.samplers.split(",") if s]
    result = run_replays(tables, samplers, args.seeds)
    md = report(result, tables, args.seeds, stamp)
    confirmed = []
    for case in cases if args.confirm else []:
        confirmed += confirm(tables[case], samplers, args.confirm, Path(args.home) / f"confirm-{stamp}",
                             result[case]["samplers"], args.confirm_first_seed)
    if confirmed:
        md += "\n".join(confirm_report(confirmed))
    (RESULTS / f"search-{stamp}.md").write_text(md)
    (RESULTS / f"search-{stamp}.json").write_text(json.dumps({**result, "confirm": confirmed} if confirmed else result))
    plot(result, RESULTS / f"search-{stamp}.png")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
