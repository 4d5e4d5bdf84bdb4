"""ONNX Runtime int4 weight-only (MatMulNBits) against fp32 and int8 dynamic, on a zoo transformer.

    python experiments/bench_int4_ort.py --model minilm --batch 1 [--rounds 5]

The planner's own transform (`planner.transforms.quantize.quantize_onnx`) writes each variant, plus one
variant the planner does not search (accuracy_level 4: int8 compute of the activations) to show why.
Each variant is timed in interleaved rounds (30 runs after 3 warm-ups per round, the median per round);
the figure is the median over rounds and the ratio is to ONNX Runtime fp32 in the same rounds.  Quality is
the centered cosine of the first output to fp32's on the same inputs.  Writes results/int4-ort-<model>-b<B>-<time>.md.
"""

from __future__ import annotations

import argparse
import importlib
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

import ort_rounds


def _inputs(mod, name: str, batch: int) -> dict[str, np.ndarray]:
    if hasattr(mod, "dataset"):
        return {k: v[:batch] for k, v in mod.dataset().items() if k in {s.name for s in mod.INPUTS}}
    rng = np.random.default_rng(0)
    out = {}
    for spec in mod.INPUTS:
        shape = (batch, *spec.shape)
        if "int" in spec.dtype:
            out[spec.name] = rng.integers(spec.low, spec.high, shape).astype(np.int64)
        else:
            out[spec.name] = rng.standard_normal(shape).astype(np.float32)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()

    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    from planner.config import QuantConfig, freeze_options
    from planner.source import export_onnx
    from planner.transforms.quantize import quantize_onnx
    from planner.zoo import ZOO

    mod = importlib.import_module(ZOO[a.model])
    ex = _inputs(mod, a.model, a.batch)
    tmp = Path(tempfile.mkdtemp(prefix="int4-bench-"))
    src = tmp / "fp32.onnx"
    export_onnx(mod.build(), ex, src)
    variants = {"ORT fp32": src}
    for label, scheme, opts in (("int8_dynamic (matmul)", "int8_dynamic", {}),
                                ("int4 group 32", "int4_weight_only", {"group_size": 32}),
                                ("int4 group 128", "int4_weight_only", {"group_size": 128})):
        dst = tmp / f"{scheme}-{opts.get('group_size', '')}.onnx"
        quantize_onnx(src, dst, QuantConfig(scheme, freeze_options(opts)), None)
        variants[label] = dst
    q = MatMulNBitsQuantizer(onnx.load(str(src)), block_size=32, is_symmetric=True, accuracy_level=4,
                             op_types_to_quantize=("MatMul",))
    q.process()
    variants["int4 group 32, accuracy_level 4 (not searched)"] = tmp / "acc4.onnx"
    q.model.save_model_to_file(str(tmp / "acc4.onnx"))

    sess = ort_rounds.sessions(variants, 2)
    ov_note = ort_rounds.add_openvino_default(sess, src)
    ref = sess["ORT fp32"].run(None, ex)[0].astype(np.float64)

    def ccos(o):
        x, y = (o - o.mean()).ravel(), (ref - ref.mean()).ravel()
        return float(x @ y / np.linalg.norm(x) / np.linalg.norm(y))

    quality = {k: ccos(s.run(None, ex)[0].astype(np.float64)) for k, s in sess.items()}
    times = ort_rounds.time_rounds(sess, ex, a.rounds)
    stamp = time.strftime("%Y-%m-%d-%H%M%S")
    lines = [f"# ONNX Runtime int4 weight-only, {a.model} batch {a.batch} ({stamp})", "",
             f"Host: {platform.processor() or platform.machine()}, onnxruntime {ort.__version__}, 2 intra-op threads; "
             f"{a.rounds} interleaved rounds of 30 runs (order rotating); command: `python experiments/bench_int4_ort.py --model {a.model} "
             f"--batch {a.batch} --rounds {a.rounds}`", "",
             ov_note, "",
             "| variant | p50 ms (median of rounds) | ratio to ORT fp32 (median of per-round ratios) | centered cosine | bytes |",
             "|---|---:|---:|---:|---:|"]
    for k, v in times.items():
        lines.append(f"| {k} | {np.median(v):.2f} | {ort_rounds.ratio(v, times['ORT fp32']):.2f} | {quality[k]:.4f} | "
                     f"{variants.get(k, src).stat().st_size:,} |")  # OpenVINO default: the fp32 file
    ort_rounds.write(f"int4-ort-{a.model}-b{a.batch}-{stamp}", lines)

if __name__ == "__main__":
    main()
