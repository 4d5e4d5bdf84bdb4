"""How far structured pruning + distillation go on a trained transformer: quality and ORT latency per ratio.

    python experiments/bench_prune_distill.py [--model minilm] [--ratios 0.1,0.2,0.3] [--steps 300] [--batch 1]

For each pruning ratio, the planner's own transforms: `planner.transforms.prune.prune` (method ``heads``:
lowest-L1 attention heads and FFN neurons, kept FFN width rounded up to 16) on a copy of the zoo model, then
`planner.transforms.distill.distill` (``--steps`` Adam steps of ``--distill-batch`` at ``--lr``, MSE to the fp32
teacher's outputs, on the model's held-out `calibration_dataset()`; padded token batches are cut to their longest
sample).  Quality: the planner's own measure (`planner.measure.quality.quality_metrics`: 1 - centered cosine
to the fp32 outputs, centered by the reference mean) over the model's evaluation `dataset()`, before and after
distillation, each model run through ONNX Runtime fp32.  Latency: ONNX Runtime fp32 (ORT_ENABLE_ALL,
``--threads`` intra-op threads) at ``--batch``, interleaved rounds (experiments/ort_rounds.py), against the
unpruned model.  Writes results/prune-distill-<model>-b<B>-<time>.md.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import logging
import platform
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

import ort_rounds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--ratios", default="0.1,0.2,0.3")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--distill-batch", type=int, default=16)
    ap.add_argument("--round-to", type=int, default=16)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bound", type=float, default=0.01, help="max quality loss (MiniLM's: 1 - centered cosine <= 0.01)")
    a = ap.parse_args()

    import torch

    from planner.config import DistillConfig, PruneConfig
    from planner.measure.quality import quality_metrics
    from planner.source import export_onnx
    from planner.transforms.distill import distill
    from planner.transforms.prune import param_count, prune
    from planner.zoo import ZOO

    logging.getLogger().setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(a.threads)
    mod = importlib.import_module(ZOO[a.model])
    if not (hasattr(mod, "dataset") and hasattr(mod, "calibration_dataset")):
        raise SystemExit(f"{a.model}: this benchmark needs a zoo model with real data (`dataset()` and `calibration_dataset()`), e.g. minilm")
    names = [s.name for s in mod.INPUTS]
    data = mod.dataset()
    ev = {k: data[k] for k in names}
    calib = {k: v for k, v in mod.calibration_dataset().items() if k in names}
    n_eval = len(ev[names[0]])
    feed = {k: v[:a.batch] for k, v in ev.items()}
    example = tuple(torch.from_numpy(v[:1]) for v in ev.values())
    tmp = Path(tempfile.mkdtemp(prefix="prune-distill-bench-"))
    teacher = mod.build().eval()

    def to_onnx(model, tag: str) -> Path:
        path = tmp / f"{tag}.onnx"
        export_onnx(model, {k: v[:1] for k, v in ev.items()}, path)
        return path

    def outputs(path: Path) -> np.ndarray:
        s = ort_rounds.sessions({"m": path}, a.threads)["m"]
        return np.concatenate([s.run(None, {k: v[i:i + 32] for k, v in ev.items()})[0] for i in range(0, n_eval, 32)])

    variants = {"fp32 (unpruned)": to_onnx(teacher, "fp32")}
    ref = outputs(variants["fp32 (unpruned)"])
    rows = {"fp32 (unpruned)": {"params": param_count(teacher), "before": 0.0, "after": 0.0, "steps": 0, "seconds": 0.0}}
    for ratio in [float(r) for r in a.ratios.split(",")]:
        label = f"heads {ratio:g}"
        student = prune(copy.deepcopy(teacher), PruneConfig("heads", ratio, a.round_to), example)
        before = quality_metrics(ref, outputs(to_onnx(student, f"{ratio}-pruned")), "embedding")["quality_loss"]
        t0 = time.perf_counter()
        info = distill(student, teacher, DistillConfig(steps=a.steps, lr=a.lr, batch=a.distill_batch), calib, names)
        seconds = time.perf_counter() - t0
        variants[label] = to_onnx(student, f"{ratio}-distilled")
        after = quality_metrics(ref, outputs(variants[label]), "embedding")["quality_loss"]
        rows[label] = {"params": param_count(student), "before": before, "after": after, "steps": info["distill_steps"],
                       "seconds": seconds, "trim": info.get("distill_seq_trim")}
        print(f"{label}: loss {before:.4f} -> {after:.4f} after {info['distill_steps']} steps ({seconds:.0f} s, "
              f"kept {info.get('distill_seq_trim')} of the columns)", flush=True)

    sess = ort_rounds.sessions(variants, a.threads)
    ov_note = ort_rounds.add_openvino_default(sess, variants["fp32 (unpruned)"])
    ov = sess.get("OpenVINO default")
    if ov is not None:  # the unpruned fp32 model on OpenVINO with no options: a row of its own
        out = np.concatenate([ov.run(None, {k: v[i:i + 32] for k, v in ev.items()})[0] for i in range(0, n_eval, 32)])
        loss = quality_metrics(ref, out, "embedding")["quality_loss"]
        rows["OpenVINO default"] = {**rows["fp32 (unpruned)"], "before": loss, "after": loss}
    times = ort_rounds.time_rounds(sess, feed, a.rounds)
    stamp = time.strftime("%Y-%m-%d-%H%M%S")
    base = times["fp32 (unpruned)"]
    lines = [f"# Structured pruning + distillation, {a.model} ({stamp})", "",
             f"Host: {platform.processor() or platform.machine()}, {a.threads} threads. Pruning: `heads` (attention heads and FFN "
             f"neurons, lowest L1), round_to {a.round_to}. Distillation: {a.steps} Adam steps of {a.distill_batch} at lr {a.lr:g} on "
             f"{len(calib[names[0]])} held-out calibration samples. Quality: planner's quality loss (1 - centered cosine to fp32) over "
             f"{n_eval} evaluation samples, bound {a.bound:g}. Latency: ONNX Runtime fp32, batch {a.batch}, {a.rounds} interleaved rounds "
             f"of 30 runs. Command: `python experiments/bench_prune_distill.py --model {a.model} --ratios {a.ratios} --steps {a.steps} "
             f"--lr {a.lr:g} --batch {a.batch} --rounds {a.rounds}`", "", ov_note, "",
             "| variant | params | loss pruned | loss distilled | within bound | distill steps | distill s | columns kept | p50 ms | ratio to fp32 |",
             "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|"]
    for k, r in rows.items():
        trim = f"{r['trim']:.2f}" if r.get("trim") is not None else "–"
        lines.append(f"| {k} | {r['params']:,} | {r['before']:.4f} | {r['after']:.4f} | {'yes' if r['after'] <= a.bound else 'no'} | "
                     f"{r['steps']} | {r['seconds']:.0f} | {trim} | {np.median(times[k]):.2f} | {ort_rounds.ratio(times[k], base):.2f} |")
    ort_rounds.write(f"prune-distill-{a.model}-b{a.batch}-{stamp}", lines)


if __name__ == "__main__":
    main()
