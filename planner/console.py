"""Terminal presentation: a Rich progress bar while trials run, then the Pareto table."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

STATUS_STYLE = {"ok": "green", "infeasible": "yellow", "failed": "red", "duplicate": "dim", "skipped": "dim", "stopped": "yellow"}


def pareto_table(front, title: str = "Pareto front") -> Table:
    if front and all("ttft_ms" in p.metrics and "tpot_ms" in p.metrics for p in front):
        return _decoder_table(front, title)
    if front and all("served_p99_ms" in p.metrics for p in front):
        return _served_table(front, title)
    t = Table(title=title, title_justify="left")
    for col in ("trial", "deployment", "batch", "p50 ms", "p99 ms", "samples/s", "quality loss", "confirmed"):
        t.add_column(col, justify="left" if col == "deployment" else "right", overflow="fold")
    for p in front:
        m = p.metrics
        t.add_row(
            str(p.number), p.label, str(p.batch_size),
            f"{m.get('latency_p50_ms', float('nan')):.3f}", f"{m.get('latency_p99_ms', float('nan')):.3f}",
            f"{m.get('throughput', float('nan')):.0f}", f"{m.get('quality_loss', float('nan')):.1e}",
            f"{int(m['confirmed_rounds'])} rounds" if m.get("confirmed_rounds") else "–",
        )
    return t


def _served_table(front, title: str) -> Table:
    """Under traffic: the served percentiles at the traffic's rate, the rate achieved, the sustained rate within
    the SLO, and the single-request p50 beside them."""
    t = Table(title=f"{title}: served latency (completion - scheduled arrival)", title_justify="left")
    for col in ("trial", "deployment", "served p50 ms", "served p99 ms", "req/s asked", "achieved", "dropped",
                "sustained req/s", "single p50 ms", "quality loss"):
        t.add_column(col, justify="left" if col == "deployment" else "right", overflow="fold")
    nan = float("nan")
    for p in front:
        m = p.metrics
        t.add_row(str(p.number), p.label, f"{m['served_p50_ms']:.3f}", f"{m['served_p99_ms']:.3f}",
                  f"{m.get('served_rate', nan):.0f}", f"{m.get('served_achieved_rate', nan):.0f}",
                  f"{int(m.get('served_dropped', 0))}", f"{m.get('sustained_rate', nan):.0f}",
                  f"{m.get('latency_p50_ms', nan):.3f}", f"{m.get('quality_loss', nan):.1e}")
    return t


def _decoder_table(front, title: str) -> Table:
    """A decoder study's front: TTFT and TPOT at the workload's percentile, and the response they make."""
    from planner.select.pareto import response_ms

    t = Table(title=title, title_justify="left")
    for col in ("trial", "deployment", "batch", "TTFT ms", "TPOT ms", "response ms", "tokens/s", "quality loss"):
        t.add_column(col, justify="left" if col == "deployment" else "right", overflow="fold")
    for p in front:
        m = p.metrics
        t.add_row(str(p.number), p.label, str(p.batch_size), f"{m['ttft_ms']:.2f}", f"{m['tpot_ms']:.2f}",
                  f"{response_ms(p):.1f}", f"{m.get('tokens_per_s', float('nan')):.1f}",
                  f"{m.get('quality_loss', float('nan')):.1e}")
    return t


def confirmation_table(rows: list[dict[str, Any]], summary: dict[str, Any]) -> Table:
    pct = summary["percentile"]
    t = Table(title=f"Re-measured in {summary['rounds']} interleaved rounds ({pct}, median over rounds)", title_justify="left")
    for col in ("trial", "deployment", "batch", f"study {pct} ms", f"confirmed {pct} ms", "confirmed / study"):
        t.add_column(col, justify="left" if col == "deployment" else "right", overflow="fold")
    for r in rows:
        if r["confirmed_ms"] is None:
            t.add_row(str(r["trial"]), r["deployment"], str(r["batch"]), f"{r['study_ms']:.3f}", f"[red]{r['failed'][:80]}[/]", "–")
        else:
            t.add_row(str(r["trial"]), r["deployment"], str(r["batch"]), f"{r['study_ms']:.3f}", f"{r['confirmed_ms']:.3f}",
                      f"{r['ratio']:.2f}" + (" [yellow]breaks the SLO[/]" if r["slo_violated"] else ""))
    return t


class RichReporter:
    def __init__(self, console: Console | None = None):
        self.console = console or Console()
        self.progress = None
        self.task = None
        self._status = None

    def start(self, study_name: str, total: int, info: dict[str, Any]) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        c = self.console
        mi = info.get("model_info", {})
        c.print(f"[bold]study[/] {study_name}  [dim](MLflow experiment {info.get('experiment')})[/]")
        if info.get("resumed"):
            c.print(f"resuming: {info['resumed']} trials already in the study")
        if info.get("seeds_queued"):
            c.print(f"queued {info['seeds_queued']} seed configs from the search space as the first trials")
        c.print(f"backends: {', '.join(info.get('backends', []))}")
        for b, why in (info.get("skipped") or {}).items():
            c.print(f"  [dim]skipped {b}: {why}[/]")
        if mi.get("synthetic_data"):
            c.print("[dim]quality is measured on seeded synthetic inputs (pass --data for real ones)[/]")
        from rich.markup import escape

        from planner.outputs import judged_on

        if (line := judged_on(mi)) is not None:
            c.print(f"[dim]{escape(line)}[/]")
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=c, transient=True)
        self.progress.start()
        self.task = self.progress.add_task("trials", total=total)

    def trial_started(self, number: int, cfg) -> None:
        if self.progress is not None:
            self.progress.update(self.task, description=f"trial {number}: {cfg.describe()} b={cfg.batch_size}")

    def trial_done(self, o) -> None:
        style = STATUS_STYLE.get(o.status, "")
        label = o.config.describe() if o.config else "?"
        if o.status in ("ok", "infeasible"):
            m = o.metrics
            detail = (f"p50 {m['latency_p50_ms']:.3f} ms  p99 {m['latency_p99_ms']:.3f} ms  "
                      f"{m['throughput']:.1f}/s  loss {m['quality_loss']:.2e}")
            if "served_p99_ms" in m:
                detail = (f"served p50 {m['served_p50_ms']:.3f} ms  p99 {m['served_p99_ms']:.3f} ms  "
                          f"at {m.get('served_rate', float('nan')):.0f} req/s (achieved "
                          f"{m['served_achieved_rate']:.0f})  sustained {m.get('sustained_rate', float('nan')):.0f} req/s  "
                          f"single p50 {m['latency_p50_ms']:.3f} ms  loss {m['quality_loss']:.2e}")
            if o.status == "infeasible":
                detail += f"  [yellow]{o.message}[/]"
            if o.composed_of:
                detail += f"  [dim](composed: the engine of #{o.composed_of['engine']}, the student of #{o.composed_of['student']})[/]"
        elif o.status in ("duplicate", "skipped", "stopped"):
            detail = o.message or ""
        else:
            detail = f"{o.reason}: {(o.message or '').splitlines()[0][:160] if o.message else ''}"
        self.console.print(f"[{style}]{o.status:10s}[/] #{o.number:<4d} {label} b={o.config.batch_size if o.config else '?'}  {detail}")
        if self.progress is not None and o.status not in ("duplicate", "skipped"):  # they cost no trial of --trials
            self.progress.advance(self.task)

    def confirming(self, message: str) -> None:
        if not message.startswith(("round", "rebuilding")):
            self.console.print(f"[dim]{message}[/]")
        elif self.progress is not None:
            self.progress.update(self.task, description=message)
        elif self._status is None:  # `planner confirm`: no trial progress bar, a spinner instead
            self._status = self.console.status(message)
            self._status.start()
        else:
            self._status.update(message)

    def confirmed(self, summary: dict[str, Any], rows: list[dict[str, Any]]) -> None:
        if self.progress is not None:
            self.progress.update(self.task, description="done")
        if self._status is not None:
            self._status.stop()
            self._status = None
        self.console.print(confirmation_table(rows, summary))

    def end(self, result) -> None:
        if self.progress is not None:
            self.progress.stop()
        c = self.console
        n_ok = sum(o.status == "ok" for o in result.outcomes)
        n_fail = sum(o.status == "failed" for o in result.outcomes)
        n_skip = sum(o.status == "skipped" for o in result.outcomes)
        n_stop = sum(o.status == "stopped" for o in result.outcomes)
        skipped = f", {n_skip} skipped (known hopeless or unsupported: not measured)" if n_skip else ""
        skipped += f", {n_stop} stopped in distillation" if n_stop else ""
        c.print(f"\n{len(result.outcomes)} trials this run: {n_ok} feasible, {n_fail} failed{skipped}; stopped: {result.stopped_because}")
        split = time_split_line(result.outcomes)
        if split:
            c.print(split)
        c.print(pareto_table(result.front, title=f"Pareto front ({len(result.front)} deployments, feasible only)"))
        from planner.record.mlflow import redact

        c.print(f"Optuna storage : {redact(result.storage)}")
        c.print(f"MLflow store   : {redact(result.tracking_uri)}  (experiment '{result.experiment}', run {result.parent_run_id})")
        c.print(f"work dirs      : {result.home / 'studies'}")
        c.print("browse         : planner ui" + ("" if str(result.home) == "" else f" --home {result.home}"))


def time_split_line(outcomes) -> str:
    """Where the measured trials' wall time went, per trial on average, and the planner's own share of it."""
    from planner.record.metrics import PLANNER_SHARE, TIME_PHASES

    rows = [o.metrics for o in outcomes if o.status != "duplicate" and any(k.startswith("time.") for k in o.metrics)]
    if not rows:
        return ""
    mean = {p: sum(m.get(f"time.{p}_s", 0.0) for m in rows) / len(rows) for p in TIME_PHASES}
    total = sum(mean.values()) or 1.0
    own = sum(mean[p] for p in PLANNER_SHARE)
    parts = ", ".join(f"{p} {mean[p]:.1f}" for p in TIME_PHASES if mean[p] >= 0.05)
    return (f"time per measured trial (mean of {len(rows)}, s): {parts}; total {total:.1f} s, "
            f"planner's own share {100 * own / total:.0f} %")
