"""ONNX Runtime int8 dynamic quantization: which options keep a real transformer within its quality bound.

    python experiments/bench_int8_dynamic.py [--model minilm] [--batch 1] [--rounds 5] [--samples 32]

The planner's own transform (`planner.transforms.quantize.quantize_onnx`, op_types matmul) writes one model
per combination of ``weight_type`` (s8/u8) x ``reduce_range`` (7-bit weights) x ``per_channel``.  Quality is
the centered cosine of each sample's output to fp32's (mean and min over ``--samples`` real samples of the
zoo model's dataset: MiniLM-L6's real sentences); the planner's bound for MiniLM is 1 - cosine <= 0.01.
Latency: interleaved rounds at ``--batch`` (30 runs after 3 warm-ups per round, the median per round),
reported as the median over rounds and the median per-round ratio to ORT fp32.  Writes
results/int8-dynamic-<model>-b<B>-<time>.md.
"""

from __future__ import annotations

import argparse
import importlib
import itertools
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
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()

    import logging

    import onnxruntime as ort

    from planner.config import QuantConfig, freeze_options
    from planner.source import export_onnx
    from planner.transforms.quantize import int8_saturates, quantize_onnx
    from planner.zoo import ZOO

    logging.getLogger().setLevel(logging.ERROR)  # ORT's "consider pre-processing" notes
    warnings.filterwarnings("ignore")
    mod = importlib.import_module(ZOO[a.model])
    if not hasattr(mod, "dataset"):
        raise SystemExit(f"{a.model}: this benchmark needs a zoo model with real data (a `dataset()`), e.g. minilm")
    names = {s.name for s in mod.INPUTS}
    data = {k: v for k, v in mod.dataset().items() if k in names}
    ex_q = {k: v[:a.samples] for k, v in data.items()}
    ex_t = {k: v[:a.batch] for k, v in data.items()}
    tmp = Path(tempfile.mkdtemp(prefix="int8dyn-bench-"))
    src = tmp / "fp32.onnx"
    export_onnx(mod.build(), {k: v[:1] for k, v in data.items()}, src)
    variants: dict[str, Path] = {"ORT fp32": src}
    for wt, rr, pc in itertools.product(("s8", "u8"), (False, True), (False, True)):
        label = f"weights {wt}, reduce_range {str(rr).lower()}, per_channel {str(pc).lower()}"
        dst = tmp / f"{wt}-{rr}-{pc}.onnx"
        quantize_onnx(src, dst, QuantConfig("int8_dynamic", freeze_options({"weight_type": wt, "reduce_range": rr, "per_channel": pc})), None)
        variants[label] = dst

    sess = ort_rounds.sessions(variants, a.threads)
    ov_note = ort_rounds.add_openvino_default(sess, src)
    ref = sess["ORT fp32"].run(None, ex_q)[0].astype(np.float64).reshape(a.samples, -1)

    def ccos(o):
        o = o.astype(np.float64).reshape(a.samples, -1)
        x, y = o - o.mean(1, keepdims=True), ref - ref.mean(1, keepdims=True)
        return (x * y).sum(1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1)

    quality = {k: ccos(s.run(None, ex_q)[0]) for k, s in sess.items()}
    times = ort_rounds.time_rounds(sess, ex_t, a.rounds)
    stamp = time.strftime("%Y-%m-%d-%H%M%S")
    lines = [f"# ONNX Runtime int8 dynamic options, {a.model} ({stamp})", "",
             f"Host: {platform.processor() or platform.machine()} (VNNI: {'no' if int8_saturates() else 'yes'}), onnxruntime "
             f"{ort.__version__}, {a.threads} intra-op threads. Quality: centered cosine per sample to ORT fp32 over {a.samples} "
             f"real samples. Latency: batch {a.batch}, {a.rounds} interleaved rounds of 30 runs. Command: "
             f"`python experiments/bench_int8_dynamic.py --model {a.model} --batch {a.batch} --rounds {a.rounds} --samples {a.samples}`", "",
             ov_note, "",
             "| variant | cosine mean | cosine min | within 1 - cos <= 0.01 | p50 ms (median of rounds) | ratio to ORT fp32 |",
             "|---|---:|---:|---|---:|---:|"]
    for k, v in times.items():
        c = quality[k]
        lines.append(f"| {k} | {c.mean():.4f} | {c.min():.4f} | {'yes' if 1 - c.mean() <= 0.01 else 'no'} | {np.median(v):.2f} | "
                     f"{ort_rounds.ratio(v, times['ORT fp32']):.2f} |")
    ort_rounds.write(f"int8-dynamic-{a.model}-b{a.batch}-{stamp}", lines)

if __name__ == "__main__":
    main()
