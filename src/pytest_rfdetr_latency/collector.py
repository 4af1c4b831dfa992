"""From case results to files and summaries, on the process that reports (the xdist controller, or the only one).

It gathers every case's result as pytest reports it; at the end of a recording it measures the recorded cases again
in fresh processes and saves each case with all its processes; then it writes the JSON report, the pytest-benchmark
JSON, the plots and the Markdown summary, and prints the terminal section. In a fresh process of a recording or a
confirmation it only hands the results back to the parent.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from pytest_rfdetr_latency import sigterm
from pytest_rfdetr_latency.measure import quiet
from pytest_rfdetr_latency.measure.settings import Settings
from pytest_rfdetr_latency.report import render as report
from pytest_rfdetr_latency.report.duel import left_out_lines, said_of
from pytest_rfdetr_latency.stash import (
    HEAD_TO_HEAD_KEY,
    LAUNCH_KEY,
    PROPERTY,
    SESSION_KEY,
    SIGTERM_KEY,
    WORKER_KEY,
    cache_dir,
    is_worker,
    progress,
    settings,
)


class ResultCollector:
    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.results: list[dict[str, Any]] = []
        self.notes: list[str] = []
        self.errors: list[str] = []
        self.annotations: list[str] = []  # GitHub workflow commands, each at the start of its own line
        self.stopped = False  # the session was interrupted (Ctrl-C, SIGTERM): half a run

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        for name, value in report.user_properties:
            if name == PROPERTY:
                self.results.append(json.loads(str(value)))
                self._write_child_report()  # case by case: a stopped or killed process keeps what it finished

    def _write_child_report(self) -> None:
        run = settings(self.config)
        if run.child_report is not None and not is_worker(self.config):
            from pytest_rfdetr_latency.measure.processes import write_child_report

            write_child_report(run.child_report, self.results)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        run = settings(self.config)
        if is_worker(self.config):
            return
        if run.child_report is not None:
            self._write_child_report()
            return
        versus = self.config.stash.get(HEAD_TO_HEAD_KEY, None)
        if versus is not None and versus.stopped:  # stopped while measuring: what it finished was judged, then it ends
            session.exitstatus = exitstatus = pytest.ExitCode.INTERRUPTED
        self.stopped = exitstatus == pytest.ExitCode.INTERRUPTED  # Ctrl-C, or SIGTERM (plugin.pytest_configure)
        if run.save_baseline and not self.stopped:
            try:
                self._record_processes(run)
            except KeyboardInterrupt:  # stopped while the fresh processes recorded; they were stopped with it
                self.stopped = True
        with sigterm.held(self.notes, SIGTERM_KEY in self.config.stash):  # files written whole, a SIGTERM waits
            if self.stopped and run.active:  # half a run: nothing recorded, no history; the report says so
                self.notes.append(f"interrupted after {len(self.results)} case(s): no baseline saved and no history "
                                  "added (their files are as they were); the report holds the cases measured so far")
                self._not_saved(None, "the run was interrupted")
            elif run.save_baseline:
                self._save(run)
            elif run.enabled:
                self._say_what_was_compared(run)
                if run.against is not None:
                    self._say_who_met()
            self._write_files(run)
            if not self.stopped:
                self._append_history(run)
        if self.errors and session.exitstatus == 0:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    # Recording ----------------------------------------------------------------------------------------------

    def _process_count(self, run: Settings) -> int:
        if run.save_processes is not None:
            return run.save_processes
        return 3 if any(r.get("device_kind") == "cuda" for r in self.results) else 1

    def _record_processes(self, run: Settings) -> None:
        """Measure the recorded cases again in fresh processes, cases in rotated order, until each has ``N``; with
        --rfdetr-profile one more profiles them (its tables kept, not its figures: Settings.profiles_here)."""
        from pytest_rfdetr_latency.measure.processes import child_settings, run_child
        from pytest_rfdetr_latency.store import baselines

        saved = [r for r in self.results if r.get("outcome") == "saved" and r.get("node")]
        count = self._process_count(run)
        launch = self.config.stash.get(LAUNCH_KEY, None)
        if not saved or launch is None:
            return
        cache = cache_dir(self.config)
        sizes = {r["id"]: {s: v["block_size"] for s, v in r["scopes"].items()} for r in saved}
        by_id = {r["id"]: r for r in saved}
        session = self.config.stash.get(SESSION_KEY, None)
        placed = session.placement()[0] if session is not None else None  # every process where this one ran
        for index in [*range(1, count), *([count] if run.profile else [])]:
            profiles, what = index == count, "profiles" if index == count else f"process {index + 1} of {count}"
            progress(self.config, f"recording {what}, a fresh pytest process measuring {len(saved)} case(s)")
            child = child_settings(run, process_index=index, cache_dir=cache, block_sizes=sizes, placement=placed,
                                   profile=profiles)
            outcome = run_child(launch, [r["node"] for r in saved], child, timeout=3600)
            for other in outcome.results:
                if other.get("id") in by_id and profiles:
                    baselines.take_profiles(by_id[other["id"]], other)
                elif other.get("id") in by_id and other.get("scopes"):
                    by_id[other["id"]].setdefault("processes", []).append(other)
            if outcome.error:  # a recording stands without its profiles (a check then says it holds none)
                (self.notes if profiles else self.errors).append(f"recording {what}: {outcome.error}")
        short = [r["id"] for r in saved if 1 + len(r.get("processes", [])) < count]
        if short:
            self.notes.append(f"{len(short)} case(s) recorded in fewer than {count} processes: {', '.join(short)}")

    def _save(self, run: Settings) -> None:
        from pytest_rfdetr_latency.store import baselines, history
        from pytest_rfdetr_latency.store.baselines import slugify

        latency_session = self.config.stash.get(SESSION_KEY, None)
        commit = latency_session.commit if latency_session else None
        by_device: dict[str, dict[str, Any]] = {}
        for result in self.results:
            if result.get("outcome") == "saved" and result.get("scopes"):
                entry = baselines.entry_from_processes([result, *result.get("processes", [])],
                                                       commit or result.get("git_commit"))
                result["baseline_entry"] = entry
                by_device.setdefault(result["device"], {})[result["id"]] = entry
        for device, entries in by_device.items():
            if run.history_dir is not None:  # before what it can catch: that depends on the spread it learns
                self.notes += history.learn_sessions(run.history_dir, device, entries)
            self._state_what_it_can_catch(run, entries, latency_session.confirm if latency_session else 0)
            try:
                path = baselines.path_for(run.baseline_dir, slugify(device))
                saved = baselines.save(path, device, entries, replace_corrupt=run.replace_corrupt)
            except baselines.BaselineError as exc:
                self.errors.append(f"baseline not saved: {exc}")
                self._not_saved(device, str(exc))
                continue
            processes = sorted({e["processes"] for e in entries.values()})
            note = (f"baseline: {len(saved.written)} case(s) recorded in {saved.path} ({saved.kept} other(s) kept; "
                    f"{'/'.join(map(str, processes))} process(es) each)")
            if saved.backup is not None:
                note += f"; the unreadable old file was kept as {saved.backup}"
            self.notes.append(note)

    def _not_saved(self, device: str | None, why: str) -> None:
        """Nothing recorded for ``device`` (None: any): the report and history must not say otherwise."""
        for result in self.results:
            if device in (None, result.get("device")) and result.get("outcome") == "saved":
                result.pop("baseline_entry", None)
                result["outcome"] = "not-saved"
                result["message"] = f"measured, not saved: {why}"

    def _state_what_it_can_catch(self, run: Settings, entries: dict[str, Any], confirm: int) -> None:
        """Per recorded case and scope, the smallest regression a check of ``1 + confirm`` processes could catch
        (gating.detectable): stored in each entry's scope and listed in the summary."""
        from pytest_rfdetr_latency.verdict import gating
        from pytest_rfdetr_latency.verdict.scopes import DEFAULT_THRESHOLDS

        def asked(scope: str) -> float:
            return run.tolerance.for_scope(scope, DEFAULT_THRESHOLDS[scope])

        def by_name(scope: str) -> float | None:
            return asked(scope) if run.tolerance.given_for(scope) else None

        from pytest_rfdetr_latency.measure.cases import works_on_cpu

        cpu_work = {r["id"]: works_on_cpu(r["backend"], r.get("device_kind") == "cuda") for r in self.results}
        found = gating.detectable(entries, asked, 1 + confirm, lambda case_id: cpu_work.get(case_id, False))
        for case_id, scopes in found.items():
            for scope, value in scopes.items():
                entries[case_id]["scopes"][scope]["detectable"] = value
        self.notes += gating.detectable_lines(found, by_name)

    def _say_what_was_compared(self, run: Settings) -> None:
        """A check that compared nothing, or whose every comparison was unresolved, must not read as a pass: it says
        so, and fails with --rfdetr-strict. The comparisons this runner could not resolve are listed."""
        unresolved = report.unresolved_lines(self.results)
        self.notes += left_out_lines(self.results) + unresolved
        compared = [r for r in self.results if r.get("verdicts")]
        gated = [v for r in compared for v in r["verdicts"].values() if not report.is_unresolved(v)]
        if gated:
            return
        why = ("no latency case ran" if not self.results else
               f"{len(self.results)} case(s) ran and none had a baseline to compare with on this device, or could be "
               "measured here (see 'not measured here' and 'not compared' above)")
        text = f"nothing was compared against a baseline: {why}"
        if compared:
            text = (f"nothing gated: every one of the {len(unresolved)} comparison(s) was unresolved on this runner "
                    "(listed as not gating)")
        if run.strict:
            self.errors.append(f"{text} (--rfdetr-strict makes this a failure)")
        else:
            self.notes.append(f"WARNING: {text}; a gate that compares nothing passes nothing (--rfdetr-strict fails)")

    def _say_who_met(self) -> None:
        """A head-to-head run's lines: which two environments, how many processes each, in what order (report.duel)."""
        duel = next((r["details"]["head_to_head"] for r in self.results if r.get("details", {}).get("head_to_head")),
                    None)
        if duel is not None:
            notes, errors = said_of(duel)
            self.notes += notes
            self.errors += [f"head to head: {error}" for error in errors]

    # Files and summaries ------------------------------------------------------------------------------------

    def _write_files(self, run: Settings) -> None:
        device = self._device()
        fingerprint = self.results[0]["fingerprint"] if self.results else None
        if run.report is not None and (self.results or run.active):
            from pydantic import ValidationError

            from pytest_rfdetr_latency.store.schema import Report

            wrote = not (self.stopped and run.save_baseline)  # a stopped recording wrote no baseline file
            files = sorted({r["baseline_file"] for r in self.results}) if wrote else []
            document = report.json_report(self.results, device, fingerprint, sys.argv, ", ".join(files) or None,
                                          self._timings(), self.stopped)
            try:
                Report.model_validate(document)
            except ValidationError as exc:  # a bug of this plugin: say so rather than write what readers refuse
                self.errors.append(f"JSON report not written: it does not fit report.schema.json ({exc})")
            else:
                self._write("JSON report", run.report, json.dumps(document, indent=2, sort_keys=True) + "\n")
        if run.benchmark_json is not None and self.results:
            from pytest_rfdetr_latency.report.exports import benchmark_json

            commit = next((r.get("baseline_entry", {}).get("git_commit") for r in self.results), None)
            self._write("pytest-benchmark JSON", run.benchmark_json,
                        json.dumps(benchmark_json(self.results, fingerprint, commit), indent=2) + "\n")
        if run.plot_dir is not None and self.results:
            try:
                from pytest_rfdetr_latency.report.plots import write_all

                written = write_all(self.results, run.plot_dir)
                self.notes.append(f"{len(written)} plot(s) written to {run.plot_dir}")
            except ImportError:
                self.errors.append("--rfdetr-plot needs matplotlib: pip install 'pytest-rfdetr-latency[plot]'")
            except OSError as exc:
                self.errors.append(f"plots not written to {run.plot_dir}: {exc}; give --rfdetr-plot a folder this "
                                   "run can write")
        targets = [p for p in (run.markdown, os.environ.get("GITHUB_STEP_SUMMARY")) if p]
        if self.results:
            text = report.markdown(self.results, device, fingerprint, self.stopped)
            for target in targets:
                try:
                    with open(target, "a", encoding="utf-8") as handle:
                        handle.write(text)
                except OSError as exc:
                    self.errors.append(f"Markdown summary not appended to {target}: {exc}; give a file path this run "
                                       "can write")
                    continue
                self.notes.append(f"Markdown summary appended to {target}")
            if os.environ.get("GITHUB_ACTIONS") == "true":
                self.annotations = report.github_annotations(self.results)

    def _write(self, what: str, path: Path, text: str) -> None:
        """One output file, atomically; a file system that refuses is an error of the run, not a lost summary."""
        from pytest_rfdetr_latency.store.baselines import atomic_write

        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, text)
        except OSError as exc:
            self.errors.append(f"{what} not written to {path}: {exc}; give a file path this run can write")
            return
        self.notes.append(f"{what} written to {path}")

    def _append_history(self, run: Settings) -> None:
        """Add this run's figures to the history (--rfdetr-history): checks and recordings, not a head-to-head."""
        if run.history_dir is None or not run.active:
            return
        if run.against is not None:
            self.notes.append("history: a head-to-head run is not added (it compares two environments, not this one "
                              "against its baseline)")
            return
        from pytest_rfdetr_latency.store import history
        from pytest_rfdetr_latency.store.baselines import slugify

        lines = history.rows(self.results, "record" if run.save_baseline else "check")
        if not lines:
            self.notes.append(f"history: nothing to add to {run.history_dir} (no case was judged or recorded)")
            return
        by_device: dict[str, list[dict[str, Any]]] = {}
        for line in lines:
            by_device.setdefault(slugify(line["device"]), []).append(line)
        for slug, device_lines in by_device.items():
            try:
                path = history.append(run.history_dir, slug, device_lines)
            except OSError as exc:
                self.errors.append(f"history not written to {run.history_dir}: {exc}; make the folder and its files "
                                   "writable, or give --rfdetr-history another folder")
                continue
            self.notes.append(f"history: {len(device_lines)} figure(s) appended to {path}")

    def _timings(self) -> Mapping[str, float]:
        latency_session = self.config.stash.get(SESSION_KEY, None)
        return dict(latency_session.timings) if latency_session else {}

    def _device(self) -> str | None:
        names = sorted({r["device"] for r in self.results})
        if names:
            return ", ".join(names)
        latency_session = self.config.stash.get(SESSION_KEY, None)
        return latency_session.device.name if latency_session else None

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not (self.results or self.notes or self.errors) or settings(self.config).child_report is not None:
            return
        device = self._device()
        terminalreporter.write_sep("=", f"RF-DETR latency ({device or 'no device'})")
        bound = self.config.stash.get(WORKER_KEY, {})
        latency_session = self.config.stash.get(SESSION_KEY, None)
        tallies = [r.get("details", {}).get("kept_quiet") for r in self.results]
        kept = quiet.summary_line(quiet.summed([*tallies, latency_session.kept_quiet if latency_session else None]))
        for line in [*report.summary_lines(self.results, device),
                     *(["xdist workers: " + "; ".join(bound["plan"])] if bound.get("plan") else []),
                     *(f"xdist: {note}" for note in bound.get("notes", [])), *self.annotations,
                     *([kept] if kept else []), *self.notes]:
            terminalreporter.write_line(line)
        for error in self.errors:
            terminalreporter.write_line(f"ERROR: {error}", red=True, bold=True)
