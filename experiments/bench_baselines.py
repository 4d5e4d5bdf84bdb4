#!/usr/bin/env python
"""Baselines vs planner: eager fp32, torch.compile, ONNX Runtime default, OpenVINO default and the planner's best deployment.

One run on one machine, for each model and batch size:

  (a) eager     PyTorch eager fp32                        TrialConfig("torch", b)
  (b) compile   torch.compile, mode="default"             TrialConfig("torch_compile", b, mode=default)
  (c) ort       ONNX Runtime, ORT_ENABLE_ALL, all cores   TrialConfig("onnxruntime", b, graph_optimization_level=all)
  (o) openvino  OpenVINO default: convert + compile_model(model, "CPU"), no options, on the same cached ONNX export
                (experiments/openvino_default.py, a bench-only backend plugin: TrialConfig("openvino_default", b));
                left out with a note where openvino is not importable
  (d) planner   the fastest *feasible* trial of a planner study at that batch size (re-built from
                trial.user_attrs["config"] and re-measured here)

Protocol (honest comparison):
  * every measurement is a `planner.measure.runner.run_job` "trial" job: a fresh Python process that
    compiles through the backend registry (the study's own code path), checks quality against the
    study's fp32 reference (reference.npz) and times one batch per the target's `measurement` protocol;
  * baselines and the re-measured planner winner are INTERLEAVED: for each round, for each
    (model, batch) cell, the four variants run one after the other, the order rotating (and reversing
    on odd rounds) from round to round; one fresh process per variant per round, so no runtime's
    thread pool disturbs another's;
  * reported latency = median over rounds of each round's p50 (per batch, ms), plus the spread;
    speed-up = eager p50 / variant p50 (> 1 is faster than eager);
  * compile times are reported separately and never count as latency.  The torch.compile baseline gets an
    empty Inductor cache in round 1 (cold compile) and a warm private cache in later rounds.

Run from the repository root:

    .venv/bin/python experiments/bench_baselines.py                  # resnet18 + bert-mini, b 1,8, 30 trials, 3 rounds
    .venv/bin/python experiments/bench_baselines.py --quick          # smoke run: tiny-mlp, 4 trials, 1 round
    .venv/bin/python experiments/bench_baselines.py --skip-study     # reuse the studies already in --home

Writes experiments/results/baselines-<date>.md and .json (see experiments/README.md).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import REPO, LineReporter, busy, environment, environment_markdown, finish_environment, log, rotated  # noqa: E402

VARIANTS = ("eager", "compile", "ort", "openvino", "planner")
TITLES = {"eager": "eager fp32", "compile": "torch.compile", "ort": "ORT default", "openvino": "OpenVINO default", "planner": "planner best"}
KEEP_FILES = {"job.json", "result.json", "worker.log"}


# ------------------------------------------------------------------ arguments


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="resnet18,bert-mini", help="comma list of models (zoo names or any planner model ref)")
    p.add_argument("--batches", default="1,8", help="comma list of batch sizes to report")
    p.add_argument("--trials", type=int, default=30, help="planner trials per model (the study is topped up to this many)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved measurement rounds")
    p.add_argument("--target", default=None, help="target YAML (its measurement protocol is used everywhere; default: this host as "
                   "`planner probe` describes it, so bf16 is searched where the CPU has it)")
    p.add_argument("--space", default=str(REPO / "search_spaces" / "default.yaml"), help="search space YAML")
    p.add_argument("--home", default=str(REPO / "experiments" / ".bench-home"), help="planner home for the studies and the bench work dirs")
    p.add_argument("--out-dir", default=str(REPO / "experiments" / "results"), help="where the .md/.json results go")
    p.add_argument("--eval-samples", type=int, default=32, help="evaluation samples for the quality check (study and re-measure)")
    p.add_argument("--study-timeout", type=float, default=None, help="stop starting new trials of a study after this many seconds")
    p.add_argument("--trial-timeout", type=float, default=900.0, help="seconds allowed per job (compile + quality + measure)")
    p.add_argument("--seed", type=int, default=0, help="study sampler seed")
    p.add_argument("--skip-study", action="store_true", help="do not run trials; reuse the existing study of each model")
    p.add_argument("--quick", action="store_true", help="smoke run: tiny-mlp, 4 trials, 1 round, short protocol (experiments/configs/cpu-quick.yaml)")
    p.add_argument("--render", metavar="JSON", help="only re-write the .md (and print the table) from a results .json of an earlier run")
    p.add_argument("--keep-artifacts", action="store_true", help="keep engines (.onnx/.pt2) of the bench jobs (default: only logs and results)")
    a = p.parse_args(argv)
    if a.quick:
        given = set(argv if argv is not None else sys.argv[1:])
        if "--models" not in given:
            a.models = "tiny-mlp"
        if "--trials" not in given:
            a.trials = 4
        if "--rounds" not in given:
            a.rounds = 1
        if "--target" not in given:
            a.target = str(REPO / "experiments" / "configs" / "cpu-quick.yaml")
    a.model_list = [m.strip() for m in a.models.split(",") if m.strip()]
    a.batch_list = [int(b) for b in a.batches.split(",") if b.strip()]
    if a.rounds < 1 or a.trials < 1 or not a.model_list or not a.batch_list:
        p.error("--rounds and --trials must be >= 1; --models and --batches must not be empty")
    return a


# ------------------------------------------------------------------ the planner study


def _constraint_values(t) -> list[float]:
    c = t.constraints
    return list(c.values()) if isinstance(c, dict) else list(c or [])


def ensure_study(model_ref: str, target, space, home, args) -> dict[str, Any]:
    """Run (top up to --trials) or reuse the study of one model; return what the bench needs from it."""
    import optuna

    from planner.model import parse_model
    from planner.search.study import Optimizer, StudyOptions, default_study_name

    spec = parse_model(model_ref)
    name = default_study_name(spec, target, space)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def existing():
        try:
            return optuna.load_study(study_name=name, storage=home.optuna_url)
        except KeyError:
            return None
        except Exception:  # no database yet
            return None

    study = existing() if Path(home.root / "optuna.db").is_file() else None
    have = len(study.trials) if study is not None else 0
    info: dict[str, Any] = {"model": model_ref, "study": name, "trials_before": have, "trials_run_now": 0, "study_seconds": 0.0}
    if args.skip_study:
        if study is None:
            raise SystemExit(f"--skip-study: no study {name!r} in {home.root}; run without --skip-study first")
    else:
        todo = args.trials - have
        if todo > 0:
            opts = StudyOptions(trials=todo, timeout=args.study_timeout, trial_timeout=args.trial_timeout, seed=args.seed,
                                eval_samples=args.eval_samples)
            rep = LineReporter(spec.name, todo)
            opt = Optimizer(spec, target, space, home, opts, rep)
            t0 = time.perf_counter()
            res = opt.run()
            info.update(trials_run_now=len(res.outcomes), study_seconds=time.perf_counter() - t0, stopped=res.stopped_because,
                        trial_wall_seconds=rep.wall)
        else:
            log(f"[{spec.name}] study {name} already has {have} ≥ {args.trials} trials; not running more")
        study = existing()
    assert study is not None
    study_dir = home.study_dir(name)
    ref = study_dir / "reference.npz"
    if not ref.is_file():
        raise SystemExit(f"study {name}: no reference outputs at {ref}")
    import numpy as np

    with np.load(ref, allow_pickle=False) as z:
        n_eval = int(len(z["ref"]))
    from optuna.trial import TrialState

    from planner.select.pareto import feasible_points

    states: dict[str, int] = {}
    for t in study.trials:
        k = t.state.name.lower()
        if t.state == TrialState.COMPLETE:
            k = "duplicate" if t.user_attrs.get("duplicate_of") is not None else (
                "feasible" if all(v <= 0 for v in _constraint_values(t)) else "infeasible")
        states[k] = states.get(k, 0) + 1
    fails: dict[str, int] = {}
    for t in study.trials:
        if t.state == TrialState.FAIL:
            r = t.user_attrs.get("fail_reason", "?")
            fails[r] = fails.get(r, 0) + 1
    pts = feasible_points(study)
    winners = {}
    for b in args.batch_list:
        at_b = [p for p in pts if int(p.config.get("batch_size", -1)) == b]
        best = min(at_b, key=lambda p: (p.latency_ms, p.quality_loss), default=None)
        winners[b] = None if best is None else {
            "trial": best.number, "label": best.label, "config": best.config,
            "study_latency_ms": best.latency_ms, "study_p50_ms": best.metrics.get("latency_p50_ms"),
            "study_quality_loss": best.quality_loss, "feasible_at_batch": len(at_b),
        }
    info.update(
        spec=spec.to_dict(), reference=str(ref), eval_samples=n_eval, study_dir=str(study_dir),
        output_kind=(study.user_attrs.get("model_info") or {}).get("output_kind", "logits"),
        trial_states=states, fail_reasons=fails, feasible=len(pts), winners=winners, trials_total=len(study.trials),
    )
    return info


# ------------------------------------------------------------------ measurement jobs


def variant_config(variant: str, batch: int, winner: dict | None):
    from planner.config import TrialConfig, freeze_options

    if variant == "eager":
        return TrialConfig("torch", batch)
    if variant == "compile":
        return TrialConfig("torch_compile", batch, freeze_options({"mode": "default"}))
    if variant == "ort":
        return TrialConfig("onnxruntime", batch, freeze_options({"graph_optimization_level": "all"}))
    if variant == "openvino":
        from openvino_default import NAME

        return TrialConfig(NAME, batch)
    if variant == "planner":
        if winner is None:
            return None
        cfg = TrialConfig.from_dict(winner["config"])
        assert cfg.batch_size == batch, (cfg, batch)
        return cfg
    raise ValueError(variant)


def round_order(r: int) -> list[str]:
    return rotated(VARIANTS, r)


def run_variant(study: dict, variant: str, cfg, target, home, args, workdir: Path, round_no: int, bench_dir: Path) -> dict:
    from planner.measure.runner import run_job, worker_env

    import openvino_default

    env = openvino_default.worker_env(worker_env(target, home.cache))  # the OpenVINO default baseline's plugin
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    cache_note = "study cache"
    if variant == "compile":
        # private Inductor cache: empty in round 1 (cold compile), reused (warm) in later rounds
        cache = bench_dir / "inductor" / f"{study['spec']['name']}-b{cfg.batch_size}"
        if round_no == 0 and cache.exists():
            shutil.rmtree(cache, ignore_errors=True)
        cache_note = "cold (empty cache)" if round_no == 0 else "warm (private cache)"
        env["TORCHINDUCTOR_CACHE_DIR"] = str(cache)
    job = {
        "kind": "trial", "spec": study["spec"], "target": target.model_dump(mode="json"), "config": cfg.to_dict(),
        "cache_dir": str(home.cache), "workdir": str(workdir), "reference": study["reference"],
        "output_kind": study["output_kind"], "abort_above_ms": None,
    }
    res = run_job(job, workdir, args.trial_timeout, env)
    if not args.keep_artifacts and workdir.is_dir():
        for p in workdir.iterdir():
            if p.name not in KEEP_FILES:
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    out = {"round": round_no + 1, "status": res.get("status"), "wall_seconds": res.get("wall_seconds"),
           "compile_seconds": res.get("compile_seconds"), "build_seconds": res.get("build_seconds"), "inductor_cache": cache_note,
           "workdir": str(workdir)}
    if variant == "openvino":  # what OpenVINO chose by itself (inference precision, streams, threads)
        out["ov_properties"] = {k[3:]: v for k, v in (res.get("build_info") or {}).items() if k.startswith("ov.")}
    if res.get("status") == "ok":
        lat = res["latency"]
        out.update(p50_ms=lat["p50_ms"], p90_ms=lat["p90_ms"], p99_ms=lat["p99_ms"], mean_ms=lat["mean_ms"], cv=lat["cv"],
                   n=lat["n"], windows=lat["windows"], unstable=lat["unstable"], measure_seconds=lat["seconds"],
                   warmup_iters=lat.get("warmup_iters"),
                   quality_loss=(res.get("quality") or {}).get("quality_loss"), peak_rss_mb=res.get("peak_rss_mb"))
    else:
        out.update(reason=res.get("reason"), message=(res.get("message") or "")[:500])
    return out


def _median(xs):
    return statistics.median(xs) if xs else None


def summarize(cells: dict) -> None:
    for cell in cells.values():
        eager = None
        for v in VARIANTS:
            c = cell["variants"][v]
            if c.get("missing"):
                c.update(p50_ms=None, speedup_vs_eager=None, ratio_to_eager=None)
                continue
            ok = [m for m in c["rounds"] if m.get("status") == "ok"]
            p50s = [m["p50_ms"] for m in ok]
            c["p50_ms"] = _median(p50s)
            c["p50_min_ms"] = min(p50s) if p50s else None
            c["p50_max_ms"] = max(p50s) if p50s else None
            c["rounds_ok"] = len(ok)
            c["quality_loss"] = _median([m["quality_loss"] for m in ok if m.get("quality_loss") is not None])
            c["compile_seconds"] = [m.get("compile_seconds") for m in c["rounds"]]
            c["job_wall_seconds"] = [m.get("wall_seconds") for m in c["rounds"]]
            if v == "eager":
                eager = c["p50_ms"]
        for v in VARIANTS:
            c = cell["variants"][v]
            if c.get("missing"):
                continue
            c["speedup_vs_eager"] = (eager / c["p50_ms"]) if (eager and c["p50_ms"]) else None
            c["ratio_to_eager"] = (c["p50_ms"] / eager) if (eager and c["p50_ms"]) else None


# ------------------------------------------------------------------ report


def _f(x, fmt="{:.3f}", none="n/a"):
    return none if x is None else fmt.format(x)


def _variant(cell: dict, v: str) -> dict:
    """A cell's entry for variant ``v`` (runs before the OpenVINO column have none: shown as not measured)."""
    return cell["variants"].get(v) or {"missing": "not measured", "rounds": []}


def cell_text(c: dict) -> str:
    if c.get("missing"):
        return c["missing"]
    if c["p50_ms"] is None:
        reasons = sorted({m.get("reason") or "?" for m in c["rounds"]})
        return f"failed ({', '.join(reasons)})"
    return f"{c['p50_ms']:.3f} ({c['speedup_vs_eager']:.2f}×)"


def console_table(result: dict) -> str:
    cols = ["model", "batch"] + [TITLES[v] for v in VARIANTS] + ["planner config", "loss"]
    rows = []
    for cell in result["cells"]:
        pv = cell["variants"]["planner"]
        rows.append([cell["model"], str(cell["batch"])] + [cell_text(_variant(cell, v)) for v in VARIANTS]
                    + [pv.get("label") or "-", _f(pv.get("quality_loss"), "{:.1e}", "-")])
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    line = lambda r: "  ".join(s.ljust(w) for s, w in zip(r, widths))  # noqa: E731
    return "\n".join([line(cols), line(["-" * w for w in widths])] + [line(r) for r in rows])


def markdown(result: dict) -> str:
    e, a = result["environment"], result["args"]
    out = [f"# Baselines vs planner — {result['started']}", ""]
    evals = ", ".join(f"{s['model']}: {s['eval_samples']} samples" for s in result["studies"])
    if a.get("quick"):
        out += ["> **Quick smoke run** (`--quick`): tiny settings, not a benchmark result.", ""]
    for m, err in (result.get("failed_models") or {}).items():
        out += [f"> **{m} left out**: its planner study failed: `{err}`", ""]
    if result.get("openvino_missing"):
        out += [f"> **OpenVINO default left out**: {result['openvino_missing']}", ""]
    out += ["## Results", "",
            "p50 latency per batch in ms, median over rounds of each round's p50; in parentheses the speed-up vs eager fp32 "
            "(eager p50 / variant p50; > 1 = faster). Quality loss is the planner metric vs the fp32 eager reference "
            f"({evals}; synthetic inputs, random weights).", "",
            "| model | batch | " + " | ".join(f"{TITLES[v]} ms (×)" for v in VARIANTS) + " | planner deployment (trial) | planner quality loss |",
            "|---|---:|" + "---:|" * len(VARIANTS) + "---|---:|"]
    for cell in result["cells"]:
        pv = cell["variants"]["planner"]
        dep = f"{pv['label']} (#{pv['trial']})" if pv.get("label") else "–"
        out.append(f"| {cell['model']} | {cell['batch']} | " + " | ".join(cell_text(_variant(cell, v)) for v in VARIANTS)
                   + f" | {dep} | {_f(pv.get('quality_loss'), '{:.2e}', '-')} |")
    out += ["", "### Spread and per-round p50 (ms)", "",
            "| model | batch | variant | rounds ok | median p50 | min–max p50 | per round (order position) | quality loss | max CV |",
            "|---|---:|---|---:|---:|---|---|---:|---:|"]
    for cell in result["cells"]:
        for v in VARIANTS:
            c = _variant(cell, v)
            if c.get("missing"):
                continue
            per = ", ".join(
                (f"{m['p50_ms']:.3f}" if m.get("status") == "ok" else f"✗{m.get('reason')}") + f" ({m['position']})" for m in c["rounds"])
            cvs = [m["cv"] for m in c["rounds"] if m.get("cv") is not None]
            out.append(f"| {cell['model']} | {cell['batch']} | {TITLES[v]} | {c['rounds_ok']}/{len(c['rounds'])} | {_f(c['p50_ms'])} | "
                       f"{_f(c['p50_min_ms'])}–{_f(c['p50_max_ms'])} | {per} | {_f(c['quality_loss'], '{:.1e}', '-')} | "
                       f"{_f(max(cvs) if cvs else None, '{:.3f}')} |")
    out += ["", "### Planner winners: study-time vs re-measured", "",
            "| model | batch | trial | deployment | feasible trials at batch | study p50 ms | re-measured p50 ms | study loss |",
            "|---|---:|---:|---|---:|---:|---:|---:|"]
    for cell in result["cells"]:
        w = cell.get("winner")
        if w is None:
            out.append(f"| {cell['model']} | {cell['batch']} | – | no feasible trial at this batch size | 0 | – | – | – |")
        else:
            out.append(f"| {cell['model']} | {cell['batch']} | {w['trial']} | {w['label']} | {w['feasible_at_batch']} | "
                       f"{_f(w['study_p50_ms'])} | {_f(cell['variants']['planner']['p50_ms'])} | {w['study_quality_loss']:.2e} |")
    out += ["", "## Compile / build times (s) — not latency", "",
            "`compile` = the backend's compile_seconds (torch.compile: first two calls incl. Inductor codegen; ORT: session creation; "
            "eager: module preparation); `job` = the whole worker process (model build, export, compile, quality pass, timing). "
            "torch.compile baseline: round 1 starts from an empty Inductor cache (cold), later rounds reuse it (warm).", "",
            "| model | batch | variant | compile s per round | job wall s per round |", "|---|---:|---|---|---|"]
    for cell in result["cells"]:
        for v in VARIANTS:
            c = _variant(cell, v)
            if c.get("missing"):
                continue
            out.append(f"| {cell['model']} | {cell['batch']} | {TITLES[v]} | "
                       + ", ".join(_f(x, "{:.1f}", "–") for x in c["compile_seconds"]) + " | "
                       + ", ".join(_f(x, "{:.1f}", "–") for x in c["job_wall_seconds"]) + " |")
    out += ["", "## Planner studies", "",
            "| model | study | trials (total) | run now | study wall s | states | fail reasons | feasible |", "|---|---|---:|---:|---:|---|---|---:|"]
    for s in result["studies"]:
        out.append(f"| {s['model']} | {s['study']} | {s['trials_total']} | {s['trials_run_now']} | {_f(s['study_seconds'] or None, '{:.0f}', '–')} | "
                   + ", ".join(f"{k} {n}" for k, n in sorted(s["trial_states"].items())) + " | "
                   + (", ".join(f"{k} {n}" for k, n in sorted(s["fail_reasons"].items())) or "–") + f" | {s['feasible']} |")
    t = result["target"]
    m = t["measurement"]
    out += ["", "## Protocol", "",
            f"* Target `{a['target'] or 'this host, probed'}` (name `{t['name']}`, threads {t.get('threads') or 'all cores'} → {e['threads_used']}); "
            f"space `{a['space']}`; constraint max_quality_loss {t['constraints']['max_quality_loss']}, "
            f"latency percentile {t['constraints']['latency_percentile']}.",
            f"* Timing (target `measurement`): warm-up ≥ {m['warmup_iters']} calls and ≥ {m['warmup_seconds']} s; then ≥ {m['min_repeats']} "
            f"calls and ≥ {m['min_seconds']} s (≤ {m['max_seconds']} s), one batch per call with inputs in place; re-measured up to "
            f"{m['max_remeasure']}× when CV > {m['cv_threshold']}.",
            f"* {a['rounds']} round(s). In each round every (model, batch) cell runs its variants back to back, each in a fresh worker "
            "process (`planner.measure.runner.run_job`, kind `trial`, same code path as the study); the variant order rotates each "
            "round and is reversed on odd rounds (order positions are shown per round above).",
            "* Baselines: eager = `TrialConfig('torch', b)`; torch.compile = `torch_compile` mode `default` (Inductor freezing off, "
            "torch's default); ORT = `onnxruntime` ORT_ENABLE_ALL, sequential, intra-op threads = all cores, inter-op 1, model from "
            "planner's cached `torch.onnx.export(dynamo=True)`. OpenVINO default = `openvino.convert_model` of that same ONNX "
            "file + `Core().compile_model(model, 'CPU')` with no options (what it chose by itself: below).",
            f"* Planner: study of {a['trials']} trials per model (TPE, seed {a['seed']}); winner at batch b = lowest latency among "
            "feasible, non-duplicate trials with that batch size; its TrialConfig is re-built from `trial.user_attrs['config']` and "
            "re-measured here, interleaved with the baselines.",
            "* Worker environment: OMP/MKL threads pinned to the target's thread count (planner `worker_env`).",
            ""]
    chosen = sorted({json.dumps(m["ov_properties"], sort_keys=True) for cell in result["cells"]
                     for m in _variant(cell, "openvino")["rounds"] if m.get("ov_properties")})
    if chosen:
        out += ["OpenVINO default chose by itself: " + "; ".join(
            ", ".join(f"{k} {v}" for k, v in json.loads(c).items()) for c in chosen) + ".", ""]
    out += environment_markdown(e)
    out += ["", f"Total wall time: {result['wall_seconds'] / 60:.1f} min (studies {result['study_seconds'] / 60:.1f} min, "
            f"interleaved measurements {result['bench_seconds'] / 60:.1f} min). Raw numbers: `{Path(result['json_path']).name}`.", ""]
    return "\n".join(out)


# ------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        result = json.loads(Path(args.render).read_text())
        md = Path(args.render).with_suffix(".md")
        md.write_text(markdown(result))
        print(console_table(result))
        log(f"wrote {md}")
        return 0
    from planner.errors import ConfigError
    from planner.paths import Home
    from planner.space import load_space
    from planner.target import load_target, probe_host

    t_all = time.perf_counter()
    started = dt.datetime.now()
    try:
        target = load_target(args.target) if args.target else probe_host()
        space = load_space(args.space)
    except ConfigError as e:
        raise SystemExit(f"error: {e}")
    home = Home.resolve(args.home).ensure()
    env = environment(target.thread_count())
    log(f"bench: models {args.model_list}, batches {args.batch_list}, {args.trials} trials, {args.rounds} rounds, "
        f"target {target.name}, home {home.root}; load average {env['loadavg_start']}")
    if busy(env):
        log("WARNING: the machine is busy (see load average); timings will be inflated and noisy. Run on a quiet machine.")

    # 1. planner studies
    studies = []
    t0 = time.perf_counter()
    failed_models: dict[str, str] = {}
    for m in args.model_list:
        try:
            studies.append(ensure_study(m, target, space, home, args))
        except ConfigError as e:  # e.g. the model cannot be loaded: report it, go on with the others
            failed_models[m] = str(e)
            log(f"ERROR [{m}]: planner study failed, model left out of the benchmark: {e}")
    if not studies:
        raise SystemExit("error: no model could be studied: " + "; ".join(f"{m}: {e}" for m, e in failed_models.items()))
    study_seconds = time.perf_counter() - t0
    for s in studies:
        for b in args.batch_list:
            w = s["winners"][b]
            log(f"[{s['spec']['name']}] b={b}: " + (f"winner #{w['trial']} {w['label']} study p50 {w['study_p50_ms']:.3f} ms, "
                                                    f"loss {w['study_quality_loss']:.1e}" if w else "no feasible trial at this batch size"))

    # 2. interleaved rounds
    stamp = started.strftime("%Y-%m-%d-%H%M%S")
    bench_dir = home.root / "bench" / stamp
    from openvino_default import missing_reason

    ov_missing = missing_reason()
    if ov_missing:
        log(f"OpenVINO default: {ov_missing}")
    cells: dict[tuple, dict] = {}
    for s in studies:
        for b in args.batch_list:
            w = s["winners"][b]
            cell = {"model": s["spec"]["name"], "batch": b, "winner": w, "variants": {}}
            for v in VARIANTS:
                cfg = variant_config(v, b, w)
                entry: dict[str, Any] = {"rounds": [], "config": cfg.to_dict() if cfg else None, "label": cfg.describe() if cfg else None}
                if v == "planner":
                    entry["trial"] = w["trial"] if w else None
                    if cfg is None:
                        entry["missing"] = "no feasible trial at this batch"
                if v == "openvino" and ov_missing:
                    entry["missing"] = "not measured (openvino not importable)"
                cell["variants"][v] = entry
            cells[(s["spec"]["name"], b)] = cell
    study_of = {s["spec"]["name"]: s for s in studies}
    n_jobs = args.rounds * sum(1 for c in cells.values() for v in VARIANTS if not c["variants"][v].get("missing"))
    done, t_bench = 0, time.perf_counter()
    for r in range(args.rounds):
        keys = list(cells) if r % 2 == 0 else list(cells)[::-1]
        order = round_order(r)
        log(f"round {r + 1}/{args.rounds}: variant order {order}")
        for key in keys:
            cell = cells[key]
            for pos, v in enumerate(order, 1):
                entry = cell["variants"][v]
                if entry.get("missing"):
                    continue
                from planner.config import TrialConfig

                cfg = TrialConfig.from_dict(entry["config"])
                wd = bench_dir / f"{cell['model']}-b{cell['batch']}" / f"r{r + 1}-{v}"
                m = run_variant(study_of[cell["model"]], v, cfg, target, home, args, wd, r, bench_dir)
                m["position"] = pos
                entry["rounds"].append(m)
                done += 1
                el = time.perf_counter() - t_bench
                status = (f"p50 {m['p50_ms']:.3f} ms cv {m['cv']:.3f} loss {_f(m['quality_loss'], '{:.1e}')}" if m["status"] == "ok"
                          else f"FAILED {m.get('reason')}: {m.get('message', '')[:160]}")
                log(f"  [{done}/{n_jobs}] {cell['model']} b={cell['batch']} {TITLES[v]:14s} {status}; compile "
                    f"{_f(m.get('compile_seconds'), '{:.1f}')} s, job {m['wall_seconds']:.0f} s (ETA {el / done * (n_jobs - done) / 60:.1f} min)")
    bench_seconds = time.perf_counter() - t_bench
    summarize(cells)

    finish_environment(env)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    base = out_dir / f"baselines-{stamp}{'-quick' if args.quick else ''}"
    result = {
        "started": started.isoformat(timespec="seconds"), "args": {k: v for k, v in vars(args).items() if k not in ("model_list", "batch_list")},
        "environment": env, "target": target.model_dump(mode="json"), "studies": studies, "failed_models": failed_models,
        "openvino_missing": ov_missing,
        "cells": [{**c, "variants": c["variants"]} for c in cells.values()],
        "wall_seconds": time.perf_counter() - t_all, "study_seconds": study_seconds, "bench_seconds": bench_seconds,
        "json_path": str(base.with_suffix(".json")), "md_path": str(base.with_suffix(".md")),
    }
    base.with_suffix(".json").write_text(json.dumps(result, indent=2, default=str))
    base.with_suffix(".md").write_text(markdown(result))
    print()
    print("p50 ms per batch, median over rounds (speed-up vs eager fp32)")
    print(console_table(result))
    print()
    log(f"wrote {base.with_suffix('.md')} and .json; total {result['wall_seconds'] / 60:.1f} min "
        f"(studies {study_seconds / 60:.1f}, measurements {bench_seconds / 60:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
