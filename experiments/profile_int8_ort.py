"""Where ONNX Runtime spends its time, fp32 against int8 dynamic: per-operator totals from ORT's own profiler.

    python experiments/profile_int8_ort.py [--model minilm] [--batch 1] [--runs 20]

Exports the zoo model, writes the planner's int8 dynamic model of it (`planner.transforms.quantize.quantize_onnx`,
MatMul/Gemm, per-channel s8 weights, no 7-bit reduction), runs each `WARMUP` + ``--runs`` times with ORT's
profiler on, and tabulates kernel time per operator type (ms per call, share of the total).  The question it answers:
do the int8 matrix products themselves run faster than the fp32 ones on this host?  Writes
results/profile-int8-<model>-b<B>-<time>.md.
"""

from __future__ import annotations

import argparse
import collections
import importlib
import json
import logging
import platform
import tempfile
import time
import warnings
from pathlib import Path

import ort_rounds

WARMUP = 5


def profile(path: Path, feed: dict, runs: int, threads: int, prefix: Path) -> tuple[float, collections.Counter]:
    """Wall ms per timed run, and kernel microseconds per operator type summed over every call (the profiler
    also records the `WARMUP` calls)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.enable_profiling = True
    so.profile_file_prefix = str(prefix)
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    for _ in range(WARMUP):
        s.run(None, feed)
    t0 = time.perf_counter()
    for _ in range(runs):
        s.run(None, feed)
    wall = (time.perf_counter() - t0) / runs * 1e3
    ops: collections.Counter = collections.Counter()
    for e in json.loads(Path(s.end_profiling()).read_text()):
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            ops[e["args"]["op_name"]] += e["dur"]
    return wall, ops


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--top", type=int, default=8)
    a = ap.parse_args()

    import onnxruntime as ort

    from planner.config import QuantConfig, freeze_options
    from planner.source import export_onnx
    from planner.transforms.quantize import int8_saturates, quantize_onnx
    from planner.zoo import ZOO

    logging.getLogger().setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    mod = importlib.import_module(ZOO[a.model])
    names = [s.name for s in mod.INPUTS]
    data = mod.dataset() if hasattr(mod, "dataset") else None
    if data is None:
        raise SystemExit(f"{a.model}: this profile needs a zoo model with real data (a `dataset()`), e.g. minilm")
    feed = {k: data[k][:a.batch] for k in names}
    tmp = Path(tempfile.mkdtemp(prefix="int8-profile-"))
    fp32 = tmp / "fp32.onnx"
    export_onnx(mod.build(), {k: v[:1] for k, v in feed.items()}, fp32)
    int8 = tmp / "int8.onnx"
    opts = {"op_types": "matmul", "weight_type": "s8", "per_channel": True, "reduce_range": False}
    quantize_onnx(fp32, int8, QuantConfig("int8_dynamic", freeze_options(opts)), None)

    results = {tag: profile(p, feed, a.runs, a.threads, tmp / tag) for tag, p in (("fp32", fp32), ("int8 dynamic", int8))}
    stamp = time.strftime("%Y-%m-%d-%H%M%S")
    lines = [f"# ONNX Runtime per-operator time, fp32 vs int8 dynamic, {a.model} b{a.batch} ({stamp})", "",
             f"Host: {platform.processor() or platform.machine()} (VNNI: {'no' if int8_saturates() else 'yes'}), onnxruntime "
             f"{ort.__version__}, {a.threads} intra-op threads; {a.runs} profiled runs after 5 warm-ups; int8: MatMul/Gemm, "
             f"per-channel s8 weights. Command: `python experiments/profile_int8_ort.py --model {a.model} --batch {a.batch} "
             f"--runs {a.runs}`", ""]
    calls = a.runs + WARMUP
    for tag, (wall, ops) in results.items():
        total = sum(ops.values())
        lines += [f"## {tag}: {wall:.2f} ms per run (wall, timed runs), {total / calls / 1e3:.2f} ms in kernels per call "
                  f"(all {calls} calls)", "", "| operator | ms per call | share |", "|---|---:|---:|"]
        lines += [f"| {k} | {v / calls / 1e3:.2f} | {v / total:.1%} |" for k, v in ops.most_common(a.top)]
        lines.append("")
    ort_rounds.write(f"profile-int8-{a.model}-b{a.batch}-{stamp}", lines)


if __name__ == "__main__":
    main()
