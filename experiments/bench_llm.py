#!/usr/bin/env python
"""LLM decoder benchmark: the planner's Pareto front (TTFT p99, TPOT p99, quality loss) for gpt-mini on this CPU, and
its best point against eager fp32 and torch.compile default, as ratios from one interleaved run.

1. Study.  A planner LLM study (`planner.search.study.Optimizer` with a `planner.llm.workload.Workload`; objectives
   ttft, tpot, quality; TPE, seed 0) of the model (default `gpt-mini`) on the target (default `targets/cpu.yaml`) for the
   workload (default `experiments/chat.yaml`: its batch sizes are the study's batch axis, its TTFT/TPOT SLO and quality
   bound are the study's constraints).  The study is topped up to --trials (an existing study with as many is reused).
   The default search space is built in code (`llm_space`): torch eager, torch_compile (mode default or
   max-autotune-no-cudagraphs, freezing off/on) and ONNX Runtime (prefill + decode graphs, graph optimisation extended
   or all), each fp32 or with the int8 schemes the decoder runtimes implement (`planner.llm.runtimes.QUANT_SCHEMES`:
   int8_dynamic on all three, int8_weight_only on the torch backends; fp16/bf16 are not in the CPU target's precisions),
   no pruning.  --space takes a YAML/built-in space instead; combinations the decoder runtimes cannot run fail as
   "unsupported" trials without a worker.
2. Front.  `planner.select.pareto.pareto_front(study)` (feasible trials: SLO and quality bound met), and the front
   of all complete trials ignoring the constraints; trial states, violated constraints and fail reasons.
3. Best point.  The feasible trial (every constraint of the study met: TTFT and TPOT SLO, quality bound) with the
   lowest TPOT p99 (ties: lower TTFT p99, then lower quality loss).  When no trial is feasible: the point of the
   unconstrained front with the lowest TPOT p99 among those within the quality bound (the report says so).
4. Interleaved re-measurement, --rounds rounds (default 3), the variant order rotating each round and reversed on odd
   rounds; each variant is a fresh worker process (`planner.measure.runner.run_job`, kind "llm_trial": the study's own
   code path: build, teacher-forced quality against the study's `reference.npz`, TTFT/TPOT per the workload and the
   target's timing protocol), all at the best point's batch size:
     (a) eager     eager PyTorch fp32                 TrialConfig("torch", b)
     (b) compile   torch.compile mode="default"       TrialConfig("torch_compile", b, mode=default) (freezing off, as in torch;
                   static KV cache); a private Inductor cache, empty in round 1 (cold compile), reused later (warm)
     (c) best      the best point's stored config     TrialConfig.from_dict(trial.user_attrs["config"]) (study cache)
5. Report per variant: TTFT p50/p99, TPOT p50/p99, tokens/s, quality loss (greedy next-token disagreement vs fp32) and
   KL, build seconds; per round the ratios best / eager, best / torch.compile and torch.compile / eager of every
   metric, then their median over rounds with min–max.  Latency ratios < 1 and tokens/s ratios > 1 mean faster.

    .venv/bin/python experiments/bench_llm.py                 # full: 12 trials, 3 rounds, targets/cpu.yaml, experiments/chat.yaml
    .venv/bin/python experiments/bench_llm.py --threads 1     # pin intra-op threads (a different target name, so a different study)
    .venv/bin/python experiments/bench_llm.py --skip-study    # re-measure the best point of the study already in --home
    .venv/bin/python experiments/bench_llm.py --quick         # smoke run: 3 trials, 1 round, cpu-quick protocol, prompt 32, 16 tokens
    .venv/bin/python experiments/bench_llm.py --render experiments/results/llm-gpt-mini-DATE.json   # re-write the Markdown only

Writes experiments/results/llm-<model>-<date>-<time>[-quick].md and .json (see experiments/README.md).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import REPO, LineReporter, environment, environment_markdown, finish_environment, log, rotated  # noqa: E402


VARIANTS = ("eager", "compile", "best")
TITLES = {"eager": "eager fp32", "compile": "torch.compile default", "best": "planner best"}
RATIOS = (("best", "eager"), ("best", "compile"), ("compile", "eager"))
RATIO_TITLES = {("best", "eager"): "best / eager", ("best", "compile"): "best / torch.compile",
                ("compile", "eager"): "torch.compile / eager"}
METRICS = ("ttft_p50_ms", "ttft_p99_ms", "tpot_p50_ms", "tpot_p99_ms", "tokens_per_s")
METRIC_TITLES = {"ttft_p50_ms": "TTFT p50", "ttft_p99_ms": "TTFT p99", "tpot_p50_ms": "TPOT p50", "tpot_p99_ms": "TPOT p99",
                 "tokens_per_s": "tokens/s"}
KEEP_FILES = {"job.json", "result.json", "worker.log", "decoder.json", "session.json"}
BUSY_LOAD = 1.0  # warn when the 1-min load average at start is above this
QUICK = {"trials": 3, "rounds": 1, "prompt_length": 32, "generation_length": 16, "eval_sequences": 2, "eval_forced_tokens": 8}


# ------------------------------------------------------------------ arguments


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="gpt-mini", help="decoder to benchmark (zoo name or planner model reference)")
    p.add_argument("--workload", default=str(REPO / "experiments" / "chat.yaml"), help="LLM workload YAML (prompts, generation, "
                   "batch sizes, TTFT/TPOT SLO, quality bound)")
    p.add_argument("--target", default=str(REPO / "targets" / "cpu.yaml"), help="target YAML or built-in name (timing protocol, threads)")
    p.add_argument("--space", default=None, help="search space YAML or built-in name (default: the decoder space built in code, "
                   "see llm_space())")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (overrides the target's `threads`; the target is "
                   "renamed <name>-t<N>, so this is another study)")
    p.add_argument("--trials", type=int, default=None, help="planner trials in the study (topped up to this many; default 12, --quick 3)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved measurement rounds")
    p.add_argument("--home", default=str(REPO / "experiments" / ".bench-home" / "llm"), help="planner home for the study and the bench jobs (git-ignored)")
    p.add_argument("--out-dir", default=str(REPO / "experiments" / "results"), help="where the .md/.json results go")
    p.add_argument("--sampler", default="tpe", help="study sampler (tpe | nsga2 | random)")
    p.add_argument("--seed", type=int, default=0, help="study sampler seed")
    p.add_argument("--study-timeout", type=float, default=None, help="stop starting new trials after this many seconds")
    p.add_argument("--trial-timeout", type=float, default=900.0, help="seconds allowed per job (build + quality + TTFT/TPOT)")
    p.add_argument("--skip-study", action="store_true", help="run no trials; re-measure the best point of the study in --home")
    p.add_argument("--quick", action="store_true", help=f"smoke run: {QUICK['trials']} trials, {QUICK['rounds']} round, "
                   f"experiments/configs/cpu-quick.yaml, the workload cut to one {QUICK['prompt_length']}-token prompt, "
                   f"{QUICK['generation_length']} generated tokens, its smallest batch, a {QUICK['eval_sequences']}-sequence quality set; "
                   "torch_compile mode default only")
    p.add_argument("--render", metavar="RESULTS.json", help="re-write the Markdown of an earlier run from its JSON; nothing is measured")
    p.add_argument("--keep-artifacts", action="store_true", help="keep the engines of the bench jobs (default: logs, results, descriptors)")
    a = p.parse_args(argv)
    given = {x.split("=", 1)[0] for x in (argv if argv is not None else sys.argv[1:])}
    if a.quick:
        if "--rounds" not in given:
            a.rounds = QUICK["rounds"]
        if "--target" not in given:
            a.target = str(REPO / "experiments" / "configs" / "cpu-quick.yaml")
    if a.trials is None:
        a.trials = QUICK["trials"] if a.quick else 12
    if a.rounds < 1 or a.trials < 1:
        p.error("--rounds and --trials must be >= 1")
    if a.threads is not None and a.threads < 1:
        p.error("--threads must be >= 1")
    return a


# ------------------------------------------------------------------ inputs


def llm_space(quick: bool = False):
    """The decoder search space: every backend with a decoder runtime, fp32 and the int8/int4 schemes it implements."""
    from planner.space import SearchSpace

    compile_opts = {"mode": ["default"] if quick else ["default", "max-autotune-no-cudagraphs"], "freezing": [False, True]}
    return SearchSpace.model_validate({
        "name": "llm-quick" if quick else "llm",
        "description": "decoders on CPU: torch eager, torch.compile (static KV cache), ONNX Runtime (prefill + decode graphs); "
                       "fp32, int8_dynamic, int8/int4 weight-only (torch backends); no pruning",
        "batch_size": [1],  # replaced by the workload's batch sizes (Optimizer)
        "backends": {
            "torch": {},
            "torch_compile": compile_opts,
            "onnxruntime": {"graph_optimization_level": ["extended", "all"]},
        },
        "quantize": {"schemes": ["none", "int8_dynamic", "int8_weight_only", "int4_weight_only"],
                     "options": {"int8_dynamic": {"op_types": ["matmul"]}, "int4_weight_only": {"group_size": [32, 128]}}},
        "prune": {"methods": ["none"]},
    })


def decoder_coverage(space, target) -> dict[str, dict[str, str]]:
    """backend -> scheme -> 'ok' or why the study will not run it (target precision, backend, or decoder runtime)."""
    from planner.llm.runtimes import check_decoder_config
    from planner.space import schemes_for

    out: dict[str, dict[str, str]] = {}
    for b in space.backends:
        out[b] = {}
        if b not in target.backends:
            out[b]["*"] = f"not in target '{target.name}' backends"
            continue
        runnable = set(schemes_for(b, space, target) or ["none"])
        for s in space.quantize.schemes:
            if s not in runnable:
                out[b][s] = "not sampled (backend or target precision)"
            else:
                out[b][s] = check_decoder_config(b, s) or "ok"
    return out


def quick_workload(wl):
    """The workload cut down for a smoke run (one short prompt, few tokens, smallest batch, small quality set)."""
    from planner.llm.workload import Workload

    d = wl.to_dict()
    d.update(name=f"{wl.name}-quick", prompt_lengths=[min(QUICK["prompt_length"], min(wl.prompt_lengths))],
             generation_length=min(QUICK["generation_length"], wl.generation_length), batch_sizes=[min(wl.batch_sizes)])
    d["eval"] = {**d["eval"], "sequences": min(QUICK["eval_sequences"], wl.eval.sequences),
                 "forced_tokens": min(QUICK["eval_forced_tokens"], wl.eval.forced_tokens), "prompt_length": None}
    return Workload.from_dict(d, "quick workload")


def bench_target(base, threads: int | None):
    if threads is None:
        return base
    return base.model_copy(update={"threads": threads, "name": f"{base.name}-t{threads}"})


# ------------------------------------------------------------------ study


class LLMReporter(LineReporter):
    """One line per trial with TTFT/TPOT p99, tokens/s, quality and the trial's wall time."""

    def __init__(self, total: int):
        super().__init__("llm", total)

    @staticmethod
    def measured(m: dict) -> str:
        return (f"TTFT p99 {_f(m.get('ttft_p99_ms'), '{:.1f}')} ms, TPOT p99 {_f(m.get('tpot_p99_ms'), '{:.1f}')} ms, "
                f"{_f(m.get('tokens_per_s'), '{:.1f}')} tok/s, loss {_f(m.get('quality_loss'), '{:.3f}')}")


def _constraints(t) -> dict[str, float]:
    c = t.constraints
    return dict(c) if isinstance(c, dict) else {f"c{i}": v for i, v in enumerate(c or [])}


def _num(x) -> float | None:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


POINT_METRICS = ("ttft_p50_ms", "ttft_p99_ms", "tpot_p50_ms", "tpot_p99_ms", "tokens_per_s", "quality_loss", "disagreement",
                 "kl_mean", "compile_seconds", "ttft_cv", "tpot_cv", "latency_samples", "ttft_prompt_length", "tpot_prompt_length")


def trial_record(t) -> dict[str, Any]:
    from optuna.trial import TrialState

    rec: dict[str, Any] = {"trial": t.number, "state": t.state.name.lower(), "label": t.user_attrs.get("label"),
                           "config": t.user_attrs.get("config"), "duplicate_of": t.user_attrs.get("duplicate_of")}
    cfg = rec["config"] or {}
    rec["batch"] = cfg.get("batch_size")
    if t.state == TrialState.COMPLETE:
        m = t.user_attrs.get("metrics") or {}
        rec["metrics"] = {k: m.get(k) for k in POINT_METRICS if k in m}
        rec["values"] = list(t.values or [])
        cons = _constraints(t)
        rec["constraints"] = cons
        rec["violated"] = sorted(k for k, v in cons.items() if v > 0)
        if rec["duplicate_of"] is not None:
            rec["status"] = "duplicate"
        else:
            rec["status"] = "infeasible" if rec["violated"] else "feasible"
    elif t.state == TrialState.FAIL:
        rec["status"] = "failed"
        rec["fail_reason"] = t.user_attrs.get("fail_reason", "?")
        rec["fail_message"] = (t.user_attrs.get("fail_message") or "")[:300]
    else:
        rec["status"] = "duplicate" if t.user_attrs.get("duplicate_of") is not None else rec["state"]
    return rec


def nondominated(records: list[dict], directions: list[str]) -> list[dict]:
    """Records (with ``values``) no other record dominates, by the study's objective directions."""
    sign = [1.0 if d == "minimize" else -1.0 for d in directions]

    def key(r):
        return [s * v for s, v in zip(sign, r["values"])]

    out = []
    for r in records:
        a = key(r)
        if not any(all(x <= y for x, y in zip(key(o), a)) and any(x < y for x, y in zip(key(o), a)) for o in records if o is not r):
            out.append(r)
    return out


def _sort_key(r: dict):
    m = r.get("metrics") or {}
    big = float("inf")
    return (m.get("tpot_p99_ms") if m.get("tpot_p99_ms") is not None else big,
            m.get("ttft_p99_ms") if m.get("ttft_p99_ms") is not None else big,
            m.get("quality_loss") if m.get("quality_loss") is not None else big, r["trial"])


def ensure_study(spec, target, space, workload, home, args) -> dict[str, Any]:
    """Run (top up to --trials) or reuse the study; return its summary, front and best point."""
    import optuna

    from planner.search.study import Optimizer, StudyOptions, default_study_name
    from planner.select.pareto import pareto_front

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    name = default_study_name(spec, target, space) + f"-{workload.name}"

    def existing():
        if not (home.root / "optuna.db").is_file():
            return None
        try:
            return optuna.load_study(study_name=name, storage=home.optuna_url)
        except KeyError:
            return None

    study = existing()
    have = len(study.trials) if study is not None else 0
    info: dict[str, Any] = {"study": name, "space": space.name, "trials_before": have, "trials_run_now": 0, "study_seconds": 0.0,
                            "trial_wall_seconds": []}
    if args.skip_study:
        if study is None:
            raise SystemExit(f"--skip-study: no study {name!r} in {home.root}; run without --skip-study first")
    elif args.trials - have > 0:
        opts = StudyOptions(trials=args.trials - have, timeout=args.study_timeout, trial_timeout=args.trial_timeout, seed=args.seed,
                            sampler=args.sampler)
        rep = LLMReporter(args.trials - have)
        t0 = time.perf_counter()
        res = Optimizer(spec, target, space, home, opts, rep, workload=workload).run()
        info.update(trials_run_now=len(res.outcomes), study_seconds=time.perf_counter() - t0, stopped=res.stopped_because,
                    trial_wall_seconds=rep.wall)
        study = existing()
    else:
        log(f"study {name} already has {have} ≥ {args.trials} trials; not running more")
    assert study is not None
    ref = home.study_dir(name) / "reference.npz"
    if not ref.is_file():
        raise SystemExit(f"study {name}: no reference outputs at {ref}")

    records = [trial_record(t) for t in study.trials]
    states: dict[str, int] = {}
    violations: dict[str, int] = {}
    fails: dict[str, dict[str, Any]] = {}
    for r in records:
        states[r["status"]] = states.get(r["status"], 0) + 1
        if r["status"] == "infeasible":
            for k in r["violated"]:
                violations[k] = violations.get(k, 0) + 1
        if r["status"] == "failed":
            f = fails.setdefault(r["fail_reason"], {"count": 0, "example": r["fail_message"], "trials": []})
            f["count"] += 1
            f["trials"].append(r["trial"])
    complete = [r for r in records if r["status"] in ("feasible", "infeasible")]
    directions = [d.name.lower() for d in study.directions]
    by_number = {r["trial"]: r for r in records}
    front = [by_number[p.number] for p in pareto_front(study)]
    front_all = sorted(nondominated(complete, directions), key=_sort_key)
    for r in records:
        r["on_front"] = any(f["trial"] == r["trial"] for f in front)
        r["on_front_all"] = any(f["trial"] == r["trial"] for f in front_all)

    q = workload.quality
    feasible = [r for r in complete if r["status"] == "feasible"]
    if feasible:
        best = min(feasible, key=_sort_key)
        rule = "feasible"
        rule_text = ("the feasible trial (TTFT and TPOT SLO and quality bound met) with the lowest TPOT p99 "
                     "(ties: lower TTFT p99, then lower quality loss)")
    else:
        within = [r for r in front_all if r["constraints"].get("quality", 0.0) <= 0]
        best = min(within, key=_sort_key) if within else None
        rule = "fallback" if best else "none"
        rule_text = ("no trial is feasible: the point of the front of all complete trials (constraints ignored) with the lowest "
                     f"TPOT p99 among those within the quality bound ({q.metric} ≤ {q.bound:g})")
        if best is None:
            rule_text += "; no such point either, so only the baselines are measured"
    info.update(spec=spec.to_dict(), reference=str(ref), directions=directions, objectives=study.user_attrs.get("objectives"),
                trials_total=len(study.trials), trial_states=states, violations=violations, fail_reasons=fails, trials=records,
                front=[r["trial"] for r in front], front_all=[r["trial"] for r in front_all],
                best=None if best is None else {"trial": best["trial"], "label": best["label"], "config": best["config"],
                                                "batch": best["batch"], "metrics": best["metrics"], "status": best["status"],
                                                "violated": best["violated"]},
                best_rule=rule, best_rule_text=rule_text, model_info=study.user_attrs.get("model_info"))
    return info


# ------------------------------------------------------------------ measurement jobs


def variant_config(variant: str, batch: int, best: dict | None):
    from planner.config import TrialConfig, freeze_options

    if variant == "eager":
        return TrialConfig("torch", batch)
    if variant == "compile":
        return TrialConfig("torch_compile", batch, freeze_options({"mode": "default"}))
    if best is None:
        return None
    cfg = TrialConfig.from_dict(best["config"])
    assert cfg.batch_size == batch, (cfg, batch)
    return cfg


def same_as(cfg: dict | None, other: dict | None) -> bool:
    """Two configs that build the same deployment (torch_compile: freezing off is the default)."""
    if not cfg or not other:
        return False

    def norm(c):
        c = json.loads(json.dumps(c))
        opts = c.get("backend_options") or {}
        if c["backend"] == "torch_compile":
            opts.setdefault("mode", "default")
            opts.setdefault("freezing", False)
            opts.setdefault("dynamic", False)
        c["backend_options"] = opts
        return c

    return norm(cfg) == norm(other)


def round_order(r: int) -> list[str]:
    return rotated(VARIANTS, r)


def run_variant(variant: str, cfg, study: dict, target, workload, home, args, workdir: Path, round_no: int, bench_dir: Path) -> dict:
    from planner.measure.runner import run_job, worker_env

    env = worker_env(target, home.cache)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    cache_note = "study cache"
    if variant == "compile":
        # private Inductor cache: empty in round 1 (cold compile), reused (warm) in later rounds
        cache = bench_dir / "inductor" / f"b{cfg.batch_size}"
        if round_no == 0 and cache.exists():
            shutil.rmtree(cache, ignore_errors=True)
        cache_note = "cold (empty cache)" if round_no == 0 else "warm (private cache)"
        env["TORCHINDUCTOR_CACHE_DIR"] = str(cache)
    job = {
        "kind": "llm_trial", "spec": study["spec"], "target": target.model_dump(mode="json"), "config": cfg.to_dict(),
        "cache_dir": str(home.cache), "workdir": str(workdir), "reference": study["reference"], "output_kind": "logits",
        "abort_above_ms": None, "workload": workload.to_dict(),
    }
    load = [round(x, 2) for x in os.getloadavg()]
    res = run_job(job, workdir, args.trial_timeout, env)
    if not args.keep_artifacts and workdir.is_dir():
        for p in workdir.iterdir():
            if p.name not in KEEP_FILES:
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    out: dict[str, Any] = {"round": round_no + 1, "status": res.get("status"), "wall_seconds": res.get("wall_seconds"),
                           "compile_seconds": res.get("compile_seconds"), "build_seconds": res.get("build_seconds"),
                           "inductor_cache": cache_note, "loadavg_before": load, "workdir": str(workdir)}
    if res.get("status") == "ok":
        llm, q = res.get("llm") or {}, res.get("quality") or {}
        ttft, tpot = res.get("latency") or {}, res.get("tpot_latency") or {}
        out.update({k: llm.get(k) for k in ("ttft_p50_ms", "ttft_p90_ms", "ttft_p99_ms", "tpot_p50_ms", "tpot_p90_ms", "tpot_p99_ms",
                                            "ttft_mean_ms", "tpot_mean_ms", "tokens_per_s", "ttft_cv", "tpot_cv",
                                            "ttft_prompt_length", "tpot_prompt_length", "cache_len")})
        out.update(ttft_n=ttft.get("n"), tpot_n=tpot.get("n"), ttft_p99_reliable=ttft.get("p99_reliable"),
                   tpot_p99_reliable=tpot.get("p99_reliable"), ttft_windows=ttft.get("windows"), tpot_windows=tpot.get("windows"),
                   quality_loss=q.get("quality_loss"), disagreement=q.get("disagreement"), kl_mean=q.get("kl_mean"),
                   kl_max=q.get("kl_max"), peak_rss_mb=res.get("peak_rss_mb"), artifact_mb=res.get("artifact_mb"),
                   build_info={k: v for k, v in (res.get("build_info") or {}).items() if isinstance(v, (int, float, str, bool))},
                   by_prompt=llm.get("by_prompt"))
    else:
        out.update(reason=res.get("reason") or res.get("status"), message=(res.get("message") or "")[:500])
    return out


# ------------------------------------------------------------------ statistics


def _median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def summarize(variants: dict[str, dict], n_rounds: int) -> dict[str, Any]:
    """Per variant: median/min/max over ok rounds of each metric; per round and overall: the ratios."""
    for v, c in variants.items():
        if c.get("missing"):
            continue
        ok = [m for m in c["rounds"] if m.get("status") == "ok"]
        c["rounds_ok"] = len(ok)
        for k in METRICS + ("quality_loss", "kl_mean", "build_seconds", "compile_seconds", "wall_seconds", "ttft_n", "tpot_n"):
            vals = [m.get(k) for m in ok if m.get(k) is not None]
            c[k] = _median(vals)
            c[f"{k}_min"] = min(vals) if vals else None
            c[f"{k}_max"] = max(vals) if vals else None
    per_round: list[dict[str, Any]] = []
    for r in range(1, n_rounds + 1):
        row: dict[str, Any] = {"round": r}
        got = {v: next((m for m in c["rounds"] if m["round"] == r and m.get("status") == "ok"), None)
               for v, c in variants.items() if not c.get("missing")}
        for a, b in RATIOS:
            ma, mb = got.get(a), got.get(b)
            row[f"{a}/{b}"] = {k: (ma[k] / mb[k] if (ma and mb and ma.get(k) and mb.get(k)) else None) for k in METRICS}
        per_round.append(row)
    overall: dict[str, Any] = {}
    for a, b in RATIOS:
        key = f"{a}/{b}"
        overall[key] = {}
        for k in METRICS:
            vals = [row[key][k] for row in per_round if row[key][k] is not None]
            overall[key][k] = {"median": _median(vals), "min": min(vals) if vals else None, "max": max(vals) if vals else None,
                               "n": len(vals)}
    return {"per_round": per_round, "overall": overall}


# ------------------------------------------------------------------ report


def _f(x, fmt="{:.3f}", none="n/a"):
    return none if x is None else fmt.format(x)


def _ms(x):
    return _f(x, "{:.1f}" if (x is not None and x >= 10) else "{:.2f}", "–")


def _ratio_cell(r: dict | None) -> str:
    if not r or r.get("median") is None:
        return "–"
    if r["n"] > 1:
        return f"**{r['median']:.2f}** ({r['min']:.2f}–{r['max']:.2f})"
    return f"**{r['median']:.2f}**"


def _status_text(r: dict) -> str:
    if r["status"] == "infeasible":
        return "violates " + ", ".join(r["violated"])
    if r["status"] == "failed":
        return f"failed: {r.get('fail_reason')}"
    return r["status"]


def _trial_row(r: dict, best_trial: int | None) -> str:
    m = r.get("metrics") or {}
    mark = " ★" if r["trial"] == best_trial else ""
    return (f"| {r['trial']}{mark} | {r['label']} | {r['batch']} | {_ms(m.get('ttft_p99_ms'))} | {_ms(m.get('tpot_p99_ms'))} | "
            f"{_f(m.get('tokens_per_s'), '{:.1f}', '–')} | {_f(m.get('quality_loss'), '{:.3f}', '–')} | {_f(m.get('kl_mean'), '{:.1e}', '–')} | "
            f"{_status_text(r)} |")


TRIAL_HEAD = ["| trial | deployment | batch | TTFT p99 ms | TPOT p99 ms | tokens/s | quality loss | KL nats | status |",
              "|---:|---|---:|---:|---:|---:|---:|---:|---|"]


def console_table(result: dict) -> str:
    cols = ["variant", "deployment", "TTFT p50", "TTFT p99", "TPOT p50", "TPOT p99", "tok/s", "loss", "TPOT p99 / eager", "TPOT p99 / compile"]
    rows = []
    ov = result["ratios"]["overall"]
    for v in VARIANTS:
        c = result["variants"][v]
        if c.get("missing"):
            rows.append([TITLES[v], c["missing"]] + ["-"] * (len(cols) - 2))
            continue
        r_e = ov.get(f"{v}/eager", {}).get("tpot_p99_ms") if v != "eager" else None
        r_c = ov.get(f"{v}/compile", {}).get("tpot_p99_ms") if v == "best" else None
        rows.append([TITLES[v], c.get("label") or "-"] + [_ms(c.get(k)) for k in ("ttft_p50_ms", "ttft_p99_ms", "tpot_p50_ms", "tpot_p99_ms")]
                    + [_f(c.get("tokens_per_s"), "{:.1f}", "-"), _f(c.get("quality_loss"), "{:.3f}", "-"),
                       _f(r_e and r_e["median"], "{:.2f}", "-"), _f(r_c and r_c["median"], "{:.2f}", "-")])
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    line = lambda r: "  ".join(s.ljust(w) for s, w in zip(r, widths))  # noqa: E731
    return "\n".join([line(cols), line(["-" * w for w in widths])] + [line(r) for r in rows])


def markdown(result: dict) -> str:
    e, a, s, wl = result["environment"], result["args"], result["study"], result["workload"]
    best = s.get("best")
    model = s["spec"]["name"]
    out = [f"# {model}: planner Pareto front and best point vs eager fp32 / torch.compile — {result['started']}", ""]
    if a.get("quick"):
        out += ["> **Quick smoke run** (`--quick`): few trials, one round, short timing protocol, shortened workload; not a benchmark result.", ""]
    load0 = (e.get("loadavg_start") or [0])[0]
    if load0 > BUSY_LOAD:
        out += [f"> **Warning**: the machine was busy when this run started (1-min load average {load0} > {BUSY_LOAD} on "
                f"{e.get('logical_cpus')} CPUs); latencies may be inflated and noisy.", ""]
    slo = wl["slo"]
    qb = wl["quality"]
    qtext = f"disagreement ≤ {qb['max_disagreement']}" if qb.get("max_disagreement") is not None else f"KL ≤ {qb['max_kl']} nats"
    out += [f"Workload `{wl['name']}`: prompts {wl['prompt_lengths']} tokens, {wl['generation_length']} generated, batch sizes "
            f"{wl['batch_sizes']}; SLO TTFT ≤ {slo.get('ttft_ms')} ms and TPOT ≤ {slo.get('tpot_ms')} ms at {slo['percentile']}; "
            f"quality {qtext} (teacher-forced, vs fp32 eager). Target `{result['target']['name']}`, "
            f"{e['threads_used']} thread(s). Study `{s['study']}`.", ""]

    # --- best point and ratios
    out += ["## Best point vs eager fp32 and torch.compile", ""]
    out += [f"**Rule**: {s['best_rule_text']}.", ""]
    if best:
        m = best["metrics"] or {}
        tag = "feasible" if s["best_rule"] == "feasible" else "**not feasible**: violates " + ", ".join(best["violated"])
        out.append(f"**Best point**: trial #{best['trial']} `{best['label']}` at batch {best['batch']} ({tag}); in the study: "
                   f"TTFT p99 {_ms(m.get('ttft_p99_ms'))} ms, TPOT p99 {_ms(m.get('tpot_p99_ms'))} ms, "
                   f"{_f(m.get('tokens_per_s'), '{:.1f}')} tokens/s, quality loss {_f(m.get('quality_loss'), '{:.3f}')}.")
        out.append("")
    for v in ("eager", "compile"):
        if same_as(result["variants"]["best"].get("config"), result["variants"][v].get("config")):
            out.append(f"The best point *is* the {TITLES[v]} deployment: best / {TITLES[v]} compares two measurements of the same "
                       "configuration, so its distance from 1.00 is this run's noise.")
            out.append("")
    out += [f"Medians over {a['rounds']} round(s), all at batch {result['batch']}. Ratios in bold: median of the per-round "
            "ratios (min–max over rounds); latency ratios < 1 and tokens/s ratios > 1 mean the first is faster.", "",
            "| variant | deployment | TTFT p50 ms | TTFT p99 ms | TPOT p50 ms | TPOT p99 ms | tokens/s | quality loss | KL nats | build s | samples TTFT / TPOT |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for v in VARIANTS:
        c = result["variants"][v]
        if c.get("missing"):
            out.append(f"| {TITLES[v]} | {c['missing']} |" + " – |" * 9)
            continue
        if not c.get("rounds_ok"):
            reasons = ", ".join(sorted({m.get("reason") or "?" for m in c["rounds"]}))
            out.append(f"| {TITLES[v]} | `{c['label']}` | failed ({reasons}) |" + " – |" * 8)
            continue
        builds = ", ".join(_f(m.get("build_seconds"), "{:.1f}", "✗") for m in c["rounds"])
        rel = "" if all(m.get("ttft_p99_reliable") for m in c["rounds"] if m.get("status") == "ok") else " (p99 unreliable)"
        out.append(f"| {TITLES[v]} | `{c['label']}` | {_ms(c['ttft_p50_ms'])} | {_ms(c['ttft_p99_ms'])} | {_ms(c['tpot_p50_ms'])} | "
                   f"{_ms(c['tpot_p99_ms'])} | {_f(c['tokens_per_s'], '{:.1f}', '–')} | {_f(c['quality_loss'], '{:.3f}', '–')} | "
                   f"{_f(c['kl_mean'], '{:.1e}', '–')} | {builds} | {_f(c['ttft_n'], '{:.0f}', '–')}{rel} / {_f(c['tpot_n'], '{:.0f}', '–')} |")
    out += ["", "| ratio | " + " | ".join(METRIC_TITLES[k] for k in METRICS) + " |", "|---|" + "---:|" * len(METRICS)]
    for a_, b_ in RATIOS:
        r = result["ratios"]["overall"][f"{a_}/{b_}"]
        out.append(f"| {RATIO_TITLES[(a_, b_)]} | " + " | ".join(_ratio_cell(r[k]) for k in METRICS) + " |")

    out += ["", "### Per round", "",
            "| round | variant (position) | TTFT p50 | TTFT p99 | TPOT p50 | TPOT p99 | tokens/s | CV TTFT / TPOT | quality loss | build s | job s | Inductor cache | load before |",
            "|---:|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---|---|"]
    for r in range(1, a["rounds"] + 1):
        for v in result["orders"][r - 1]:
            c = result["variants"][v]
            m = next((x for x in c.get("rounds", []) if x["round"] == r), None)
            if m is None:
                continue
            pos = m.get("position")
            if m.get("status") != "ok":
                out.append(f"| {r} | {TITLES[v]} ({pos}) | ✗ {m.get('reason')}: {(m.get('message') or '')[:80]} |" + " |" * 7
                           + f" {_f(m.get('wall_seconds'), '{:.0f}', '–')} | {m.get('inductor_cache') if v == 'compile' else ''} | "
                           f"{', '.join(map(str, m.get('loadavg_before') or []))} |")
                continue
            out.append(f"| {r} | {TITLES[v]} ({pos}) | {_ms(m['ttft_p50_ms'])} | {_ms(m['ttft_p99_ms'])} | {_ms(m['tpot_p50_ms'])} | "
                       f"{_ms(m['tpot_p99_ms'])} | {_f(m['tokens_per_s'], '{:.1f}')} | {_f(m.get('ttft_cv'), '{:.2f}')} / "
                       f"{_f(m.get('tpot_cv'), '{:.2f}')} | {_f(m.get('quality_loss'), '{:.3f}')} | {_f(m.get('build_seconds'), '{:.1f}')} | "
                       f"{_f(m.get('wall_seconds'), '{:.0f}')} | {m.get('inductor_cache') if v in ('compile', 'best') else ''} | "
                       f"{', '.join(map(str, m.get('loadavg_before') or []))} |")
    out += ["", "| round | ratio | " + " | ".join(METRIC_TITLES[k] for k in METRICS) + " |", "|---:|---|" + "---:|" * len(METRICS)]
    for row in result["ratios"]["per_round"]:
        for a_, b_ in RATIOS:
            vals = row[f"{a_}/{b_}"]
            out.append(f"| {row['round']} | {RATIO_TITLES[(a_, b_)]} | " + " | ".join(_f(vals[k], "{:.2f}", "–") for k in METRICS) + " |")

    # --- study
    out += ["", "## Pareto front of the study", "",
            f"Objectives {', '.join(s.get('objectives') or [])} (TTFT and TPOT at the workload's {slo['percentile']}; quality loss = "
            "greedy next-token disagreement vs fp32). Trials: " + f"{s['trials_total']} ({s['trials_run_now']} run now); "
            + ", ".join(f"{k} {n}" for k, n in sorted(s["trial_states"].items())) + ".", ""]
    if s["violations"]:
        out.append("Infeasible trials by violated constraint: " + ", ".join(f"{k} {n}" for k, n in sorted(s["violations"].items())) + ".")
    if s["fail_reasons"]:
        out.append("Failed trials by reason: " + "; ".join(f"{k} {f['count']} (#{', #'.join(map(str, f['trials']))}; e.g. “{f['example'][:160]}”)"
                                                           for k, f in sorted(s["fail_reasons"].items())) + ".")
    by = {r["trial"]: r for r in s["trials"]}
    bt = best["trial"] if best else None
    out += ["", "### Feasible front (`planner.select.pareto.pareto_front`)", ""]
    if s["front"]:
        out += TRIAL_HEAD + [_trial_row(by[n], bt) for n in sorted(s["front"], key=lambda n: _sort_key(by[n]))]
    else:
        out.append("Empty: no trial met every constraint (SLO and quality bound).")
    if set(s["front_all"]) != set(s["front"]):
        out += ["", "### Front of all complete trials (constraints ignored)", "", *TRIAL_HEAD]
        out += [_trial_row(by[n], bt) for n in s["front_all"]]
    out += ["", "<details><summary>All trials</summary>", "", *TRIAL_HEAD]
    for r in s["trials"]:
        if r["status"] in ("failed",) or r.get("metrics") is None:
            out.append(f"| {r['trial']} | {r['label']} | {r['batch']} |" + " – |" * 5
                       + f" {_status_text(r)}{(': ' + r['fail_message'][:100]) if r.get('fail_message') else ''}"
                       + (f" (of #{r['duplicate_of']})" if r.get("duplicate_of") is not None else "") + " |")
        else:
            out.append(_trial_row(r, bt)[:-2] + (f" (of #{r['duplicate_of']})" if r.get("duplicate_of") is not None else "") + " |")
    out += ["", "</details>", ""]
    cov = s.get("coverage") or {}
    if cov:
        out.append("Search space `" + s["space"] + "` coverage (backend: schemes): "
                   + "; ".join(f"{b}: " + ", ".join(f"{sc} {'✓' if why == 'ok' else '✗ (' + why + ')'}" for sc, why in d.items())
                               for b, d in cov.items()) + ".")

    # --- protocol / environment
    t, pm = result["target"], result["target"]["measurement"]
    ev = wl["eval"]
    out += ["", "## Protocol", "",
            f"* Target `{a['target']}` (`{t['name']}`, threads {t.get('threads') or 'all cores'} → {e['threads_used']}). Timing per "
            f"measured quantity (TTFT: one prefill per sample; TPOT: one decode step per sample, walking generations of "
            f"{wl['generation_length']} tokens): warm-up ≥ {pm['warmup_iters']} calls and ≥ {pm['warmup_seconds']} s, then ≥ "
            f"{pm['min_repeats']} samples and ≥ {pm['min_seconds']} s (≤ {pm['max_seconds']} s), re-measured up to {pm['max_remeasure']}× "
            f"when CV > {pm['cv_threshold']}. TTFT/TPOT are the worst over the prompt lengths. A p99 from fewer than 100 samples is "
            "marked unreliable (close to the maximum).",
            f"* Quality: {ev['sequences']} sequences, prompt {ev.get('prompt_length') or min(wl['prompt_lengths'])} tokens + "
            f"{ev['forced_tokens']} forced tokens, each runtime's own prefill/decode path vs fp32 eager; quality loss = greedy "
            "next-token disagreement (random weights: near-uniform distributions, so int8 flips some argmaxes at tiny KL).",
            f"* Study: sampler {a['sampler']} (seed {a['seed']}), {a['trials']} trials, each in a fresh worker; objectives and "
            "constraints as above. " + s["best_rule_text"][0].upper() + s["best_rule_text"][1:] + ".",
            f"* {a['rounds']} interleaved round(s), variant order rotating per round and reversed on odd rounds "
            f"({'; '.join(' → '.join(o) for o in result['orders'])}); every variant a fresh `llm_trial` worker "
            "(`planner.measure.runner.run_job`) against the study's `reference.npz`. torch.compile default: a private Inductor cache, "
            "empty in round 1 (cold compile: its build time), reused later; the best point uses the study's caches. Build time "
            "(compile/export, quantization and warm-up of every shape) is never latency.",
            ""]
    out += environment_markdown(e)
    out += ["", f"Total wall time: {result['wall_seconds'] / 60:.1f} min (study {result['study_seconds'] / 60:.1f} min, "
            f"interleaved measurements {result['bench_seconds'] / 60:.1f} min). Raw numbers: `{Path(result['json_path']).name}`.", ""]
    return "\n".join(out)


# ------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        src = Path(args.render)
        result = json.loads(src.read_text())
        src.with_suffix(".md").write_text(markdown(result))
        print(console_table(result))
        log(f"wrote {src.with_suffix('.md')}")
        return 0
    from planner.config import TrialConfig
    from planner.errors import ConfigError
    from planner.llm.workload import load_workload
    from planner.model import parse_model
    from planner.paths import Home
    from planner.space import load_space
    from planner.target import load_target

    t_all = time.perf_counter()
    started = dt.datetime.now()
    try:
        target = bench_target(load_target(args.target), args.threads)
        workload = load_workload(args.workload)
        space = load_space(args.space) if args.space else llm_space(args.quick)
        spec = parse_model(args.model)
    except ConfigError as e:
        raise SystemExit(f"error: {e}")
    if args.quick:
        workload = quick_workload(workload)
    home = Home.resolve(args.home).ensure()
    env = environment(target.thread_count())
    log(f"bench: {spec.name}, workload {workload.name} (prompts {workload.prompt_lengths}, {workload.generation_length} tokens, "
        f"batches {workload.batch_sizes}), space {space.name}, {args.trials} trials, {args.rounds} round(s), target {target.name} "
        f"({target.thread_count()} threads), home {home.root}; load average {env['loadavg_start']}")
    if env["loadavg_start"][0] > BUSY_LOAD:
        log(f"WARNING: the machine is busy (1-min load average {env['loadavg_start'][0]} > {BUSY_LOAD}); timings will be inflated "
            "and noisy. Run on a quiet machine.")
    coverage = decoder_coverage(space, target)
    for b, d in coverage.items():
        bad = {s: w for s, w in d.items() if w != "ok"}
        if bad:
            log(f"space {space.name}: {b}: " + "; ".join(f"{s}: {w}" for s, w in bad.items()))

    # 1. the planner study
    t0 = time.perf_counter()
    try:
        study = ensure_study(spec, target, space, workload, home, args)
    except ConfigError as e:
        raise SystemExit(f"error: planner study failed: {e}")
    study["coverage"] = coverage
    study_seconds = time.perf_counter() - t0
    best = study["best"]
    log(f"study {study['study']}: {study['trials_total']} trials, states {study['trial_states']}, feasible front "
        f"{study['front']}, unconstrained front {study['front_all']}")
    if best:
        m = best["metrics"] or {}
        log(f"best point ({study['best_rule']}): #{best['trial']} {best['label']} b={best['batch']}: TTFT p99 "
            f"{_f(m.get('ttft_p99_ms'), '{:.1f}')} ms, TPOT p99 {_f(m.get('tpot_p99_ms'), '{:.1f}')} ms, loss {_f(m.get('quality_loss'))}")
    else:
        log("no best point: " + study["best_rule_text"])
    batch = int(best["batch"]) if best else min(workload.batch_sizes)

    # 2. interleaved re-measurement
    stamp = started.strftime("%Y-%m-%d-%H%M%S")
    bench_dir = home.root / "bench" / stamp
    variants: dict[str, dict[str, Any]] = {}
    for v in VARIANTS:
        cfg = variant_config(v, batch, best)
        entry: dict[str, Any] = {"rounds": [], "config": cfg.to_dict() if cfg else None, "label": cfg.describe() if cfg else None}
        if v == "best":
            entry["trial"] = best["trial"] if best else None
            if cfg is None:
                entry["missing"] = "no best point"
        variants[v] = entry
    orders = [round_order(r) for r in range(args.rounds)]
    n_jobs = args.rounds * sum(1 for v in VARIANTS if not variants[v].get("missing"))
    done, t_bench = 0, time.perf_counter()
    for r, order in enumerate(orders):
        log(f"round {r + 1}/{args.rounds}: order {order}; load average {[round(x, 2) for x in os.getloadavg()]}")
        for pos, v in enumerate(order, 1):
            entry = variants[v]
            if entry.get("missing"):
                continue
            cfg = TrialConfig.from_dict(entry["config"])
            meas = run_variant(v, cfg, study, target, workload, home, args, bench_dir / f"r{r + 1}-{v}", r, bench_dir)
            meas["position"] = pos
            entry["rounds"].append(meas)
            done += 1
            el = time.perf_counter() - t_bench
            status = (f"TTFT p50/p99 {_ms(meas['ttft_p50_ms'])}/{_ms(meas['ttft_p99_ms'])} ms, TPOT p50/p99 {_ms(meas['tpot_p50_ms'])}/"
                      f"{_ms(meas['tpot_p99_ms'])} ms, {_f(meas['tokens_per_s'], '{:.1f}')} tok/s, loss {_f(meas['quality_loss'])}, "
                      f"build {_f(meas.get('build_seconds'), '{:.1f}')} s" if meas["status"] == "ok"
                      else f"FAILED {meas.get('reason')}: {meas.get('message', '')[:160]}")
            log(f"  [{done}/{n_jobs}] {TITLES[v]:22s} {status}; job {meas['wall_seconds']:.0f} s "
                f"(ETA {el / done * (n_jobs - done) / 60:.1f} min)")
    bench_seconds = time.perf_counter() - t_bench
    ratios = summarize(variants, args.rounds)

    finish_environment(env)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    base = out_dir / f"llm-{spec.name}-{stamp}{'-quick' if args.quick else ''}"
    result = {
        "started": started.isoformat(timespec="seconds"), "args": vars(args), "environment": env,
        "target": target.model_dump(mode="json"), "workload": workload.to_dict(), "space": space.model_dump(mode="json"),
        "study": study, "batch": batch, "orders": orders, "variants": variants, "ratios": ratios,
        "wall_seconds": time.perf_counter() - t_all, "study_seconds": study_seconds, "bench_seconds": bench_seconds,
        "json_path": str(base.with_suffix(".json")), "md_path": str(base.with_suffix(".md")),
    }
    base.with_suffix(".json").write_text(json.dumps(result, indent=2, default=str))
    base.with_suffix(".md").write_text(markdown(result))
    print()
    print(f"medians over rounds at batch {batch} (ms; ratios of TPOT p99, < 1 = faster)")
    print(console_table(result))
    print()
    log(f"wrote {base.with_suffix('.md')} and .json; total {result['wall_seconds'] / 60:.1f} min "
        f"(study {study_seconds / 60:.1f}, measurements {bench_seconds / 60:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
