#!/usr/bin/env python
"""How a pruned digits-cnn student's quality moves through the distillation stages (issue 28).

For each config (pruning method, ratio, round_to, learning rate) it prunes the zoo's digits-cnn as a trial does
(`planner.transforms.prune.prune`), then distils it through planner's stages (100, 300, 1000, 3000 steps) with
planner's own training step (`planner.transforms.distill.distill`: Adam on the MSE to the teacher's logits,
gradients clipped, BatchNorm frozen, a fresh optimizer per stage seeded by its first step, the learning rate
per stage by ``--schedule``) on the calibration split, and after each stage records:

  val_mse     the MSE to the teacher on a held-out eighth of the calibration split (not trained on)
  test_mse    the MSE to the teacher on the test split (540 images: what judges a trial)
  extra       how many more of the 540 test digits the student gets wrong than the teacher (the bound 0.005 is
              2.7 digits)
  disagree    on how many test digits the student's answer differs from the teacher's

    .venv/bin/python experiments/student_stages.py                      # the default configs, seed 0
    .venv/bin/python experiments/student_stages.py --seeds 0,1 --configs l1:0.5:8:0.003

Writes experiments/results/student-stages-<date>.md and .json.  Nothing else on the cores while it runs.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for p in (REPO, REPO / "experiments"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

CONFIGS = ("l1:0.5:8:0.003", "l1:0.3:8:0.001", "l2:0.1:16:0.003", "l1:0.5:16:0.003", "l2:0.3:8:0.003",
           "l1:0.4:8:0.001")
STAGES = (100, 300, 1000, 3000)
VAL_SHARE = 8  # one in VAL_SHARE calibration images is held out


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default=",".join(CONFIGS), help="comma list of METHOD:RATIO:ROUND_TO:LR")
    p.add_argument("--seeds", default="0", help="comma list of training seeds (0: planner's own)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--schedule", default=None, help="the learning rate over a stage: cosine or constant "
                   "(default: planner's, planner.transforms.distill.SCHEDULE)")
    p.add_argument("--out-dir", default=str(REPO / "experiments" / "results"))
    return p.parse_args(argv)


def run(method, ratio, round_to, lr, seed, data, schedule):
    import torch

    from planner.config import DistillConfig, PruneConfig
    from planner.transforms.distill import distill
    from planner.transforms.prune import prune

    teacher, train, val, xte, yte, t_pred = data
    student = prune(copy.deepcopy(teacher), PruneConfig(method, ratio, round_to), (train[:2],))
    rows, start = [], 0

    def mse(x):
        with torch.no_grad():
            return float(torch.nn.functional.mse_loss(student(x), teacher(x)))

    for b in STAGES:
        distill(student, teacher, DistillConfig(steps=b - start, lr=lr, batch=64), {"x": train.numpy()}, ["x"],
                seed=start + 100000 * seed, schedule=schedule)
        start = b
        student.eval()
        with torch.no_grad():
            pred = student(xte).argmax(1)
        rows.append({"steps": b, "val_mse": mse(val), "test_mse": mse(xte),
                     "extra": int((pred != yte).sum()) - int((t_pred != yte).sum()),
                     "disagree": int((pred != t_pred).sum())})
    return rows


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    from harness import environment, environment_markdown, finish_environment
    from planner.transforms.distill import SCHEDULE
    from planner.zoo import digits

    schedule = args.schedule or SCHEDULE
    torch.set_num_threads(args.threads)
    env = environment(args.threads)
    teacher = digits.build(0).eval()
    test = digits.dataset()
    xte, yte = torch.from_numpy(test["x"]), torch.from_numpy(test["labels"])
    calib = torch.from_numpy(digits.calibration_dataset()["x"])
    held = torch.arange(len(calib)) % VAL_SHARE == 0
    with torch.no_grad():
        t_pred = teacher(xte).argmax(1)
    data = (teacher, calib[~held], calib[held], xte, yte, t_pred)
    results, t0 = [], time.perf_counter()
    for seed in [int(s) for s in args.seeds.split(",")]:
        for c in args.configs.split(","):
            m, r, rt, lr = c.split(":")
            t1 = time.perf_counter()
            rows = run(m, float(r), int(rt), float(lr), seed, data, schedule)
            results.append({"config": c, "seed": seed, "schedule": schedule, "stages": rows,
                            "seconds": time.perf_counter() - t1})
            print(json.dumps(results[-1]), flush=True)
    finish_environment(env)
    meta = {"argv": sys.argv[1:], "seconds": time.perf_counter() - t0, "results": results, "environment": env}
    stamp = dt.datetime.now().strftime("%Y-%m-%d-%H%M%S")
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"student-stages-{stamp}.json").write_text(json.dumps(meta, indent=2, default=str))
    lines = ["# Student quality through the distillation stages (digits-cnn, issue 28)", "",
             f"`experiments/student_stages.py {' '.join(meta['argv'])}`, {meta['seconds'] / 60:.0f} min. Trained on 7/8 "
             "of the calibration split; val: the other 1/8 (MSE to the teacher); test: the 540 test digits (extra "
             "wrong vs the teacher; the 0.005 bound is 2.7 digits).", "",
             f"Learning rate per stage: {schedule}.", "",
             "| config (method:ratio:round_to:lr) | seed | " + " | ".join(f"{s} steps: val mse / test mse / extra / disagree" for s in STAGES) + " | best val stage |",
             "|---|---|" + "---|" * len(STAGES) + "---|"]
    for r in results:
        best = min(r["stages"], key=lambda s: s["val_mse"])
        cells = " | ".join(f"{s['val_mse']:.4f} / {s['test_mse']:.4f} / {s['extra']:+d} / {s['disagree']}" for s in r["stages"])
        lines.append(f"| {r['config']} | {r['seed']} | {cells} | {best['steps']} ({best['extra']:+d}) |")
    lines += [""] + environment_markdown(env)
    (out / f"student-stages-{stamp}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
