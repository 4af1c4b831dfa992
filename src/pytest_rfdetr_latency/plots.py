"""PNG pictures of a run (matplotlib, Agg): per case, each scope's blocks now against the baseline's, with the
threshold; and the model × backend throughput chart of the notebook's table. Made from result dictionaries."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pytest_rfdetr_latency.report import fps_table

_COLOURS = {"regression": "#c0392b", "inconclusive": "#d68910", "improvement": "#1e8449", "pass": "#2e4053"}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def case_figure(result: Mapping[str, Any], path: Path) -> Path:
    """One panel per scope: baseline blocks, blocks now, the baseline's figure and the failing threshold."""
    plt = _pyplot()
    scopes = list(result.get("scopes", {}))
    fig, axes = plt.subplots(1, max(1, len(scopes)), figsize=(3.2 * max(1, len(scopes)), 3.6), squeeze=False)
    baseline = (result.get("baseline") or {}).get("scopes", {})
    verdicts = result.get("verdicts", {})
    for ax, scope in zip(axes[0], scopes):
        now = result["scopes"][scope]
        before = baseline.get(scope)
        series = [before["blocks_ms"]] if before else []
        labels = ["baseline"] if before else []
        series.append(now["blocks_ms"])
        labels.append("now")
        ax.boxplot(series, tick_labels=labels, widths=0.5, showfliers=True)
        for i, values in enumerate(series, start=1):
            ax.scatter([i] * len(values), values, s=8, alpha=0.5, color="#5d6d7e", zorder=3)
        verdict = verdicts.get(scope)
        if verdict is not None:
            ax.axhline(verdict["baseline"], color="#7f8c8d", linestyle="--", linewidth=1, label="baseline")
            ax.axhline(verdict["baseline"] * (1 + verdict["threshold"]), color="#c0392b", linestyle=":",
                       linewidth=1.2, label=f"+{verdict['threshold'] * 100:.3g}%")
            colour = _COLOURS.get(verdict["kind"], "black")
            ax.hlines(verdict["current"], len(series) - 0.3, len(series) + 0.3, color=colour, linewidth=2.5,
                      zorder=4)  # the figure the verdict compares: the statistic over all samples
            title = f"{scope} ({now['statistic']}): {verdict['delta'] * 100:+.1f}%\n{verdict['kind']}"
        else:
            title, colour = f"{scope} ({now['statistic']})\n{result.get('outcome')}", "black"
        ax.set_title(title, fontsize=9, color=colour)
        ax.set_ylabel("ms per call: blocks; thick bar: the compared figure", fontsize=7)
        ax.tick_params(labelsize=8)
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
