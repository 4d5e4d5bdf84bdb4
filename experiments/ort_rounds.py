"""Interleaved timing of ONNX Runtime sessions and result writing, shared by the micro-benchmarks (bench_int4_ort,
bench_int8_dynamic, bench_prune_distill; profile_int8_ort uses `write`).  `add_openvino_default` puts the baseline a
user would pick instead, OpenVINO with no options on the fp32 model, into the same interleaved rounds."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"


def sessions(variants: dict[str, Path], threads: int) -> dict[str, Any]:
    """One CPU session per model file, ``threads`` intra-op threads each."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    return {k: ort.InferenceSession(str(v), so, providers=["CPUExecutionProvider"]) for k, v in variants.items()}


def add_openvino_default(sess: dict[str, Any], fp32_model: Path) -> str | None:
    """Add the "OpenVINO default" session (convert + compile_model(model, "CPU"), no options) of ``fp32_model`` to
    ``sess``, timed in the same rounds; return a note for the results instead when openvino is not importable."""
    import openvino_default

    why = openvino_default.missing_reason()
    if why:
        print(f"OpenVINO default: {why}")
        return f"OpenVINO default left out: {why}."
    s = openvino_default.session(fp32_model)
    sess[openvino_default.TITLE] = s
    return ("OpenVINO default: `convert_model` of the fp32 ONNX file + `compile_model(model, 'CPU')`, no options (openvino "
            f"{openvino_default.version()}; chose " + ", ".join(f"{k} {v}" for k, v in s.properties.items()) + ").")


def time_rounds(sess: dict[str, Any], feed: dict, rounds: int, runs: int = 30, warmup: int = 3) -> dict[str, list[float]]:
    """Per session, the median ms of ``runs`` calls (after ``warmup``) in each of ``rounds`` rounds; every round
    runs each session in turn, the order rotating from round to round."""
    names = list(sess)
    times: dict[str, list[float]] = {k: [] for k in names}
    for r in range(rounds):
        for k in names[r % len(names):] + names[:r % len(names)]:
            s = sess[k]
            for _ in range(warmup):
                s.run(None, feed)
            t = []
            for _ in range(runs):
                t0 = time.perf_counter()
                s.run(None, feed)
                t.append(time.perf_counter() - t0)
            times[k].append(statistics.median(t) * 1e3)
    return times


def ratio(times: list[float], base: list[float]) -> float:
    """The median over rounds of the per-round ratio to the baseline."""
    return statistics.median(t / b for t, b in zip(times, base))


def write(stem: str, lines: list[str]) -> Path:
    """``results/<stem>.md``, echoed to the terminal."""
    out = RESULTS / f"{stem}.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {out}")
    return out
