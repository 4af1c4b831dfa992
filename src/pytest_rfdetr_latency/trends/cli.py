"""The ``rfdetr-latency`` console script.

``rfdetr-latency history DIR [--out OUTDIR] [--markdown FILE] [--fail-on-change]`` reads the history that
``--rfdetr-history DIR`` appends to, prints the persistent shifts of every case and scope with the commits on either
side, writes a self-contained ``OUTDIR/index.html`` and a Markdown list of the open slowdowns with their age, and
with ``--fail-on-change`` exits 1 while a slowdown is open. ``rfdetr-latency accept DIR --case PATTERN --reason TEXT``
closes open slowdowns by hand: it appends an accept line per series. 2 is bad input: nothing is written then.
"""

from __future__ import annotations

import argparse
import fnmatch
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pytest_rfdetr_latency.store.history import Series

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
    history.add_argument("--markdown", type=Path, metavar="FILE",
                         help="write the open slowdowns, with their age, as Markdown (a job summary, a comment)")
    history.add_argument("--fail-on-change", action="store_true",
                         help="exit 1 while a series sits on an open slowdown: a shift of at least --min-change that "
                              "still stands and that no recording or accept line has accepted, however old")
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
    history.add_argument("--false-discovery", type=_probability, default=trends.FALSE_DISCOVERY, metavar="Q",
                         help=f"the false-discovery rate of open slowdowns across the series (Benjamini-Hochberg; "
                              f"default {trends.FALSE_DISCOVERY:g})")
    accept = commands.add_parser(
        "accept", help="accept open slowdowns by hand",
        description="Append an accept line to each series whose case matches --case (and scope, device) and that "
        "sits on an open slowdown: that slowdown stops failing --fail-on-change. Commit the history file after.",
    )
    accept.add_argument("dir", type=Path, metavar="DIR", help="the history folder (a checkout of the history branch)")
    accept.add_argument("--case", required=True, metavar="PATTERN", help="a case id or glob, e.g. 'RFDETRMedium-*'")
    accept.add_argument("--scope", metavar="SCOPE", help="only this scope (default: every scope of the case)")
    accept.add_argument("--device", metavar="NAME", help="only devices whose name contains NAME")
    accept.add_argument("--reason", required=True, help="why the slowdown is accepted; kept in the line")
    accept.add_argument("--commit", help="the commit that made the slowdown, kept in the line")
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from pytest_rfdetr_latency.store.history import HistoryError, series

    skipped: list[str] = []
    try:
        found = series(args.dir, skipped)
    except (HistoryError, OSError) as exc:
        print(f"rfdetr-latency {args.command}: {exc}", file=sys.stderr)
        return 2
    for line in skipped:
        print(f"rfdetr-latency {args.command}: warning: {line}", file=sys.stderr)
    if args.device:
        found = [s for s in found if args.device.lower() in s.device.lower()]
        if not found:
            print(f"rfdetr-latency {args.command}: no series of a device named like {args.device!r} in {args.dir}; "
                  "nothing was written", file=sys.stderr)
            return 2
    return _accept(args, found) if args.command == "accept" else _history(args, found)


def _history(args: argparse.Namespace, found: list[Series]) -> int:
    if args.out is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("rfdetr-latency history: --out draws charts with matplotlib: pip install "
                  "'pytest-rfdetr-latency[plot]' (nothing was written)", file=sys.stderr)
            return 2
    analysed = trends.analyse_all(found, min_change=args.min_change, max_pvalue=args.max_pvalue,
                                  false_discovery=args.false_discovery)
    for trend in analysed:
        series_ = trend.series
        head = f"{series_.name} on {series_.device}: {len(series_.points)} runs"
        if not trend.shifts:
            print(f"{head}, no persistent shift")
            continue
        print(f"{head}, {len(trend.shifts)} persistent shift(s):")
        for shift in trend.shifts:
            mark = f"OPEN SLOWDOWN ({trend.age} runs) " if shift is trend.open_slowdown else ""
            print(f"  {mark}{shift.describe(series_)}")
    opened = [t for t in analysed if t.open_slowdown is not None]
    print(f"{len(analysed)} series, {sum(bool(t.shifts) for t in analysed)} with persistent shifts, {len(opened)} "
          f"on an open slowdown of at least {args.min_change:.2%} and {trends.NOISE_MULTIPLE:g} times the series' "
          f"own run-to-run noise (not accepted by a recording or an accept line, at a false-discovery rate of "
          f"{args.false_discovery:g} across the series; self-test runs are not detected on)")
    if args.markdown is not None:
        from pytest_rfdetr_latency.store.baselines import atomic_write

        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(args.markdown, trends.markdown(analysed))
        print(f"written: {args.markdown}")
    if args.out is not None:
        from pytest_rfdetr_latency.trends.page import write

        print(f"written: {write(analysed, args.dir, args.out)}")
    return 1 if opened and args.fail_on_change else 0


def _accept(args: argparse.Namespace, found: list[Series]) -> int:
    from pytest_rfdetr_latency.store.history import accept_lines, append

    chosen = [s for s in found if fnmatch.fnmatchcase(s.case, args.case) and args.scope in (None, s.scope)]
    # Every slowdown the series sits on, whether or not the false-discovery control over all series (which depends
    # on how many a run analyses together) lets it fail a run now: accepting is the user's decision.
    opened = [(t.series, t.open_slowdown.after.run) for t in map(trends.analyse, chosen) if t.open_slowdown]
    if not opened:
        print(f"rfdetr-latency accept: no series of case {args.case!r}"
              f"{f' scope {args.scope}' if args.scope else ''} sits on an open slowdown in {args.dir} "
              f"({len(chosen)} matched); nothing was written", file=sys.stderr)
        return 2
    for stem in sorted({s.file for s, _ in opened}):
        mine = [(s, began) for s, began in opened if s.file == stem]
        path = append(args.dir, stem, accept_lines(mine, args.reason, args.commit))
        print(f"accepted in {path}: " + ", ".join(s.name for s, _ in mine))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
