"""Served latency: planner's served pick against the single-request pick and the runtimes' defaults, under open-loop
Poisson traffic, interleaved, in one run (issue #26).

Per model (MiniLM, digits-cnn):

1. a planner study *without* traffic (one request at a time, what planner measured before #26) picks the
   single-request winner; its p50 gives the rate it sustains one request at a time, ``capacity = 1000 / p50``;
2. a planner study *with* traffic at 90 % of that capacity (target ``traffic:``; serving instances, threads and
   dynamic batching in the search) picks the served winner: lowest served p99 within the quality bound and the
   served SLO;
3. four deployments are served at 30 %, 60 % and 90 % of the capacity, in rotated order (interleaved), each in its
   own worker process through the same measurement as a trial (`planner.measure.serving` in
   `planner.measure.worker.served_figures`):
   - ``single``: the single-request pick as `planner export` wrote it before #26 (one instance, no batching),
   - ``ov_tput``: OpenVINO's THROUGHPUT default (the streams and threads the hint picks on this host, an infer
     request per stream) on the same quantized model,
   - ``ort``: ONNX Runtime defaults, fp32, one session with every thread,
   - ``planner``: the served pick;
   at 90 % each also searches the highest rate it sustains with p99 within the SLO (a few measured points).

Results: ``experiments/results/serving-<date>[-quick].{json,md}`` with ``lscpu`` flags, ``nproc``, library
versions and the load average before and after (the machine may be shared: compare cells of one run only).

    python experiments/bench_serving.py --quick          # short load points, small studies (~15 min on 2 cores)
    python experiments/bench_serving.py                  # longer points, two interleaved rounds
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

VARIANTS = ("single", "ov_tput", "ort", "planner")
TITLES = {"single": "single-request pick (1 instance, no batching)", "ov_tput": "OpenVINO THROUGHPUT default",
          "ort": "ONNX Runtime defaults (fp32)", "planner": "planner served pick"}
LOADS = (0.3, 0.6, 0.9)
# bound: max quality_loss (as in bench_compression); slo_factor: served p99 SLO = factor x the single pick's p50
MODELS: dict[str, dict[str, Any]] = {
    "minilm": {"bound": 0.01, "eval_samples": 32, "schemes": ["none", "int8_static"]},
    "digits-cnn": {"bound": 0.005, "eval_samples": 540, "schemes": ["none", "int8_static"]},
}


def log(msg: str) -> None:
    print(f"[{dt.datetime.now():%H:%M:%S}] {msg}", flush=True)


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="minilm,digits-cnn")
    ap.add_argument("--quick", action="store_true", help="short load points, one round, small studies")
    ap.add_argument("--home", default=None, help="planner state folder (default: a fresh temp folder)")
    ap.add_argument("--trials", type=int, default=None, help="trials of the served study (default 12, quick 8)")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 2, quick 1)")
    ap.add_argument("--duration", type=float, default=None, help="measured seconds per load point (default 8, quick 3)")
    ap.add_argument("--slo-factor", type=float, default=5.0, help="served p99 SLO = this x the single pick's p50")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lengths", choices=("full", "data"), default="full",
                    help="data: every request at its own sample's length (traffic lengths: data), for every variant "
                         "on an engine that takes any length; capacity then from the single pick at those lengths")
    ap.add_argument("--out", default=str(REPO / "experiments" / "results"))
    return ap.parse_args(argv)


class Reporter:
    def __init__(self, tag: str):
        self.tag, self.t0 = tag, 0.0

    def start(self, name, total, info):
        log(f"[{self.tag}] study {name}: {total} trials; backends {', '.join(info.get('backends', []))}")

    def trial_started(self, number, cfg):
        self.t0 = time.perf_counter()

    def trial_done(self, o):
        m = o.metrics or {}
        fig = (f"served p99 {m['served_p99_ms']:.2f} ms, single p50 {m['latency_p50_ms']:.3f} ms"
               if "served_p99_ms" in m else (f"p50 {m['latency_p50_ms']:.3f} ms" if "latency_p50_ms" in m else ""))
        log(f"[{self.tag}] #{o.number} {o.status} {o.config.describe() if o.config else '?'}: {fig} "
            f"{o.reason or ''} {(o.message or '')[:100]} [{time.perf_counter() - self.t0:.0f} s]")

    def __getattr__(self, name):  # the reporter methods this bench does not show
        return lambda *a, **k: None


def space_yaml(model: str, served: bool, seed_quant: str | None = None) -> str:
    schemes = MODELS[model]["schemes"]
    text = (f"name: bench-serving-{'served' if served else 'single'}\nbackends:\n"
            f"  openvino: {{performance_hint: [{'LATENCY, THROUGHPUT' if served else 'LATENCY'}]}}\n  onnxruntime: {{}}\n"
            f"batch_size: [1]\nquantize:\n  schemes: [{', '.join(schemes)}]\n")
    if served:
        text += "serving:\n  instances: [1, 2]\n  max_batch: [1, 4, 8]\n  max_queue_delay_us: [0, 2000]\n"
        if seed_quant:  # the single-request study's engine first (its serving left to the sampler), as a user would
            text += (f"seeds:\n  - {{backend: openvino, quant: {seed_quant}}}\n  - {{backend: openvino, quant: {seed_quant}}}\n"
                     # OpenVINO's own THROUGHPUT default (a stream per core, a thread each) is always measured
                     f"  - {{backend: openvino, options: {{performance_hint: THROUGHPUT}}, quant: {seed_quant}, "
                     f"serving: {{instances: 2, max_batch: 1}}}}\n")
    return text


def run_study(model: str, target, space_text: str, home, trials: int, seed: int, tag: str) -> Any:
    import optuna

    from planner.model import parse_model
    from planner.search.study import Optimizer, StudyOptions
    from planner.space import load_space

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    p = home.root / f"space-{tag}.yaml"
    p.write_text(space_text)
    space = load_space(p)
    opts = StudyOptions(trials=trials, seed=seed, sampler="tpe" if "served" in tag else "grid",
                        eval_samples=MODELS[model]["eval_samples"], study_name=f"{model}-{tag}",
                        # the served study re-measures its 3 fastest feasible trials under the traffic (3 rounds)
                        confirm_top_k=3 if "served" in tag else 0, confirm_rounds=3)
    return Optimizer(parse_model(model), target, space, home, opts, Reporter(f"{model} {tag}")).run()


def best_trial(study, bound: float, metric: str) -> tuple[Any, bool]:
    """The trial with the lowest ``metric`` among the feasible ones, with the study's re-measured (confirmed)
    figures where it has them, as planner's front reads them; where none is feasible (no deployment met the
    served SLO or rate), among those within the quality bound, with False."""
    from optuna.trial import TrialState

    from planner.select.pareto import confirmed

    conf = confirmed(study)

    def value(t):
        c = conf.get(t.number) or {}
        return c.get(metric, t.user_attrs["metrics"][metric])

    done = [t for t in study.trials if t.state == TrialState.COMPLETE and "duplicate_of" not in t.user_attrs
            and t.user_attrs["metrics"]["quality_loss"] <= bound]
    ok = [t for t in done if all(v <= 0 for v in t.constraints.values()) and not (conf.get(t.number) or {}).get("slo_violated")]
    if not done:
        raise SystemExit(f"study {study.study_name}: no trial within the quality bound")
    return min(ok or done, key=value), bool(ok)


def ov_throughput_default(xml: Path) -> dict[str, int]:
    """What OpenVINO's THROUGHPUT hint picks for this model on this CPU (streams, threads, infer requests)."""
    import openvino as ov

    c = ov.Core().compile_model(str(xml), "CPU", {"PERFORMANCE_HINT": "THROUGHPUT"})
    return {"streams": int(c.get_property("NUM_STREAMS").to_integer() if hasattr(c.get_property("NUM_STREAMS"), "to_integer")
                           else int(str(c.get_property("NUM_STREAMS")))),
            "threads": int(c.get_property("INFERENCE_NUM_THREADS")),
            "requests": int(c.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))}


def variant_configs(single_cfg: dict, served_cfg: dict, tput: dict) -> dict[str, Any]:
    from planner.config import ServingConfig, TrialConfig, freeze_options

    single = TrialConfig.from_dict({**single_cfg, "serving": None})
    out = {"single": TrialConfig(**{**single.__dict__, "serving": ServingConfig()}),
           "ort": TrialConfig("onnxruntime", 1, serving=ServingConfig()),
           "planner": TrialConfig.from_dict(served_cfg)}
    quant = single.quant if single.backend == "openvino" else TrialConfig.from_dict(served_cfg).quant
    out["ov_tput"] = TrialConfig("openvino", 1, freeze_options({"performance_hint": "THROUGHPUT"}), quant=quant,
                                 serving=ServingConfig(instances=tput["streams"],
                                                       threads=max(1, tput["threads"] // tput["streams"])))
    return out


def run_point(model_info: dict, cfg, target, home, workdir: Path) -> dict:
    from planner.measure.runner import run_job, worker_env

    env = worker_env(target, home.cache)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    job = {"kind": "trial", "spec": model_info["spec"], "target": target.model_dump(mode="json"), "config": cfg.to_dict(),
           "cache_dir": str(home.cache), "workdir": str(workdir), "reference": model_info["reference"],
           "output_kind": model_info["output_kind"], "abort_above_ms": None}
    res = run_job(job, workdir, 900, env)
    shutil.rmtree(workdir, ignore_errors=True)
    if res.get("status") != "ok":
        return {"status": res.get("status"), "reason": res.get("reason"), "message": (res.get("message") or "")[:300]}
    at = res["served"]["at_rate"]
    return {"status": "ok", "single_p50_ms": res["latency"]["p50_ms"], "quality_loss": res["quality"].get("quality_loss"),
            **{k: at.get(k) for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "rate", "offered_rate", "achieved_rate",
                                      "dropped", "late", "mean_batch", "requests", "lengths")},
            "lengths_served": res["served"].get("lengths"),
            "sustained_rate": res["served"].get("sustained_rate"), "rate_points": res["served"].get("rate_points"),
            "build_info": {k: v for k, v in (res.get("build_info") or {}).items() if k.startswith("compiled_")}}


def environment() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    flags = ""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        model = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), "")
        flags = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Flags")), "")
    except (OSError, subprocess.SubprocessError):
        model = ""
    libs = {}
    for d in ("openvino", "onnxruntime", "nncf", "torch", "numpy", "optuna"):
        try:
            libs[d] = version(d)
        except PackageNotFoundError:
            pass
    keep = [f for f in flags.split() if f.startswith(("avx", "amx", "fma", "sse4_2"))]
    return {"cpu": model, "nproc": os.cpu_count(), "isa_flags": keep, "lscpu_flags": flags, "libraries": libs,
            "python": sys.version.split()[0]}


def bench_model(model: str, args, home, target0, rounds: int, duration: float) -> dict:
    import optuna

    from planner.target import Traffic

    info = MODELS[model]
    bound = info["bound"]
    t_single = target0.model_copy(update={"constraints": target0.constraints.model_copy(update={"max_quality_loss": bound})})
    log(f"[{model}] single-request study")
    run_study(model, t_single, space_yaml(model, False), home, 4, args.seed, "single")
    st = optuna.load_study(study_name=f"{model}-single", storage=home.optuna_url)
    single, _ = best_trial(st, bound, "latency_p50_ms")
    p50 = single.user_attrs["metrics"]["latency_p50_ms"]
    capacity = 1000.0 / p50
    slo = args.slo_factor * p50
    lengths = {"lengths": "data", "length_multiple": 8} if args.lengths == "data" and has_length_axes(model) else {}
    minfo = {"spec": st.user_attrs.get("model_spec") or _spec(model), "reference": str(home.study_dir(f"{model}-single") / "reference.npz"),
             "output_kind": (st.user_attrs.get("model_info") or {}).get("output_kind", "logits")}
    if lengths:  # one client at a time at the requests' own lengths: what the single pick sustains one at a time
        from planner.config import ServingConfig, TrialConfig

        one = Traffic(arrival="closed", concurrency=1, duration_s=max(duration, 3.0), warmup_s=0.5, drain_s=2.0,
                      seed=args.seed, rate_search_steps=0, **lengths)
        s1 = TrialConfig.from_dict({**single.user_attrs["config"], "serving": None})
        cfg1 = TrialConfig(**{**s1.__dict__, "serving": ServingConfig()})
        res1 = run_point(minfo, cfg1, t_single.model_copy(update={"traffic": one}), home, home.root / "bench" / f"{model}-own")
        if res1["status"] != "ok":
            raise SystemExit(f"[{model}] the single pick at own lengths failed: {res1}")
        p50 = res1["mean_ms"]
        log(f"[{model}] single pick at the requests' own lengths (1 client): mean {p50:.3f} ms per request "
            f"(padded: p50 {single.user_attrs['metrics']['latency_p50_ms']:.3f} ms)")
        capacity = 1000.0 / p50
        slo = args.slo_factor * p50
    log(f"[{model}] single-request pick #{single.number} {single.user_attrs['label']}: p50 {p50:.3f} ms -> "
        f"capacity {capacity:.0f} req/s; SLO p99 <= {slo:.2f} ms")
    min_requests = 100 if args.quick else 400  # per load point, for p99 to mean something
    traffic = dict(arrival="poisson", rate=round(0.9 * capacity, 1), duration_s=max(duration, min_requests / (0.9 * capacity)),
                   warmup_s=0.5, drain_s=2.0,
                   seed=args.seed, percentile="p99", slo_ms=round(slo, 3), rate_search_steps=3, **lengths)
    t_served = t_single.model_copy(update={"traffic": Traffic(**traffic)})
    log(f"[{model}] served study at {traffic['rate']} req/s")
    t0 = time.perf_counter()
    sq = single.user_attrs["config"]["quant"]["scheme"] if single.user_attrs["config"]["backend"] == "openvino" else None
    run_study(model, t_served, space_yaml(model, True, sq), home, args.trials or (8 if args.quick else 12), args.seed, "served")
    served_seconds = time.perf_counter() - t0
    ss = optuna.load_study(study_name=f"{model}-served", storage=home.optuna_url)
    served, feasible = best_trial(ss, bound, "served_p99_ms")
    log(f"[{model}] served pick #{served.number} {served.user_attrs['label']}: served p99 "
        f"{served.user_attrs['metrics']['served_p99_ms']:.2f} ms")
    xml = next((home.study_dir(f"{model}-single") / "trials").glob("*/model.xml"), None)
    tput = ov_throughput_default(xml) if xml else {"streams": os.cpu_count() or 1, "threads": os.cpu_count() or 1, "requests": os.cpu_count() or 1}
    cfgs = variant_configs(single.user_attrs["config"], served.user_attrs["config"], tput)
    cells: dict[str, dict[str, list]] = {f"{load:.1f}": {v: [] for v in VARIANTS} for load in LOADS}
    floor: dict[str, dict] = {}
    for r in range(rounds):
        for li, load in enumerate(LOADS):
            if r == 0:  # the in-process server and generator alone (an engine that does nothing): the harness's floor
                from planner.measure.serving import arrival_times, serve_open

                rate = round(load * capacity, 1)
                s = serve_open([lambda k: None], arrival_times("poisson", rate, 0.5 + max(duration, min_requests / rate),
                                                               args.seed), rate=rate,
                               warmup_s=0.5)
                floor[f"{load:.1f}"] = {"p50_ms": s.p50_ms, "p99_ms": s.p99_ms, "achieved_rate": s.achieved_rate,
                                        "late": s.late, "requests": s.requests}
                log(f"[{model}] harness floor at {rate:.0f} req/s: p50 {s.p50_ms:.3f} p99 {s.p99_ms:.3f} ms, "
                    f"achieved {s.achieved_rate:.0f}, late {s.late}/{s.requests}")
            k = (r * len(LOADS) + li) % len(VARIANTS)
            order = list(VARIANTS[k:] + VARIANTS[:k])
            for v in order:
                tr = Traffic(**{**traffic, "rate": round(load * capacity, 1), "rate_search_steps": 4 if load == LOADS[-1] else 0,
                                "duration_s": max(duration, min_requests / (load * capacity))})
                tgt = t_single.model_copy(update={"traffic": tr})
                res = run_point(minfo, cfgs[v], tgt, home, home.root / "bench" / f"{model}-{v}-{load}-{r}")
                res["round"] = r + 1
                cells[f"{load:.1f}"][v].append(res)
                log(f"[{model}] round {r + 1} load {load:.0%} {v:8s}: " + (
                    f"p50 {res['p50_ms']:.2f} p99 {res['p99_ms']:.2f} ms, achieved {res['achieved_rate']:.0f}/"
                    f"{res['rate']:.0f} req/s, dropped {res['dropped']}, sustained {res.get('sustained_rate')}"
                    if res["status"] == "ok" else f"{res['status']} {res.get('reason')} {res.get('message')}"))
    return {"model": model, "bound": bound, "lengths": args.lengths, "single_pick": {"trial": single.number, "label": single.user_attrs["label"],
                                                            "config": single.user_attrs["config"], "p50_ms": p50,
                                                            "padded_p50_ms": single.user_attrs["metrics"]["latency_p50_ms"]},
            "capacity_rps": capacity, "slo_p99_ms": slo, "traffic": traffic, "served_study_seconds": served_seconds,
            "served_pick": {"feasible": feasible, "trial": served.number, "label": served.user_attrs["label"], "config": served.user_attrs["config"],
                            "study_metrics": {k: served.user_attrs["metrics"].get(k) for k in
                                              ("served_p50_ms", "served_p99_ms", "sustained_rate", "quality_loss")}},
            "served_confirmation": ss.user_attrs.get("confirmation"),
            "served_trials": [{"trial": t.number, "label": t.user_attrs.get("label"), "state": t.state.name,
                               "served_p99_ms": (t.user_attrs.get("metrics") or {}).get("served_p99_ms"),
                               "sustained_rate": (t.user_attrs.get("metrics") or {}).get("sustained_rate"),
                               "quality_loss": (t.user_attrs.get("metrics") or {}).get("quality_loss"),
                               "fail": t.user_attrs.get("fail_message")} for t in ss.trials],
            "ov_throughput_default": tput, "variants": {v: cfgs[v].describe() for v in VARIANTS}, "cells": cells,
            "harness_floor": floor}


def has_length_axes(model: str) -> bool:
    """Whether the zoo model's inputs declare a length axis (`--lengths data` applies to it; others stay padded)."""
    import importlib

    from planner.zoo import ZOO

    return any(i.length_axis is not None for i in getattr(importlib.import_module(ZOO[model]), "INPUTS", ()))


def _spec(model: str) -> dict:
    from planner.model import parse_model

    return parse_model(model).to_dict()


def _med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def _f(x, fmt="{:.2f}"):
    return "n/a" if x is None else fmt.format(x)


def _confirmation_lines(m: dict) -> list[str]:
    """The served study's re-measurement of its fastest trials (planner's own `--confirm` under the traffic)."""
    c = m.get("served_confirmation") or {}
    labels = {t["trial"]: t["label"] for t in m.get("served_trials", [])}
    rows = [f"#{n} `{labels.get(int(n), '?')}`: study p99 {v['study_latency_ms']:.2f} ms → confirmed "
            f"{v['latency_ms']:.2f} ms (rounds {', '.join(f'{x:.1f}' for x in v.get('round_served_ms', []))})"
            + (" — breaks the SLO or the rate" if v.get("slo_violated") else "") for n, v in (c.get("trials") or {}).items()]
    if not rows:
        return []
    which = ("no trial met the SLO at the rate, so it re-measured the closest ones" if c.get("closest")
             else "it re-measured its fastest feasible trials")
    return [f"The served study's `--confirm`: {which} in {c.get('rounds')} interleaved rounds under its traffic: "
            + "; ".join(rows) + ".", ""]


def _mean_length(cells: list[dict]) -> str:
    for c in cells:
        hist = c.get("lengths") or {}
        if hist:
            return f"{sum(int(k) * v for k, v in hist.items()) / sum(hist.values()):.1f}"
    return "full (padded)"


def markdown(result: dict) -> str:
    env = result["environment"]
    lines = [f"# Served latency benchmark {result['date']}{' (quick)' if result['quick'] else ''}", "",
             f"Host: {env['cpu']}, nproc {env['nproc']}, ISA {' '.join(env['isa_flags'])}; "
             + ", ".join(f"{k} {v}" for k, v in env["libraries"].items()) + ".",
             f"Load average before {result['loadavg_before']}, after {result['loadavg_after']} "
             "(a shared machine: compare cells of this run only).",
             f"Open-loop Poisson arrivals, {result['duration_s']} s (at least {result['min_requests']} requests) measured per "
             "point after 0.5 s warm-up, batch-1 requests; "
             f"latency = completion − scheduled arrival; {result['rounds']} interleaved round(s), median over rounds.", ""]
    for m in result["models"]:
        lines += [f"## {m['model']}", "",
                  f"Single-request pick: trial {m['single_pick']['trial']} `{m['single_pick']['label']}`, p50 "
                  f"{m['single_pick']['p50_ms']:.3f} ms → one-at-a-time capacity {m['capacity_rps']:.0f} req/s. "
                  f"SLO: p99 ≤ {m['slo_p99_ms']:.2f} ms. Served pick (study at {m['traffic']['rate']} req/s): trial "
                  f"{m['served_pick']['trial']} `{m['served_pick']['label']}`"
                  + ("" if m["served_pick"]["feasible"] else " (no trial of the served study met the SLO and the rate: "
                     "the lowest served p99 within the quality bound)") + ". OpenVINO THROUGHPUT default here: "
                  f"{m['ov_throughput_default']}.", "",
                  *([f"**Requests at their own lengths** (`traffic.lengths: data`, padded to a multiple of 8): every "
                     "variant on an engine that takes any length (OpenVINO, ONNX Runtime: a dynamic length axis, as a "
                     "single-tool user converting the model gets by default) is served each sentence at its length; "
                     "the capacity above is the single pick's mean time per request with one client at those lengths "
                     f"(its single-request p50 padded to the full length: {m['single_pick']['padded_p50_ms']:.3f} ms). "
                     "Mean padded length served per variant at 90 %: " + ", ".join(
                         f"{TITLES[v]} {_mean_length(m['cells'][f'{LOADS[-1]:.1f}'][v])}" for v in VARIANTS) + ".", ""]
                    if m.get("lengths") == "data" and m["traffic"].get("lengths") == "data" else []),
                  *_confirmation_lines(m),
                  "Served p50 / p99 (achieved / offered rate: the offered rate is the Poisson sample's own, a few "
                  "percent off the asked one at a few hundred requests). Harness floor: the same generator and server around an "
                  "engine that does nothing (what the in-process harness itself adds on this host at that rate).", "",
                  "| load | " + " | ".join(TITLES[v] for v in VARIANTS) + " | harness floor |",
                  "|---|" + "---|" * (len(VARIANTS) + 1)]
        for load, row in m["cells"].items():
            fl = m["harness_floor"].get(load)
            cells = []
            for v in VARIANTS:
                ok = [c for c in row[v] if c["status"] == "ok"]
                if not ok:
                    cells.append(f"failed: {row[v][0].get('reason') if row[v] else '?'}")
                    continue
                cells.append(f"{_f(_med([c['p50_ms'] for c in ok]))} / {_f(_med([c['p99_ms'] for c in ok]))} ms"
                             f" ({_f(_med([c['achieved_rate'] for c in ok]), '{:.0f}')}/"
                             f"{_f(_med([c.get('offered_rate') for c in ok]) or ok[0]['rate'], '{:.0f}')} req/s"
                             + (f", {sum(c['dropped'] for c in ok)} dropped" if any(c['dropped'] for c in ok) else "") + ")")
            cells.append(f"{fl['p50_ms']:.2f} / {fl['p99_ms']:.2f} ms ({fl['late']}/{fl['requests']} sent late)" if fl else "n/a")
            lines.append(f"| {float(load):.0%} | " + " | ".join(cells) + " |")
        last = m["cells"][f"{LOADS[-1]:.1f}"]
        sus = {v: _med([c.get("sustained_rate") for c in last[v] if c["status"] == "ok"]) for v in VARIANTS}
        lines.append("| sustained req/s (p99 ≤ SLO) | " + " | ".join(_f(sus[v], "{:.0f}") for v in VARIANTS) + " | |")
        p99 = {v: _med([c["p99_ms"] for c in last[v] if c["status"] == "ok"]) for v in VARIANTS}
        if p99["planner"] and p99["single"]:
            best_other = min([x for x in (p99["ov_tput"], p99["ort"]) if x], default=None)
            lines += ["", f"At 90 %: planner p99 / single pick p99 = {p99['planner'] / p99['single']:.2f} (goal ≤ 0.6)"
                      + (f"; planner / best of THROUGHPUT default and ORT = {p99['planner'] / best_other:.2f} (goal ≤ 1)" if best_other else "")
                      + (f"; sustained rate planner / single pick = {sus['planner'] / sus['single']:.2f} (goal ≥ 1.3)"
                         if sus["planner"] and sus["single"] else "; sustained rate of the single pick: none within the SLO")
                      + "."]
        lines += ["", "Per round at 90 % (p99 ms; sustained req/s): " + "; ".join(
            f"{TITLES[v]} " + ", ".join(f"{_f(c.get('p99_ms'), '{:.1f}')} ({_f(c.get('sustained_rate'), '{:.0f}')})"
                                        for c in last[v] if c["status"] == "ok") for v in VARIANTS) + "."]
        lines += ["", "Variants: " + "; ".join(f"{TITLES[v]}: `{m['variants'][v]}`" for v in VARIANTS) + ".", ""]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    import tempfile

    from planner.paths import Home
    from planner.target import probe_host

    rounds = args.rounds or (1 if args.quick else 2)
    duration = args.duration or (3.0 if args.quick else 8.0)
    home = Home(Path(args.home) if args.home else Path(tempfile.mkdtemp(prefix="bench-serving-")) / "home")
    home.root.mkdir(parents=True, exist_ok=True)
    target0 = probe_host()
    target0 = target0.model_copy(update={"measurement": target0.measurement.model_copy(update={"max_seconds": 3.0})})
    result: dict[str, Any] = {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "quick": args.quick,
                              "rounds": rounds, "duration_s": duration, "min_requests": 100 if args.quick else 400, "environment": environment(),
                              "loadavg_before": os.getloadavg(), "target": target0.name, "home": str(home.root), "models": []}
    t0 = time.perf_counter()
    for model in [m.strip() for m in args.models.split(",") if m.strip()]:
        result["models"].append(bench_model(model, args, home, target0, rounds, duration))
    result["loadavg_after"] = os.getloadavg()
    result["seconds"] = time.perf_counter() - t0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"serving-{dt.datetime.now():%Y-%m-%d-%H%M%S}{'-quick' if args.quick else ''}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2, default=str))
    stem.with_suffix(".md").write_text(markdown(result))
    log(f"wrote {stem}.md and .json ({result['seconds'] / 60:.1f} min)")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
