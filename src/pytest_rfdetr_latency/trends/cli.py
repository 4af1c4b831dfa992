"""The ``rfdetr-latency`` console script: ``rfdetr-latency history DIR --out OUTDIR [--fail-on-change]``.

It reads the history that ``--rfdetr-history DIR`` appends to, prints the persistent shifts of every case and scope
with the commits on either side, writes a self-contained ``OUTDIR/index.html``, and with ``--fail-on-change`` exits
1 when a series ends on a new slowdown (2 is bad input: nothing is written then).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from pytest_rfdetr_latency.trends import shifts as trends
from pytest_rfdetr_latency.trends.changepoints import MAX_PVALUE


def _percent(value: str) -> float:
    try:
        number = float(value.strip().rstrip("%"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a percentage, e.g. 1%") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"{value!r}: a percentage of at least 0 is needed")
    return number / 100


def _probability(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a probability, e.g. 0.001") from None
    if not 0 < number < 1:
        raise argparse.ArgumentTypeError(f"{value!r}: a probability between 0 and 1 is needed")
    return number


def _runs(value: str) -> int:
    if not value.isdigit() or int(value) < 2:
        raise argparse.ArgumentTypeError(f"{value!r}: a whole number of runs, at least 2")
    return int(value)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="rfdetr-latency", description="pytest-rfdetr-latency's tools")
    commands = top.add_subparsers(dest="command", required=True)
    history = commands.add_parser(
        "history", help="chart a run history and find its persistent shifts",
        description="Read the history files that pytest --rfdetr-history=DIR appends to; print every case and "
        "scope's persistent shifts (change points) with the commits on either side; write OUTDIR/index.html.",
    )
    history.add_argument("dir", type=Path, metavar="DIR", help="the folder given to --rfdetr-history")
    history.add_argument("--out", type=Path, metavar="OUTDIR", help="write OUTDIR/index.html (self-contained)")
    history.add_argument("--fail-on-change", action="store_true",
                         help="exit 1 when a series ends on a new slowdown: a shift of at least --min-change among "
                              "its last --recent runs, with no baseline recorded since")
    history.add_argument("--recent", type=_runs, default=trends.RECENT, metavar="N",
                         help=f"how many of a device's last runs a new shift may begin in (default {trends.RECENT})")
    history.add_argument("--device", metavar="NAME",
                         help="only the series of devices whose name contains NAME (case-insensitive), e.g. "
                              "'H200': a runner judges its own GPU model's history")
    history.add_argument("--min-change", type=_percent, default=trends.MIN_CHANGE, metavar="PCT",
                         help=f"the least slowdown --fail-on-change fails on (default {trends.MIN_CHANGE * 100:g}%%); "
                              f"a series' own least is higher where its run-to-run noise is: "
                              f"{trends.NOISE_MULTIPLE:g} times it, and the 16 MiB allocator slack for memory")
    history.add_argument("--max-pvalue", type=_probability, default=MAX_PVALUE, metavar="P",
                         help=f"how sure a shift must be: Welch's t-test between the runs either side (default "
                              f"{MAX_PVALUE:g}; docs/history.md gives what each finds on the H200's noise)")
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from pytest_rfdetr_latency.store.history import HistoryError, series

    skipped: list[str] = []
    try:
        found = series(args.dir, skipped)
    except (HistoryError, OSError) as exc:
        print(f"rfdetr-latency history: {exc}", file=sys.stderr)
        return 2
    for line in skipped:
        print(f"rfdetr-latency history: warning: {line}", file=sys.stderr)
    if args.device:
        found = [s for s in found if args.device.lower() in s.device.lower()]
        if not found:
            print(f"rfdetr-latency history: no series of a device named like {args.device!r} in {args.dir}; "
                  "nothing was written", file=sys.stderr)
            return 2
    if args.out is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("rfdetr-latency history: --out draws charts with matplotlib: pip install "
                  "'pytest-rfdetr-latency[plot]' (nothing was written)", file=sys.stderr)
            return 2
    analysed = trends.analyse_all(found, recent=args.recent, min_change=args.min_change, max_pvalue=args.max_pvalue)
    for trend in analysed:
        series_ = trend.series
        head = f"{series_.name} on {series_.device}: {len(series_.points)} runs"
        if not trend.shifts:
            print(f"{head}, no persistent shift")
            continue
        print(f"{head}, {len(trend.shifts)} persistent shift(s):")
        for shift in trend.shifts:
            mark = "NEW SLOWDOWN " if shift is trend.new_regression else ""
            print(f"  {mark}{shift.describe(series_)}")
    new = [t for t in analysed if t.new_regression is not None]
    print(f"{len(analysed)} series, {sum(bool(t.shifts) for t in analysed)} with persistent shifts, {len(new)} "
          f"ending on a new slowdown of at least {args.min_change:.2%} and {trends.NOISE_MULTIPLE:g} times the "
          f"series' own run-to-run noise (begun in their device's last {args.recent} runs, no baseline recorded "
          "since; self-test runs are not detected on)")
    if args.out is not None:
        from pytest_rfdetr_latency.trends.page import write

        print(f"written: {write(analysed, args.dir, args.out)}")
    return 1 if new and args.fail_on_change else 0


if __name__ == "__main__":
    raise SystemExit(main())
