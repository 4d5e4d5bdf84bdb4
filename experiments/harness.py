"""What every benchmark here shares, written once: the environment record (``lscpu``, ``nproc``, ISA flags,
library versions, git commit, load average), the progress log, the interleaved round order, a study reporter
that prints one line per trial, the busy-machine warning and the report files (Markdown + JSON, timestamped, in
experiments/results/).  A benchmark declares its variants and cells and keeps only what differs.

Stdlib only at import (a benchmark imports it before planner's heavy modules)."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "experiments" / "results"
for _p in (REPO, REPO / "experiments"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

# the ISA flags that decide int8/bf16 speed on a CPU (the rest of /proc/cpuinfo's flags are in the JSON)
ISA_PREFIXES = ("avx", "fma", "sse", "amx", "f16c", "vnni")
ENV_KEYS = ("host", "cpu", "nproc", "logical_cpus", "threads_per_core", "cores_per_socket", "sockets", "isa",
            "isa_flags_all", "lscpu_flags", "threads_used", "python", "platform", "torch", "onnxruntime", "onnx", "openvino", "nncf",
            "optuna", "mlflow", "numpy", "git_commit", "git_dirty", "loadavg_start", "loadavg_end")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _run(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=20, cwd=REPO).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def environment(threads_used: int | None = None) -> dict[str, Any]:
    """The machine and software a benchmark ran on (record it with every result; compare only within one run)."""
    import re
    from importlib.metadata import PackageNotFoundError, version

    from planner.target import cpu_isa, cpu_name

    def v(dist):
        try:
            return version(dist)
        except PackageNotFoundError:
            return None

    flags: list[str] = []
    try:
        flags = re.findall(r"^flags\s*:\s*(.*)$", Path("/proc/cpuinfo").read_text(), re.M)[0].split()
    except (OSError, IndexError):
        pass
    lsc = dict(line.split(":", 1) for line in _run(["lscpu"]).splitlines() if ":" in line)
    lsc = {k.strip(): val.strip() for k, val in lsc.items()}
    return {
        "host": socket.gethostname(), "cpu": cpu_name(), "nproc": _run(["nproc"]) or None, "logical_cpus": os.cpu_count(),
        "threads_per_core": lsc.get("Thread(s) per core"), "cores_per_socket": lsc.get("Core(s) per socket"),
        "sockets": lsc.get("Socket(s)"), "isa": cpu_isa(), "isa_flags_all": [f for f in flags if f.startswith(ISA_PREFIXES)],
        "lscpu_flags": lsc.get("Flags"), "threads_used": threads_used,
        "python": platform.python_version(), "platform": platform.platform(),
        **{d: v(d) for d in ("torch", "onnxruntime", "onnx", "openvino", "nncf", "optuna", "mlflow", "numpy")},
        "git_commit": _run(["git", "rev-parse", "HEAD"]),
        "git_dirty": bool(_run(["git", "status", "--porcelain", "--untracked-files=no"])),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }


def finish_environment(env: dict[str, Any]) -> dict[str, Any]:
    env["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    return env


def busy(env: dict[str, Any]) -> bool:
    """Whether the machine was busy when the run started (1-min load above a quarter of its CPUs)."""
    return (env.get("loadavg_start") or [0])[0] > 0.25 * (env.get("logical_cpus") or 1)


def environment_markdown(env: dict[str, Any]) -> list[str]:
    """The report's "Environment" section, and a warning line first when the machine was busy."""
    out = []
    if busy(env):
        out += [f"> **Warning**: the machine was busy before this run started (1-min load average "
                f"{env['loadavg_start'][0]} on {env.get('logical_cpus')} CPUs); latencies may be inflated and noisy. "
                "(The end-of-run load includes this run's own workers.)", ""]
    out += ["## Environment", ""]
    for k in ENV_KEYS:
        if k in env:
            val = env[k]
            out.append(f"* {k}: {', '.join(map(str, val)) if isinstance(val, list) else val}")
    return out + [""]


def rotated(variants: Sequence[str], r: int) -> list[str]:
    """The order of the variants in round ``r``: rotated by one each round, reversed on odd rounds, so no variant
    always runs first (or right after the same neighbour)."""
    k = r % len(variants)
    order = list(variants[k:]) + list(variants[:k])
    return order[::-1] if r % 2 else order


def write_report(prefix: str, result: dict[str, Any], markdown: Callable[[dict[str, Any]], str],
                 out_dir: Path | str = RESULTS, stamp: str | None = None) -> Path:
    """Write ``<out_dir>/<prefix>-<stamp>.json`` (the raw result) and ``.md`` (``markdown(result)``); the .md path.
    ``result["json_path"]`` names the JSON file for the Markdown to cite."""
    stamp = stamp or dt.datetime.now().strftime("%Y-%m-%d-%H%M%S")
    base = Path(out_dir) / f"{prefix}-{stamp}"
    base.parent.mkdir(parents=True, exist_ok=True)
    result["json_path"] = str(base.with_suffix(".json"))
    base.with_suffix(".json").write_text(json.dumps(result, indent=2, default=str))
    base.with_suffix(".md").write_text(markdown(result))
    return base.with_suffix(".md")


class LineReporter:
    """A study reporter (`planner.search.outcome.Reporter`) that logs one line per trial with its wall time (so a
    benchmark's log also tells how long trials take)."""

    def __init__(self, model: str, total: int):
        self.model, self.total, self.t0, self.n = model, total, 0.0, 0
        self.wall: list[float] = []

    def start(self, study_name, total, info):
        skipped = "; ".join(f"{b}: {r}" for b, r in (info.get("skipped") or {}).items())
        log(f"[{self.model}] study {study_name}: {total} trials now ({info.get('resumed', 0)} already in it); "
            f"backends {', '.join(info.get('backends', []))}" + (f"; skipped {skipped}" if skipped else ""))

    def trial_started(self, number, cfg):
        self.t0 = time.perf_counter()

    def trial_done(self, o):
        wall = time.perf_counter() - self.t0 if o.status != "duplicate" else 0.0
        free = o.status in ("duplicate", "skipped")  # cost no trial: the count is of measured candidates, as --trials is
        if not free:
            self.n += 1
            self.wall.append(wall)
        label = f"{o.config.describe()} b={o.config.batch_size}" if o.config else "?"
        if o.status in ("ok", "infeasible"):
            detail = self.measured(o.metrics) + (f" ({o.message})" if o.message else "")
            if o.composed_of:
                detail += f" [engine of #{o.composed_of['engine']}, student of #{o.composed_of['student']}]"
        elif o.status == "duplicate":
            detail = o.message or ""
        else:
            first = (o.message or "").splitlines()[0][:120] if o.message else ""
            detail = first if first.startswith(f"{o.reason}:") else f"{o.reason}: {first}"
        count = " " * len(f"{self.n}/{self.total}") if free else f"{self.n}/{self.total}"
        log(f"[{self.model}] {count} #{o.number} {o.status:10s} {label}: {detail}  [{wall:.0f} s]")

    @staticmethod
    def measured(m: dict) -> str:
        """What a measured trial's line shows (subclasses: other metrics)."""
        return f"p50 {m['latency_p50_ms']:.3f} ms, loss {m['quality_loss']:.1e}"

    def confirming(self, message):
        if not message.startswith("round"):
            log(f"[{self.model}] {message}")

    def confirmed(self, summary, rows):
        for r in rows:
            got = (f"{r['study_ms']:.3f} -> {r['confirmed_ms']:.3f} ms ({r['ratio']:.2f}x)" if r["confirmed_ms"] is not None
                   else f"failed: {r['failed']}")
            log(f"[{self.model}] re-measured #{r['trial']} {r['deployment']} b={r['batch']}: {got}")

    def end(self, result):
        log(f"[{self.model}] study done: {result.stopped_because}; Pareto front {len(result.front)} points")
