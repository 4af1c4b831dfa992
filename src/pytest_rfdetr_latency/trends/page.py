"""The history page: one self-contained HTML file (inline SVG charts from matplotlib, inline CSS, no script, nothing
fetched) that opens offline. Per case and scope, newest first: every run's figure and its processes, the baseline
band each check was judged against, the recordings, and the persistent shifts with their levels."""

from __future__ import annotations

import html
import io
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pytest_rfdetr_latency.trends.shifts import Trend

_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#1b2631;max-width:1100px}
h1{font-size:1.4em}h2{font-size:1.1em;margin:1.6em 0 .3em}
table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ccd1d1;padding:.25em .5em;text-align:left}
.new{color:#c0392b;font-weight:bold}.muted{color:#5d6d7e}svg{max-width:100%;height:auto}
"""


def _chart(trend: Trend) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = trend.series
    points = series.points
    x = list(range(1, len(points) + 1))
    fig, ax = plt.subplots(figsize=(10, 3.2))
    for i, p in zip(x, points):
        if p.baseline is not None and p.threshold is not None:
            ax.fill_between([i - 0.5, i + 0.5], [p.baseline] * 2, [p.baseline * (1 + p.threshold)] * 2,
                            color="#aed6f1", alpha=0.6, lw=0, label="baseline .. + threshold")
        if p.processes:
            ax.scatter([i] * len(p.processes), p.processes, s=8, color="#85929e", alpha=0.7, label="processes")
    ax.plot(x, [p.value for p in points], color="#2e4053", lw=0.8)
    styles: tuple[tuple[str, dict[str, Any]], ...] = (
        ("check", {"s": 22, "color": "#2e4053", "label": "check"}),
        ("record", {"s": 40, "marker": "D", "color": "#1e8449", "label": "baseline recorded"}))
    for kind, style in styles:
        chosen = [(i, p.value) for i, p in zip(x, points) if p.kind == kind and not p.injected_pct]
        if chosen:
            ax.scatter([i for i, _ in chosen], [v for _, v in chosen], zorder=3, **style)
    tests = [(i, p.value) for i, p in zip(x, points) if p.injected_pct]
    if tests:  # slowed on purpose: shown, and told apart from the runs that measured the code
        ax.scatter([i for i, _ in tests], [v for _, v in tests], zorder=4, s=36, marker="X", color="#d35400",
                   label="self-test (--rfdetr-inject-slowdown)")
    bounds = [0, *[s.point.index for s in trend.shifts], len(points)]
    levels = [s.point.before for s in trend.shifts] + ([trend.shifts[-1].point.after] if trend.shifts else [])
    for k, level in enumerate(levels):
        ax.hlines(level, bounds[k] + 0.5, bounds[k + 1] + 0.5, color="#c0392b", lw=1.5, label="level between shifts")
    for shift in trend.shifts:
        at = shift.point.index + 0.5
        ax.axvline(at, color="#c0392b", ls="--", lw=1)
        ax.annotate(f"{shift.point.change * 100:+.1f}%", (at, 1), xycoords=("data", "axes fraction"),
                    xytext=(3, -12), textcoords="offset points", color="#c0392b", fontsize=8)
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    ax.legend(unique.values(), unique.keys(), fontsize=7, loc="upper left", ncol=3)
    ax.set_xlabel("run (oldest to newest)")
    ax.set_ylabel(f"{series.statistic} ({series.unit})")
    ax.set_xlim(0.4, len(points) + 0.6)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out = io.StringIO()
    fig.savefig(out, format="svg", metadata={"Date": None})
    plt.close(fig)
    text = out.getvalue()
    return text[text.index("<svg"):]  # the XML prologue and doctype do not belong inside HTML


def page(trends: Sequence[Trend], source: Path, now: datetime | None = None) -> str:
    stamp = (now or datetime.now(timezone.utc)).isoformat(timespec="seconds")
    opened = [t for t in trends if t.open_slowdown is not None]
    shifts = sorted(((t, s) for t in trends for s in t.shifts), key=lambda ts: ts[1].after.time, reverse=True)
    parts: list[str] = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<title>RF-DETR latency history</title>", f"<style>{_CSS}</style></head><body>",
        "<h1>RF-DETR latency history</h1>",
        f"<p class='muted'>{len(trends)} series from {html.escape(str(source))}; made {stamp} by "
        "rfdetr-latency history.</p>",
    ]
    if opened:
        parts.append(f"<p class='new'>{len(opened)} series sit on an open slowdown (not accepted): "
                     + ", ".join(f"{html.escape(t.series.name)} ({t.standing * 100:+.1f}%, open {t.age} runs)"
                                 for t in opened) + "</p>")
    parts.append("<h2>Persistent shifts, newest first</h2>")
    if shifts:
        parts.append("<table><tr><th>series</th><th>device</th><th>at run</th><th>change</th><th>p</th>"
                     "<th>state</th><th>commits</th><th>environment changed</th></tr>")
        for trend, shift in shifts:
            is_open = shift is trend.open_slowdown
            cls = " class='new'" if is_open else ""
            state = (f"open, {trend.age} runs" if is_open else
                     "accepted" if shift.accepted_by is not None else "-")
            parts.append(
                f"<tr{cls}><td>{html.escape(trend.series.name)}</td><td>{html.escape(trend.series.device)}</td>"
                f"<td>{shift.point.index + 1} ({html.escape(shift.after.time)})"
                f"{' <b>self-test</b>' if shift.after.injected_pct else ''}</td>"
                f"<td>{shift.point.change * 100:+.2f}%</td><td>{shift.point.pvalue:.2g}</td><td>{state}</td>"
                f"<td>{html.escape(_commit(shift.before.commit))} &rarr; {html.escape(_commit(shift.after.commit))}"
                f"</td><td>{html.escape('; '.join(shift.changed) or '-')}</td></tr>")
        parts.append("</table>")
    else:
        parts.append("<p>None found.</p>")
    for trend in trends:
        series = trend.series
        tests = sum(1 for p in series.points if p.injected_pct)
        parts.append(f"<h2>{html.escape(series.name)} <span class='muted'>on {html.escape(series.device)}, "
                     f"{len(series.points)} runs" + (f" ({tests} self-test, not detected on)" if tests else "")
                     + f", newest {html.escape(trend.newest)}, workload {series.workload}</span></h2>")
        parts.append(_chart(trend))
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _commit(commit: str | None) -> str:
    return commit[:10] if commit else "no commit"


def write(trends: Sequence[Trend], source: Path, out_dir: Path) -> Path:
    from pytest_rfdetr_latency.store.baselines import atomic_write

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "index.html"
    atomic_write(path, page(trends, source))
    return path
