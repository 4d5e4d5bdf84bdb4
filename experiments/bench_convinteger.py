"""ONNX Runtime int8 dynamic quantization on a CNN: does quantizing the convolutions (ConvInteger) pay?

    python experiments/bench_convinteger.py [--model digits-cnn] [--batches 1,64] [--rounds 5]

planner's own transform (`planner.transforms.quantize.quantize_onnx`, scheme int8_dynamic at its defaults) writes
the zoo model quantized with ``op_types`` ``matmul`` (MatMul/Gemm only: a CNN's classifier) and ``all`` (the
convolutions too, as ConvInteger).  Each is timed beside ORT fp32 and the OpenVINO default (fp32, no options) in
interleaved rounds (`ort_rounds.time_rounds`: 30 runs after 3 warm-ups per round, the median per round) at each
batch size; the table gives the median over rounds and the median per-round ratio to ORT fp32.  Quality, for a zoo
model with labelled data (digits-cnn): the accuracy drop against ORT fp32 on its test split.  Writes
results/convinteger-<model>-<time>.md.  Nothing else on the cores while it runs.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import platform
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

import ort_rounds

OP_TYPES = ("matmul", "all")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="digits-cnn")
    ap.add_argument("--batches", default="1,64")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()

    from planner.config import QuantConfig, freeze_options
    from planner.source import export_onnx
    from planner.transforms.quantize import int8_saturates, quantize_onnx
    from planner.zoo import ZOO

    logging.getLogger().setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    mod = importlib.import_module(ZOO[a.model])
    spec = mod.INPUTS[0]
    data = mod.dataset() if hasattr(mod, "dataset") else None
    rng = np.random.default_rng(0)

    def feed(n: int) -> dict:
        if data is not None:
            return {spec.name: np.ascontiguousarray(np.resize(data[spec.name], (n, *spec.shape)).astype(np.float32))}
        return {spec.name: rng.standard_normal((n, *spec.shape)).astype(np.float32)}

    tmp = Path(tempfile.mkdtemp(prefix="convinteger-bench-"))
    src = tmp / "fp32.onnx"
    export_onnx(mod.build(), feed(1), src)
    variants: dict[str, Path] = {"ORT fp32": src}
    for op in OP_TYPES:
        dst = tmp / f"int8-dynamic-{op}.onnx"
        quantize_onnx(src, dst, QuantConfig("int8_dynamic", freeze_options({"op_types": op})), None)
        variants[f"ORT int8_dynamic op_types={op}"] = dst
    sess = ort_rounds.sessions(variants, a.threads)
    ov_note = ort_rounds.add_openvino_default(sess, src)

    quality: dict[str, str] = {}
    if data is not None and "labels" in data:
        x = {spec.name: data[spec.name]}
        ref = (sess["ORT fp32"].run(None, x)[0].argmax(1) == data["labels"]).mean()
        for k, s in sess.items():
            acc = (s.run(None, x)[0].argmax(1) == data["labels"]).mean()
            quality[k] = f"{ref - acc:+.4f}"

    stamp = time.strftime("%Y-%m-%d-%H%M%S")
    batches = [int(b) for b in a.batches.split(",")]
    lines = [f"# ONNX Runtime int8 dynamic on a CNN: MatMul only or ConvInteger too, {a.model} ({stamp})", "",
             f"Host: {platform.processor() or platform.machine()} (VNNI: {'no' if int8_saturates() else 'yes'}), "
             f"onnxruntime {__import__('onnxruntime').__version__}, {a.threads} intra-op threads; {a.rounds} interleaved "
             f"rounds of 30 runs per batch size. Command: `python experiments/bench_convinteger.py --model {a.model} "
             f"--batches {a.batches} --rounds {a.rounds}`", "", ov_note or "", "",
             "| variant | accuracy drop vs ORT fp32 | " + " | ".join(f"b={b}: p50 ms / ratio to ORT fp32" for b in batches) + " |",
             "|---|---:|" + "---:|" * len(batches)]
    times = {b: ort_rounds.time_rounds(sess, feed(b), a.rounds) for b in batches}
    for k in sess:
        cells = " | ".join(f"{np.median(times[b][k]):.3f} / {ort_rounds.ratio(times[b][k], times[b]['ORT fp32']):.2f}"
                           for b in batches)
        lines.append(f"| {k} | {quality.get(k, 'n/a')} | {cells} |")
    ort_rounds.write(f"convinteger-{a.model}-{stamp}", lines)


if __name__ == "__main__":
    main()
