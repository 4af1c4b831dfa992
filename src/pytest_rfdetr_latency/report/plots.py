"""PNG pictures of a run (matplotlib, Agg): per case, each scope's blocks now against the baseline's, with the
threshold; and the model × backend throughput chart of the notebook's table. Made from result dictionaries."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pytest_rfdetr_latency.report.render import fps_table

_COLOURS = {"regression": "#c0392b", "inconclusive": "#d68910", "improvement": "#1e8449", "pass": "#2e4053"}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def case_figure(result: Mapping[str, Any], path: Path) -> Path:
    """One panel per scope: every baseline process's figure, this check's processes' figures (this process's blocks
    behind them, faint), the baseline's median and the effective threshold, with a legend."""
    plt = _pyplot()
    scopes = list(result.get("scopes", {}))
    fig, axes = plt.subplots(1, max(1, len(scopes)), figsize=(3.4 * max(1, len(scopes)), 3.8), squeeze=False)
    baseline = (result.get("baseline") or result.get("baseline_entry") or {}).get("scopes", {})
    verdicts = result.get("verdicts", {})
    for ax, scope in zip(axes[0], scopes):
        now = result["scopes"][scope]
        before = [p["value_ms"] for p in (baseline.get(scope) or {}).get("processes", [])]
        verdict = verdicts.get(scope)
        checked = verdict["processes"] if verdict is not None else [now["value_ms"]]
        ax.scatter([2.15] * len(now["blocks_ms"]), now["blocks_ms"], s=6, alpha=0.25, color="#5d6d7e",
                   label="this process's blocks")
        if before:
            ax.scatter([1] * len(before), before, s=28, color="#2e4053", zorder=3, label="baseline processes")
        colour = _COLOURS.get(verdict["kind"], "black") if verdict is not None else "black"
        ax.scatter([2] * len(checked), checked, s=28, color=colour, zorder=3, label="processes now")
        if verdict is not None:
            ax.axhline(verdict["baseline"], color="#7f8c8d", linestyle="--", linewidth=1, label="baseline median")
            ax.axhline(verdict["baseline"] * (1 + verdict["threshold"]), color="#c0392b", linestyle=":",
                       linewidth=1.2, label=f"threshold +{verdict['threshold'] * 100:.3g}%")
            title = f"{scope} ({now['statistic']}): {verdict['delta'] * 100:+.1f}%\n{verdict['kind']}"
        else:
            title = f"{scope} ({now['statistic']})\n{result.get('outcome')}"
        ax.set_xticks([1, 2], ["baseline", "now"])
        ax.set_xlim(0.5, 2.6)
        ax.set_title(title, fontsize=9, color=colour)
        ax.set_ylabel("ms per call (one point per process)", fontsize=7)
        ax.tick_params(labelsize=8)
        ax.legend(fontsize=6, loc="best")
    fig.suptitle(f"{result['id']} on {result.get('device')}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def throughput_figure(results: Sequence[Mapping[str, Any]], path: Path) -> Path | None:
    """Grouped bars: end-to-end images per second, one group per model, one bar per backend."""
    models, backends, fps = fps_table(results)
    if not models:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(4.5, 1.8 + 0.6 * len(models) * max(1, len(backends))), 4.2))
    width = 0.8 / max(1, len(backends))
    for j, backend in enumerate(backends):
        xs = [i + j * width for i in range(len(models))]
        values = [fps[m].get(backend, 0.0) for m in models]
        bars = ax.bar(xs, values, width=width, label=backend)
        for bar, value in zip(bars, values):
            if value:
                label = f"{value:.0f}" if value >= 10 else f"{value:.1f}"
                ax.annotate(label, (bar.get_x() + bar.get_width() / 2, value), ha="center", va="bottom", fontsize=7)
    ax.set_xticks([i + width * (len(backends) - 1) / 2 for i in range(len(models))], models, fontsize=8)
    ax.set_ylabel("images/s, end to end (median)")
    device = ", ".join(sorted({str(r.get("device")) for r in results}))
    ax.set_title(f"RF-DETR throughput on {device}", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_all(results: Sequence[Mapping[str, Any]], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = [case_figure(r, folder / f"{r['id']}.png") for r in results if r.get("scopes")]
    chart = throughput_figure(results, folder / "throughput.png")
    return written + ([chart] if chart else [])
