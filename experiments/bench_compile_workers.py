"""Trials per hour and measurement noise with 1 vs N compile workers, on a study whose compile time dominates.

    .venv/bin/python experiments/bench_compile_workers.py [--model tiny-mlp] [--trials 8] [--workers 1,2]

Each setting runs the same grid study (torch.compile modes x batch sizes: cold Inductor compiles of
tens of seconds, milliseconds of measurement) in its own fresh home, so no compile cache is shared.
Reports wall time, trials/hour, the median and max latency CV of the measured trials, and p50s per
config so the timings of the two settings can be compared config by config.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPACE = """name: compile-heavy
batch_size: [1, 8]
backends:
  torch_compile:
    mode: [default, max-autotune-no-cudagraphs]
    freezing: [true, false]
"""


def run(model: str, trials: int, workers: int, target: str) -> dict:
    import optuna
    from optuna.trial import TrialState

    home = Path(tempfile.mkdtemp(prefix=f"cw{workers}-"))
    space = home / "space.yaml"
    space.write_text(SPACE)
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "planner", "optimize", "--model", model, "--target", target, "--space", str(space),
                        "--trials", str(trials), "--sampler", "grid", "--study", "cw", "--compile-workers", str(workers),
                        "--eval-samples", "8", "--home", str(home)], capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(r.stderr[-2000:])
    study = optuna.load_study(study_name="cw", storage=f"sqlite:///{home / 'optuna.db'}")
    done = [t for t in study.trials if t.state == TrialState.COMPLETE and "duplicate_of" not in t.user_attrs]
    cvs = [t.user_attrs["metrics"]["latency_cv"] for t in done]
    return {
        "workers": workers, "wall_s": wall, "measured": len(done), "trials_per_hour": 3600 * len(done) / wall,
        "cv_median": statistics.median(cvs) if cvs else None, "cv_max": max(cvs) if cvs else None,
        "p50_ms": {t.user_attrs["label"] + f" b={t.user_attrs['config']['batch_size']}": t.user_attrs["metrics"]["latency_p50_ms"] for t in done},
        "compile_s": statistics.median([t.user_attrs["metrics"]["compile_seconds"] for t in done]) if done else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny-mlp")
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--target", default=str(ROOT / "targets" / "cpu.yaml"))
    a = ap.parse_args()
    env = {"load_before": os.getloadavg()[0], "cpus": os.cpu_count()}
    results = [run(a.model, a.trials, int(w), a.target) for w in a.workers.split(",")]
    base = results[0]
    lines = [f"# Compile workers: {a.model}, {a.trials} trials of a torch.compile grid ({time.strftime('%Y-%m-%d %H:%M')})", "",
             f"2-core machine, load average before {env['load_before']:.2f}; each setting in a fresh home (cold compiles).", "",
             "| compile workers | wall s | measured trials | trials/hour | speed-up | median CV | max CV | median compile s |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['workers']} | {r['wall_s']:.0f} | {r['measured']} | {r['trials_per_hour']:.0f} | "
                     f"{r['trials_per_hour'] / base['trials_per_hour']:.2f}x | {r['cv_median']:.3f} | {r['cv_max']:.3f} | {r['compile_s']:.1f} |")
    lines += ["", "p50 ms per config (same config, each setting):", "", "| config | " + " | ".join(f"{r['workers']} worker(s)" for r in results) + " |",
              "|---|" + "---:|" * len(results)]
    for k in base["p50_ms"]:
        lines.append(f"| {k} | " + " | ".join(f"{r['p50_ms'].get(k, float('nan')):.4f}" for r in results) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    out = ROOT / "experiments" / "results" / f"compile-workers-{time.strftime('%Y-%m-%d-%H%M%S')}"
    out.with_suffix(".md").write_text(text)
    out.with_suffix(".json").write_text(json.dumps({"env": env, "results": results}, indent=2))


if __name__ == "__main__":
    main()
