#!/usr/bin/env python
"""TVM MetaSchedule benchmark: untuned vs tuned TVM vs ONNX Runtime fp32 and OpenVINO default, and what database reuse saves.

One run, one machine, one model and batch size (default resnet18, batch 1):

  study A  grid over {ORT fp32 (ORT_ENABLE_ALL), TVM untuned (tuning_trials=0), TVM tuned (tuning_trials=N),
           OpenVINO default (convert + compile_model(model, "CPU"), no options: experiments/openvino_default.py, left
           out where openvino is missing)} in a fresh planner home: the tuned trial pays the whole MetaSchedule search.
  study B  the same three candidates as a *second* study in the same home: the tuned trial finds the
           workload's database in the planner cache and only applies it (no new tuning trials).

Every number is a planner trial (fresh worker process, the study's code path, quality checked against the
fp32 reference, latency per the target's measurement protocol).  Tuning and compile time are reported apart
from latency.  Study B re-measures the same candidates, so the two studies also show run-to-run spread.

    .venv/bin/python experiments/bench_tvm.py                          # resnet18 b1, 800 trials
    .venv/bin/python experiments/bench_tvm.py --model tiny-mlp --tuning-trials 32 --quick   # smoke run

MetaSchedule picks evolutionary search + XGBoost cost model when `xgboost` imports (pip install xgboost-cpu),
else replay-trace with a random cost model; the result names which one ran.
Writes experiments/results/tvm-<model>-b<batch>-<date>.md and .json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import REPO, LineReporter, environment, finish_environment, log  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet18")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--tuning-trials", type=int, default=800, help="MetaSchedule measured trials of the tuned candidate")
    p.add_argument("--max-tuning-seconds", type=float, default=5400.0, help="cap on the tuned candidate's search")
    p.add_argument("--target", default=str(REPO / "targets" / "cpu.yaml"))
    p.add_argument("--home", default=str(REPO / "experiments" / ".bench-home" / "tvm"), help="planner home (wiped first unless --keep-home)")
    p.add_argument("--keep-home", action="store_true", help="reuse --home (and its tuning database) instead of wiping it")
    p.add_argument("--eval-samples", type=int, default=16)
    p.add_argument("--quick", action="store_true", help="short measurement protocol (experiments/configs/cpu-quick.yaml)")
    p.add_argument("--out-dir", default=str(REPO / "experiments" / "results"))
    p.add_argument("--render", metavar="JSON", help="re-write the Markdown of an earlier run from its JSON; nothing is measured")
    a = p.parse_args(argv)
    if a.quick and "--target" not in (argv if argv is not None else sys.argv[1:]):
        a.target = str(REPO / "experiments" / "configs" / "cpu-quick.yaml")
    return a


def bench_space(args, openvino: bool = False):
    from planner.space import SearchSpace

    c = lambda *v: {"choices": list(v)}  # noqa: E731
    backends = {
        "onnxruntime": {"graph_optimization_level": c("all")},
        "tvm": {"tuning_trials": c(0, args.tuning_trials), "max_tuning_seconds": c(args.max_tuning_seconds)},
    }
    if openvino:
        from openvino_default import NAME

        backends[NAME] = {}
    return SearchSpace.model_validate({"name": f"tvm-bench-{args.tuning_trials}", "batch_size": c(args.batch), "backends": backends})


def run_study(name: str, spec, target, space, home, args) -> list[dict[str, Any]]:
    n = 2 + len(space.backends) - 1  # ORT, TVM untuned and tuned, OpenVINO default where measured
    import optuna
    from optuna.trial import TrialState

    from planner.search.study import Optimizer, StudyOptions

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    opts = StudyOptions(trials=n, study_name=name, sampler="grid", eval_samples=args.eval_samples,
                        trial_timeout=args.max_tuning_seconds + 1800, early_exit_factor=None)
    t0 = time.perf_counter()
    Optimizer(spec, target, space, home, opts, LineReporter(name, n)).run()
    wall = time.perf_counter() - t0
    rows = []
    for t in optuna.load_study(study_name=name, storage=home.optuna_url).trials:
        m = t.user_attrs.get("metrics") or {}
        cfg = t.user_attrs.get("config") or {}
        opts_ = dict(cfg.get("backend_options") or {})
        rows.append({
            "study": name, "trial": t.number, "state": t.state.name, "backend": cfg.get("backend"),
            "tuning_trials": opts_.get("tuning_trials"), "fail": t.user_attrs.get("fail_message"),
            "p50_ms": m.get("latency_p50_ms"), "p99_ms": m.get("latency_p99_ms"), "cv": m.get("latency_cv"),
            "quality_loss": m.get("quality_loss"), "compile_s": m.get("compile_seconds"),
            "tuning_s": m.get("build.tuning_seconds"), "tuning_done": m.get("build.tuning_trials_done"),
            "reused_records": m.get("build.reused_records"), "tuning_records": m.get("build.tuning_records"),
            "study_wall_s": wall, "ok": t.state == TrialState.COMPLETE,
        })
    return rows


def label(r) -> str:
    if r["backend"] == "onnxruntime":
        return "ORT fp32 (all)"
    if r["backend"] == "openvino_default":
        return "OpenVINO default"
    return "TVM untuned" if not r["tuning_trials"] else f"TVM tuned ({r['tuning_trials']} trials)"


def render(res: dict[str, Any]) -> str:
    a, b = res["studies"]["A"], res["studies"]["B"]
    ort = {s: next((r for r in rows if r["backend"] == "onnxruntime" and r["ok"]), None) for s, rows in (("A", a), ("B", b))}
    f = lambda v, d=3: "—" if v is None else f"{v:.{d}f}"  # noqa: E731
    e = res["env"]
    out = [f"# TVM MetaSchedule: {res['model']} batch {res['batch']} ({res['date']})", "",
           f"{e['cpu']}, {e['logical_cpus']} logical CPUs; tvm {e['tvm']}, onnxruntime {e['onnxruntime']}; "
           f"MetaSchedule search: {res['strategy']}. Load average before {e['loadavg_start']}, after {e['loadavg_end']}.", "",
           *(["> **Warning**: the machine was busy when this run started (1-min load average above 1 before any of its "
              "own work). Latencies are inflated and noisy, and tuning measured its candidates under that load too.", ""]
             if float(e["loadavg_start"].split(",")[0]) > 1.0 else []),
           ("Both studies ran in a planner home kept from an earlier run (`--keep-home`): the tuned candidate only applies "
            "the database that run tuned, so this run re-measures; its tuning cost is in the earlier run's file. "
            if res.get("keep_home") else
            "Study A runs in a fresh planner home (the tuned candidate pays the search); study B is a second study in the "
            "same home (the tuned candidate reuses the database). ") + "Each row is one planner trial: a fresh worker process, "
           "quality checked against fp32, latency per the target's protocol. Ratio = ORT p50 / row p50 in the same study "
           "(> 1 is faster than ORT).", "",
           *([f"> **OpenVINO default left out**: {res['openvino_missing']}", ""] if res.get("openvino_missing") else []),
           "| study | candidate | p50 ms | p99 ms | CV | vs ORT | quality loss | compile s | tuning s | new tuning trials | records reused |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s, rows in (("A", a), ("B", b)):
        for r in sorted(rows, key=lambda r: (r["backend"] != "onnxruntime", r["tuning_trials"] or 0)):
            if not r["ok"]:
                out.append(f"| {s} | {label(r)} | failed: {(r['fail'] or r['state'])[:80]} |||||||||")
                continue
            ratio = ort[s]["p50_ms"] / r["p50_ms"] if ort[s] and r["p50_ms"] else None
            out.append(f"| {s} | {label(r)} | {f(r['p50_ms'])} | {f(r['p99_ms'])} | {f(r['cv'], 2)} | "
                       f"{'—' if ratio is None else f'{ratio:.2f}×'} | {f(r['quality_loss'], 6)} | {f(r['compile_s'], 1)} | "
                       f"{f(r['tuning_s'], 1)} | {r['tuning_done'] if r['tuning_done'] is not None else '—'} | "
                       f"{r['reused_records'] if r['reused_records'] is not None else '—'} |")
    out += ["", f"Study wall time: A {a[0]['study_wall_s']:.0f} s, B {b[0]['study_wall_s']:.0f} s "
            f"(B/A = {b[0]['study_wall_s'] / a[0]['study_wall_s']:.2f})." if a and b else "", ""]
    return "\n".join(out)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.render:
        src = Path(args.render)
        md = render(json.loads(src.read_text()))
        src.with_suffix(".md").write_text(md)
        print(md)
        return 0
    from planner.model import parse_model
    from planner.paths import Home
    from planner.target import load_target

    root = Path(args.home)
    if root.exists() and not args.keep_home:
        shutil.rmtree(root)
    home = Home(root)
    target = load_target(args.target)
    if args.quick:  # the quick protocol, with tvm allowed
        target = target.model_copy(update={"backends": sorted(set(target.backends) | {"onnxruntime", "tvm"})})
    missing = {"onnxruntime", "tvm"} - set(target.backends)
    if missing:
        raise SystemExit(f"--target {args.target}: backends must include onnxruntime and tvm (missing: {', '.join(sorted(missing))})")
    spec = parse_model(args.model)
    from openvino_default import NAME, missing_reason
    from openvino_default import worker_env as ov_env

    ov_missing = missing_reason()
    if ov_missing:
        log(f"OpenVINO default: {ov_missing}")
    else:  # the bench-only plugin, registered here and in the study's workers (they inherit this environment)
        ov_env(os.environ)
        target = target.model_copy(update={"backends": [*target.backends, NAME]})
    space = bench_space(args, openvino=not ov_missing)
    env = environment(target.thread_count())
    env["tvm"] = __import__("importlib.metadata").metadata.version("apache-tvm")
    strategy = ("evolutionary search, XGBoost cost model" if importlib.util.find_spec("xgboost")
                else "replay-trace, random cost model (xgboost not installed)")
    log(f"{args.model} b={args.batch}: tuned candidate gets {args.tuning_trials} trials; {strategy}")
    stamp = dt.datetime.now().strftime("%Y-%m-%d-%H%M%S")
    studies = {}
    for s in ("A", "B"):
        studies[s] = run_study(f"tvm-bench-{s}-{stamp}", spec, target, space, home, args)
    finish_environment(env)
    res = {"model": args.model, "batch": args.batch, "date": stamp, "tuning_trials": args.tuning_trials, "keep_home": args.keep_home,
           "openvino_missing": ov_missing,
           "strategy": strategy, "env": env, "studies": studies}
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base = out / f"tvm-{args.model}-b{args.batch}-{stamp}"
    base.with_suffix(".json").write_text(json.dumps(res, indent=1, default=str))
    md = render(res)
    base.with_suffix(".md").write_text(md)
    print(md)
    log(f"wrote {base}.md/.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
