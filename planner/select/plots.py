"""Pictures of a study for the parent MLflow run: Pareto scatter (PNG + self-contained HTML) and parallel coordinates.

    plots/pareto.png     latency vs quality loss, coloured by backend, the front connected, SLO/quality bars
    plots/pareto.html    the same, interactive (hover for the deployment, click the legend to hide a backend);
                         inline SVG and a few lines of inline JS - no CDN, opens offline
    plots/parallel.png   options -> metrics, one line per measured deployment

matplotlib (Agg) draws the PNGs; the HTML needs nothing.  Everything here is
imported lazily by the orchestrator after a study, never by the CLI at start-up.
"""

from __future__ import annotations

import html
import json
import math
import tempfile
from pathlib import Path
from typing import Any

from planner.record.trial import TrialRecord

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
INFEASIBLE = "#b0b0b0"


def study_points(study) -> list[TrialRecord]:
    """Every measured (complete, non-duplicate) trial of an Optuna study, with its front membership."""
    from optuna.trial import TrialState

    from planner.select.pareto import pareto_front

    front = {p.number for p in pareto_front(study)}
    out = [TrialRecord.from_trial(t, on_front=t.number in front)
           for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
           if t.user_attrs.get("duplicate_of") is None and t.user_attrs.get("metrics")]
    return sorted(out, key=lambda p: p.number)


def _colours(points: list[TrialRecord]) -> dict[str, str]:
    backends = sorted({p.backend for p in points})
    return {b: PALETTE[i % len(PALETTE)] for i, b in enumerate(backends)}


def _finite(points: list[TrialRecord]) -> list[TrialRecord]:
    return [p for p in points if math.isfinite(p.latency_ms) and p.latency_ms > 0 and math.isfinite(p.quality_loss)]


def _use_log(values: list[float]) -> bool:
    pos = [v for v in values if v > 0]
    return bool(pos) and max(pos) / min(pos) > 10


def _front(points: list[TrialRecord]) -> list[TrialRecord]:
    return sorted((p for p in points if p.on_front), key=lambda p: (p.latency_ms, p.quality_loss))


# --------------------------------------------------------------------------- PNG


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def pareto_png(points: list[TrialRecord], path: Path, slo_ms: float | None = None, max_quality_loss: float | None = None,
               title: str = "") -> Path:
    plt = _plt()
    pts = _finite(points)
    colours = _colours(pts)
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=110)
    try:
        for b, c in colours.items():
            ok = [p for p in pts if p.backend == b and p.feasible]
            bad = [p for p in pts if p.backend == b and not p.feasible]
            if ok:
                ax.scatter([p.latency_ms for p in ok], [p.quality_loss for p in ok], c=c, s=36, alpha=0.8, label=b,
                           edgecolors="none", zorder=3)
            if bad:
                ax.scatter([p.latency_ms for p in bad], [p.quality_loss for p in bad], c=c, s=36, marker="x", alpha=0.5,
                           label=f"{b} (infeasible)", zorder=2)
        front = _front(pts)
        if front:
            ax.step([p.latency_ms for p in front], [p.quality_loss for p in front], where="post", color="black",
                    lw=1.2, alpha=0.7, zorder=4, label="Pareto front")
            ax.scatter([p.latency_ms for p in front], [p.quality_loss for p in front], s=110, facecolors="none",
                       edgecolors="black", linewidths=1.6, zorder=5)
            for p in front:
                ax.annotate(f"#{p.number}", (p.latency_ms, p.quality_loss), textcoords="offset points", xytext=(6, 5),
                            fontsize=8, zorder=6)
        if slo_ms:
            ax.axvline(slo_ms, color="#d62728", ls="--", lw=1.2, label=f"latency SLO {slo_ms:g} ms")
        if max_quality_loss is not None and pts and max_quality_loss <= max(p.quality_loss for p in pts) * 1.5:
            ax.axhline(max_quality_loss, color="#9467bd", ls=":", lw=1.2, label=f"max quality loss {max_quality_loss:g}")
        lats = [p.latency_ms for p in pts] + ([slo_ms] if slo_ms else [])
        if _use_log(lats):
            ax.set_xscale("log")
        qs = [p.quality_loss for p in pts]
        if _use_log(qs):
            pos = [q for q in qs if q > 0]
            ax.set_yscale("symlog", linthresh=min(pos)) if any(q <= 0 for q in qs) else ax.set_yscale("log")
        ax.set_xlabel("served latency (ms)" if any("served_p99_ms" in p.metrics for p in pts) else "latency per batch (ms)")
        ax.set_ylabel("quality loss (lower is better)")
        ax.set_title(title or "Pareto front: latency vs quality loss")
        ax.grid(True, which="both", alpha=0.25)
        if pts:
            ax.legend(fontsize=8, loc="best")
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
    return path


def _axis_values(points: list[TrialRecord]) -> list[tuple[str, list[Any], bool]]:
    """(axis name, value per point, categorical?) for parameters that vary, then the metrics."""
    cols: list[tuple[str, list[Any], bool]] = [
        ("backend", [p.backend for p in points], True),
        ("batch_size", [p.batch_size for p in points], False),
        ("quant", [p.cfg.quant.scheme if p.cfg else "none" for p in points], True),
        ("prune_ratio", [p.cfg.prune.ratio if p.cfg else 0.0 for p in points], False),
    ]
    opts = sorted({f"{p.backend}.{k}" for p in points if p.cfg for k in p.cfg.options()})
    for o in opts:
        b, _, k = o.partition(".")
        cols.append((o, [str(p.cfg.options().get(k, "-")) if p.cfg and p.backend == b else "-" for p in points], True))
    keep = [c for c in cols if c[0] == "backend" or len({str(v) for v in c[1]}) > 1]
    for m in ("latency_ms", "throughput", "quality_loss"):
        keep.append((m, [float(p.metrics.get(m, math.nan)) for p in points], False))
    return keep


def parallel_png(points: list[TrialRecord], path: Path, title: str = "") -> Path:
    plt = _plt()
    pts = [p for p in points if math.isfinite(p.latency_ms)]
    axes = _axis_values(pts)
    colours = _colours(pts)
    fig, ax = plt.subplots(figsize=(max(7.0, 1.6 * len(axes)), 5), dpi=110)
    try:
        norm_cols, ticks = [], []
        for name, vals, cat in axes:
            if cat:
                cats = sorted({str(v) for v in vals})
                pos = {c: (i / (len(cats) - 1) if len(cats) > 1 else 0.5) for i, c in enumerate(cats)}
                norm_cols.append([pos[str(v)] for v in vals])
                ticks.append([(pos[c], c) for c in cats])
            else:
                fv = [float(v) if v is not None else math.nan for v in vals]
                good = [v for v in fv if math.isfinite(v)]
                lo, hi = (min(good), max(good)) if good else (0.0, 1.0)
                log = name in ("latency_ms", "throughput") and lo > 0 and hi / lo > 10
                f = (lambda v: math.log10(v)) if log else (lambda v: v)
                flo, fhi = f(lo), f(hi)
                norm_cols.append([((f(v) - flo) / (fhi - flo) if fhi > flo else 0.5) if math.isfinite(v) else math.nan for v in fv])
                ticks.append([(0.0, f"{lo:.3g}"), (1.0, f"{hi:.3g}")] if fhi > flo else [(0.5, f"{lo:.3g}")])
        xs = list(range(len(axes)))
        order = sorted(range(len(pts)), key=lambda i: (pts[i].on_front, pts[i].feasible))  # front drawn last, on top
        for i in order:
            p = pts[i]
            ys = [col[i] for col in norm_cols]
            if p.on_front:
                ax.plot(xs, ys, color=colours[p.backend], lw=2.4, alpha=0.95, zorder=3)
            elif p.feasible:
                ax.plot(xs, ys, color=colours[p.backend], lw=1.0, alpha=0.45, zorder=2)
            else:
                ax.plot(xs, ys, color=INFEASIBLE, lw=0.8, alpha=0.5, ls="--", zorder=1)
        for x, tk in zip(xs, ticks):
            ax.axvline(x, color="black", lw=0.8)
            for y, text in tk:
                ax.text(x + 0.03, y, text, fontsize=7, va="center", ha="left",
                        bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.7))
        ax.set_xticks(xs)
        ax.set_xticklabels([a[0] for a in axes], rotation=20, ha="right", fontsize=8)
        ax.set_yticks([])
        ax.set_xlim(-0.2, len(axes) - 0.6)
        ax.set_ylim(-0.05, 1.05)
        from matplotlib.lines import Line2D

        handles = [Line2D([0], [0], color=c, lw=2, label=b) for b, c in colours.items()]
        handles += [Line2D([0], [0], color="black", lw=2.4, label="Pareto (thick)"),
                    Line2D([0], [0], color=INFEASIBLE, lw=1, ls="--", label="infeasible")]
        ax.legend(handles=handles, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=min(6, len(handles)))
        ax.set_title(title or "Options -> metrics (one line per measured deployment)")
        for s in ("top", "right", "left", "bottom"):
            ax.spines[s].set_visible(False)
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
    return path


# --------------------------------------------------------------------------- HTML


def _ticks(lo: float, hi: float, log: bool) -> list[float]:
    if log:
        a, b = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
        return [10.0 ** e for e in range(a, b + 1)]
    if hi <= lo:
        return [lo]
    step = 10 ** math.floor(math.log10((hi - lo) / 4))
    for m in (1, 2, 5, 10):
        if (hi - lo) / (step * m) <= 6:
            step *= m
            break
    start = math.ceil(lo / step) * step
    out, v = [], start
    while v <= hi + step * 1e-9:
        out.append(round(v, 12))
        v += step
    return out


class _Scale:
    """Data -> SVG coordinates of the Pareto plot: log axes where the values span decades (zero losses sit on
    the axis floor)."""

    W, H, L, R, T, B = 820, 520, 80, 20, 40, 60

    def __init__(self, lats: list[float], qs: list[float]):
        pos_q = [q for q in qs if q > 0]
        self.xlog, self.ylog = _use_log(lats), _use_log(qs)
        xlo, xhi = (min(lats), max(lats)) if lats else (0.1, 1.0)
        if self.xlog:
            xlo, xhi = xlo / 1.3, xhi * 1.3
        else:
            pad = (xhi - xlo) * 0.08 or xhi * 0.1 or 1.0
            xlo, xhi = max(0.0, xlo - pad), xhi + pad
        if self.ylog:
            ylo, yhi = min(pos_q) / 3, max(pos_q) * 2
        else:
            ylo, yhi = (0.0, max(qs) * 1.1 if qs and max(qs) > 0 else 1.0)
        self.xlo, self.xhi, self.ylo, self.yhi = xlo, xhi, ylo, yhi

    def x(self, v: float) -> float:
        W, L, R = self.W, self.L, self.R
        if self.xlog:
            return L + (math.log10(v) - math.log10(self.xlo)) / (math.log10(self.xhi) - math.log10(self.xlo)) * (W - L - R)
        return L + (v - self.xlo) / ((self.xhi - self.xlo) or 1) * (W - L - R)

    def y(self, v: float) -> float:
        H, T, B = self.H, self.T, self.B
        if self.ylog:
            v = max(v, self.ylo)
            return H - B - (math.log10(v) - math.log10(self.ylo)) / (math.log10(self.yhi) - math.log10(self.ylo)) * (H - T - B)
        return H - B - (v - self.ylo) / ((self.yhi - self.ylo) or 1) * (H - T - B)


def _svg_axes(sc: _Scale, slo_ms: float | None, max_quality_loss: float | None, xlabel: str) -> list[str]:
    """The frame, grid, tick labels, axis titles and the SLO / quality-bound lines."""
    W, H, L, R, T, B = sc.W, sc.H, sc.L, sc.R, sc.T, sc.B
    svg = [f'<rect x="{L}" y="{T}" width="{W - L - R}" height="{H - T - B}" fill="#fafafa" stroke="#999"/>']
    for v in _ticks(sc.xlo, sc.xhi, sc.xlog):
        if sc.xlo <= v <= sc.xhi:
            x = sc.x(v)
            svg.append(f'<line x1="{x:.1f}" y1="{T}" x2="{x:.1f}" y2="{H - B}" stroke="#e3e3e3"/>')
            svg.append(f'<text x="{x:.1f}" y="{H - B + 16}" text-anchor="middle">{v:g}</text>')
    for v in _ticks(sc.ylo, sc.yhi, sc.ylog):
        if sc.ylo <= v <= sc.yhi:
            y = sc.y(v)
            svg.append(f'<line x1="{L}" y1="{y:.1f}" x2="{W - R}" y2="{y:.1f}" stroke="#e3e3e3"/>')
            svg.append(f'<text x="{L - 6}" y="{y + 4:.1f}" text-anchor="end">{v:.3g}</text>')
    svg.append(f'<text x="{(L + W - R) / 2}" y="{H - 18}" text-anchor="middle" font-size="13">{xlabel}'
               f'{" - log scale" if sc.xlog else ""}</text>')
    svg.append(f'<text transform="translate(18,{(T + H - B) / 2}) rotate(-90)" text-anchor="middle" font-size="13">'
               f'quality loss{" - log scale" if sc.ylog else ""}</text>')
    if slo_ms:
        x = sc.x(slo_ms)
        svg.append(f'<line x1="{x:.1f}" y1="{T}" x2="{x:.1f}" y2="{H - B}" stroke="#d62728" stroke-dasharray="6,4" stroke-width="1.5"/>')
        svg.append(f'<text x="{x + 4:.1f}" y="{T + 14}" fill="#d62728">SLO {slo_ms:g} ms</text>')
    if max_quality_loss is not None and sc.ylo <= max_quality_loss <= sc.yhi:
        y = sc.y(max_quality_loss)
        svg.append(f'<line x1="{L}" y1="{y:.1f}" x2="{W - R}" y2="{y:.1f}" stroke="#9467bd" stroke-dasharray="2,3" stroke-width="1.5"/>')
        svg.append(f'<text x="{W - R - 4}" y="{y - 4:.1f}" text-anchor="end" fill="#9467bd">max quality loss {max_quality_loss:g}</text>')
    return svg


def _svg_points(sc: _Scale, pts: list[TrialRecord], front: list[TrialRecord], colours: dict[str, str]) -> list[str]:
    """The front's staircase, then every point (hover: its figures; x: infeasible), the front on top."""
    svg = []
    if front:
        d, prev = [], None
        for p in front:  # staircase: the best quality reachable at each latency
            x, y = sc.x(p.latency_ms), sc.y(p.quality_loss)
            d.append(f"M{x:.1f},{y:.1f}" if prev is None else f"L{x:.1f},{prev[1]:.1f} L{x:.1f},{y:.1f}")
            prev = (x, y)
        svg.append(f'<path d="{" ".join(d)}" fill="none" stroke="black" stroke-width="1.5" opacity="0.7"/>')
    for p in sorted(pts, key=lambda p: p.on_front):
        x, y = sc.x(p.latency_ms), sc.y(p.quality_loss)
        info = {
            "trial": p.number, "deployment": p.label, "backend": p.backend, "batch": p.batch_size,
            "latency_ms": p.latency_ms, "p50_ms": p.metrics.get("latency_p50_ms"), "p99_ms": p.metrics.get("latency_p99_ms"),
            "throughput": p.metrics.get("throughput"), "quality_loss": p.quality_loss, "pareto": p.on_front,
            **{k: p.metrics[k] for k in ("served_p50_ms", "served_p99_ms", "served_rate", "served_achieved_rate",
                                         "sustained_rate") if k in p.metrics},
            "feasible": p.feasible, "violated": ",".join(p.violated), "run_id": p.run_id,
        }
        tip = (f"#{p.number} {p.label}  batch {p.batch_size}\n{p.latency_ms:.4g} ms, loss {p.quality_loss:.3g}"
               f"{'  [Pareto]' if p.on_front else ''}{'' if p.feasible else '  [infeasible: ' + ','.join(p.violated) + ']'}")
        colour = colours[p.backend]
        attrs = (f'class="pt" data-backend="{html.escape(p.backend)}" data-info="{html.escape(json.dumps(info, default=str))}"')
        if p.feasible:
            r = 7 if p.on_front else 5
            stroke = ' stroke="black" stroke-width="2"' if p.on_front else ""
            svg.append(f'<circle {attrs} cx="{x:.1f}" cy="{y:.1f}" r="{r}" fill="{colour}" fill-opacity="0.85"{stroke}>'
                       f'<title>{html.escape(tip)}</title></circle>')
        else:
            svg.append(f'<g {attrs}><title>{html.escape(tip)}</title>'
                       f'<path d="M{x - 4:.1f},{y - 4:.1f} L{x + 4:.1f},{y + 4:.1f} M{x - 4:.1f},{y + 4:.1f} L{x + 4:.1f},{y - 4:.1f}" '
                       f'stroke="{colour}" stroke-width="2" opacity="0.6"/></g>')
        if p.on_front:
            svg.append(f'<text x="{x + 8:.1f}" y="{y - 8:.1f}" font-size="10">#{p.number}</text>')
    return svg


def pareto_html(points: list[TrialRecord], path: Path, slo_ms: float | None = None, max_quality_loss: float | None = None,
                title: str = "") -> Path:
    """The interactive Pareto plot: inline SVG and a few lines of JS, no CDN (opens offline)."""
    pts = _finite(points)
    colours = _colours(pts)
    front = _front(pts)
    sc = _Scale([p.latency_ms for p in pts] + ([slo_ms] if slo_ms else []), [p.quality_loss for p in pts])
    xlabel = "served latency (ms)" if any("served_p99_ms" in p.metrics for p in pts) else "latency per batch (ms)"
    svg = [f'<svg id="plot" xmlns="http://www.w3.org/2000/svg" width="{sc.W}" height="{sc.H}" viewBox="0 0 {sc.W} {sc.H}" '
           'font-family="sans-serif" font-size="11">', *_svg_axes(sc, slo_ms, max_quality_loss, xlabel),
           *_svg_points(sc, pts, front, colours), "</svg>"]
    Path(path).write_text(_html_page(svg, front, colours, title), encoding="utf-8")
    return path


def _html_page(svg: list[str], front: list[TrialRecord], colours: dict[str, str], title: str) -> str:
    legend = "".join(
        f'<span class="lg" data-backend="{html.escape(b)}"><i style="background:{c}"></i>{html.escape(b)}</span>'
        for b, c in colours.items()
    )
    rows = "".join(
        f"<tr><td>{p.number}</td><td>{html.escape(p.label)}</td><td>{p.batch_size}</td>"
        f"<td>{p.metrics.get('latency_p50_ms', math.nan):.4g}</td><td>{p.metrics.get('latency_p99_ms', math.nan):.4g}</td>"
        f"<td>{p.metrics.get('throughput', math.nan):.5g}</td><td>{p.quality_loss:.3g}</td>"
        f"<td><code>{html.escape(p.run_id or '')}</code></td></tr>"
        for p in front
    )
    doc = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title or 'Pareto front')}</title>
<style>
body {{ font-family: sans-serif; margin: 20px; color: #222; }}
#wrap {{ display: flex; gap: 20px; align-items: flex-start; }}
#info {{ min-width: 260px; max-width: 340px; font-size: 12px; background: #f4f4f4; padding: 8px; border-radius: 4px; white-space: pre-wrap; }}
.lg {{ cursor: pointer; margin-right: 14px; user-select: none; }}
.lg i {{ display: inline-block; width: 11px; height: 11px; border-radius: 6px; margin-right: 4px; vertical-align: -1px; }}
.lg.off {{ opacity: 0.35; text-decoration: line-through; }}
.pt {{ cursor: pointer; }}
table {{ border-collapse: collapse; font-size: 12px; margin-top: 14px; }}
td, th {{ border: 1px solid #ccc; padding: 3px 7px; text-align: right; }}
</style></head>
<body>
<h2>{html.escape(title or 'Pareto front')}</h2>
<div>{legend} <span style="color:#666;font-size:12px">(click a backend to hide it; hover a point for details; circles with a black ring are Pareto-optimal, x = infeasible)</span></div>
<div id="wrap">{''.join(svg)}<div id="info">hover a point</div></div>
<h3>Pareto front ({len(front)} deployments)</h3>
<table><tr><th>trial</th><th>deployment</th><th>batch</th><th>p50 ms</th><th>p99 ms</th><th>samples/s</th><th>quality loss</th><th>MLflow run</th></tr>{rows}</table>
<script>
(function () {{
  var info = document.getElementById("info");
  document.querySelectorAll(".pt").forEach(function (el) {{
    el.addEventListener("mouseenter", function () {{
      var d = JSON.parse(el.getAttribute("data-info")), s = "";
      for (var k in d) {{ var v = d[k]; if (typeof v === "number") v = Number(v.toPrecision(5)); s += k + ": " + v + "\\n"; }}
      info.textContent = s;
    }});
  }});
  document.querySelectorAll(".lg").forEach(function (lg) {{
    lg.addEventListener("click", function () {{
      var b = lg.getAttribute("data-backend"), off = lg.classList.toggle("off");
      document.querySelectorAll('.pt[data-backend="' + b + '"]').forEach(function (el) {{ el.style.display = off ? "none" : ""; }});
    }});
  }});
}})();
</script>
</body></html>
"""
    return doc


# --------------------------------------------------------------------------- the study hook


def write_study_plots(points: list[TrialRecord], directory: Path, target=None, title: str = "") -> list[Path]:
    """Write pareto.png, pareto.html and parallel.png into ``directory``; the PNGs only when matplotlib exists."""
    slo = getattr(getattr(target, "constraints", None), "latency_slo_ms", None)
    traffic = getattr(target, "traffic", None)
    if traffic is not None:  # the x axis is the served latency: its SLO is the traffic's
        slo = traffic.slo_ms
        title = f"{title} (served {traffic.percentile} under {traffic.describe()})" if title else title
    mql = getattr(getattr(target, "constraints", None), "max_quality_loss", None)
    directory.mkdir(parents=True, exist_ok=True)
    out = [pareto_html(points, directory / "pareto.html", slo, mql, title)]
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        import sys

        print("warning: matplotlib is not installed: PNG plots skipped (pip install matplotlib)", file=sys.stderr)
        return out
    out.append(pareto_png(points, directory / "pareto.png", slo, mql, title))
    out.append(parallel_png(points, directory / "parallel.png", title))
    return out


def log_study_plots(rec, study, target) -> list[str]:
    """Draw the study's plots and log them on the parent run under ``plots/``; returns the artifact paths."""
    points = study_points(study)
    if not points or not rec.parent_run_id:
        return []
    title = f"{study.study_name}: {len(points)} measured, {sum(p.on_front for p in points)} Pareto-optimal"
    with tempfile.TemporaryDirectory(prefix="planner-plots-") as tmp:
        files = write_study_plots(points, Path(tmp), target, title)
        for f in files:
            rec.client.log_artifact(rec.parent_run_id, str(f), artifact_path="plots")
    return [f"plots/{f.name}" for f in files]
