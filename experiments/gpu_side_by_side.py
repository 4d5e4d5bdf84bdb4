"""Interleaved side by side on a GPU: a study's winner against the tools a user would pick instead.

At the winner's batch size, three deployments are rebuilt in their own workers and measured in ``--rounds``
interleaved rounds by the planner's own re-measurement (`planner.select.confirm.run_rounds`: the others
paused while one measures, the order rotating from round to round):

- the winner: the study's fastest feasible deployment (confirmed figures where it has them);
- eager fp32: plain PyTorch, the model as given;
- torch.compile default: ``torch.compile(model)`` in fp32, no other option.

Each gets the target's full latency protocol per round (CUDA events on a GPU); the figure is the median over
rounds of each round's p50, and the ratios are the winner's against each baseline from the same rounds.

    python experiments/gpu_side_by_side.py --study resnet18-gpu --home STATE --out side-by-side.json

The JSON file gathers one entry per study (an existing file is extended), so one run of
experiments/run_gpu.sh keeps every model's comparison in one file.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", required=True)
    ap.add_argument("--home", required=True, help="the planner home the study ran in")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per rebuild or round")
    ap.add_argument("--out", required=True, help="JSON file to add this study's comparison to")
    args = ap.parse_args(argv)

    import optuna

    from planner.config import TrialConfig, freeze_options
    from planner.measure.runner import worker_env
    from planner.model import ModelSpec
    from planner.paths import Home
    from planner.select import confirm as cf
    from planner.select.pareto import Fastest, Point, pareto_front
    from planner.target import Target

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    home = Home(Path(args.home))
    study = optuna.load_study(study_name=args.study, storage=home.optuna_url)
    front = pareto_front(study)
    out = Path(args.out)
    everything = json.loads(out.read_text()) if out.is_file() else {}
    if not front:
        everything[args.study] = {"error": "the study has no feasible trial"}
        out.write_text(json.dumps(everything, indent=2))
        print(f"{args.study}: no feasible trial, nothing to compare")
        return 1
    win = Fastest().select(front)
    batch = int(win.config["batch_size"])
    eager = TrialConfig("torch", batch).to_dict()
    compiled = TrialConfig("torch_compile", batch, backend_options=freeze_options({"mode": "default"})).to_dict()
    points = [Point(win.number, win.config, f"winner #{win.number}: {win.label}", win.metrics, None),
              Point(-1, eager, "eager fp32", {}, None),
              Point(-2, compiled, "torch.compile default fp32", {}, None)]

    spec = ModelSpec.from_dict(study.user_attrs["model_spec"])
    target = Target.model_validate(study.user_attrs["target_spec"])
    study_dir = home.study_dir(args.study)
    root = study_dir / "side-by-side"

    def make_job(p):
        jobdir = root / ("winner" if p.number >= 0 else f"baseline{-p.number}")
        return {"kind": "confirm", "spec": spec.to_dict(), "target": target.model_dump(mode="json"), "config": p.config,
                "cache_dir": str(home.cache), "workdir": str(jobdir / "build"),
                "reference": str(study_dir / "reference.npz"), "rounds": args.rounds, "batch_sizes": [batch]}, jobdir

    results = cf.run_rounds(points, make_job, worker_env(target, home.cache), args.rounds, args.timeout,
                            lambda msg: print(f"{args.study}: {msg}", flush=True))
    rows = []
    for p in points:
        res = results.get(p.number) or {}
        got = res.get("rounds") or []
        row = {"deployment": p.label, "config": p.config, "batch": batch, "status": res.get("status", "missing")}
        if res.get("status") == "ok" and got:
            row.update(p50_ms=statistics.median(r["p50_ms"] for r in got), p99_ms=statistics.median(r["p99_ms"] for r in got),
                       round_p50_ms=[r["p50_ms"] for r in got], timing=res.get("timing"),
                       rebuild_seconds=res.get("build_seconds"))
        else:
            row["failed"] = f"{res.get('reason')}: {res.get('message')}"
        rows.append(row)
    w = rows[0].get("p50_ms")
    ratios = {r["deployment"]: (w / r["p50_ms"] if w and r.get("p50_ms") else None) for r in rows[1:]}
    everything[args.study] = {"batch": batch, "rounds": args.rounds, "winner_trial": win.number,
                              "winner_study_latency_ms": win.latency_ms, "rows": rows,
                              "winner_p50_over_baseline": ratios}
    out.write_text(json.dumps(everything, indent=2, default=str))
    print(f"\n{args.study}: interleaved, {args.rounds} rounds, b={batch}, median of round p50s")
    for r in rows:
        print(f"  {r['deployment']:<55s} " + (f"{r['p50_ms']:.3f} ms" if r.get("p50_ms") else r.get("failed", "")))
    for name, ratio in ratios.items():
        print(f"  winner / {name}: " + (f"{ratio:.2f}x" if ratio else "n/a"))
    return 0 if all(r.get("p50_ms") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
