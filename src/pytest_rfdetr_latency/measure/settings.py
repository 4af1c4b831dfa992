"""Run settings: one frozen dataclass, resolved from the command line, then the environment, then the ini file.

Every option is described once, in :data:`OPTIONS`; ``plugin.py`` registers them with pytest from this table and
hands the raw values back to :func:`resolve`. An option ``--rfdetr-NAME`` is the environment variable
``RFDETR_LATENCY_NAME`` and the ini key ``rfdetr_latency_name`` (dashes as underscores); an unknown
``RFDETR_LATENCY_*`` variable is refused. A bad value raises :class:`SettingsError` naming where it came from
(the flag, the environment variable or the ini key) and the accepted forms. Nothing here imports torch.
"""

from __future__ import annotations

# Over 350 lines on purpose: every option's flag, variable, ini key, parser and help in one table (OPTIONS), and their
# one resolution; split, the table and the checks that read it would import each other.
import argparse
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_rfdetr_latency.measure.cases import ALL_BACKENDS, ALL_MODELS, DEFAULT_BACKENDS, DEFAULT_MODELS
from pytest_rfdetr_latency.measure.placement import Placement
from pytest_rfdetr_latency.measure.sampling import PRESETS, SamplingPlan, parse_sampling
from pytest_rfdetr_latency.verdict import budgets as budget_specs
from pytest_rfdetr_latency.verdict.scopes import ALL_SCOPES, DEFAULT_THRESHOLDS, HEAD_TO_HEAD_THRESHOLDS


class SettingsError(ValueError):
    """A setting has a value that cannot be used; the message names its source and the accepted forms."""


@dataclass(frozen=True)
class Tolerance:
    """Relative regression thresholds, per scope; scopes not named keep the verdict's data-derived defaults."""

    per_scope: Mapping[str, float] = field(default_factory=dict)
    everywhere: float | None = None

    def given_for(self, scope: str) -> bool:
        """Whether a tolerance was asked for ``scope`` (by name or for every scope)."""
        return scope in self.per_scope or self.everywhere is not None

    def for_scope(self, scope: str, default: float) -> float:
        if scope in self.per_scope:
            return self.per_scope[scope]
        return self.everywhere if self.everywhere is not None else default


@dataclass(frozen=True)
class Weights:
    """``random`` (seeded, offline) unless a local checkpoint is named, for one model or for all."""

    checkpoints: Mapping[str, Path] = field(default_factory=dict)
    everywhere: Path | None = None

    def for_model(self, model: str) -> Path | None:
        return self.checkpoints.get(model, self.everywhere)


@dataclass(frozen=True)
class Settings:
    enabled: bool = False
    save_baseline: bool = False
    models: tuple[str, ...] = DEFAULT_MODELS
    backends: tuple[str, ...] = DEFAULT_BACKENDS
    device: str = "auto"
    baseline_dir: Path = Path("latency_baselines")
    weights: Weights = field(default_factory=Weights)
    tolerance: Tolerance = field(default_factory=Tolerance)
    scopes: tuple[str, ...] = ALL_SCOPES
    report: Path | None = None
    markdown: Path | None = None
    strict: bool = False
    image_size: tuple[int, int] = (640, 640)
    image_count: int = 4
    detections: int = 50
    seed: int = 0
    sampling: SamplingPlan = field(default_factory=lambda: PRESETS["standard"])
    inject: float | None = None
    replace_corrupt: bool = False
    fail_on_drift: bool = False
    cache_dir: Path | None = None
    batch_sizes: tuple[int, ...] = (1,)
    resolutions: tuple[int | None, ...] = (None,)
    budgets: tuple[budget_specs.Budget, ...] = ()
    no_parity: bool = False
    memory_tolerance: float = 0.05
    memory_tolerance_given: bool = False  # --rfdetr-memory-tolerance (or its ini key or variable) was given
    onnx_models: Mapping[str, Path] = field(default_factory=dict)
    no_pin: bool = False
    profile: bool = False  # profile each scope in a fresh process of its own (profiles_here, measure/profiling.py)
    no_profile: bool = False  # profile nothing, not even a regression (a gate with a tight time limit)
    benchmark_json: Path | None = None
    plot_dir: Path | None = None
    confirm: int | None = None  # None: 2 on a GPU, 0 on the CPU (LatencySession resolves it)
    save_processes: int | None = None  # None: 3 on a GPU, 1 on the CPU (the result collector resolves it)
    child_report: Path | None = None
    models_explicit: bool = False  # --rfdetr-models (or its ini key or variable) was given
    backends_explicit: bool = False  # --rfdetr-backends (or its ini key or variable) was given
    scopes_explicit: bool = False  # --rfdetr-scopes (or its ini key or variable) was given
    sampling_explicit: bool = False  # --rfdetr-sampling (or its ini key or variable) was given
    # Set only for a fresh process (processes.py): its place among a recording's processes, which rotates the order
    # of its cases, and the block sizes it must sample with, per case and scope.
    process_index: int = 0
    block_sizes: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    trace_dir: Path | None = None  # a fresh process that profiles: where its raw traces go (beside the run's report)
    history_dir: Path | None = None
    against: Path | None = None  # another environment's interpreter: a head-to-head run (headtohead.py)
    against_processes: int = 4
    against_max_processes: int | None = None  # None: twice against_processes (headtohead.most_processes)
    against_tree: Path | None = None  # the other side's checkout (its tests, its code); None: this rootdir
    against_aa: bool = False  # both sides are the same code by design (an A/A run)
    against_sequential: bool = False  # head to head: processes one after the other, not pairs at once in turns
    inject_on: str = "gpu"  # where --rfdetr-inject-slowdown adds its work: 'gpu', 'host' or 'memory'
    # Set only for a fresh process of a head-to-head run: the file every process of both sides takes its block sizes
    # from, the first to size a case's scope writing them down (measure/case.py).
    sizes_file: Path | None = None
    # Set only for a fresh process: the parent's placement of its threads (placement.py), the same for every process.
    placement: Placement | None = None

    @property
    def active(self) -> bool:
        """Whether latency cases run at all (checking or recording)."""
        return self.enabled or self.save_baseline

    @property
    def profiling(self) -> tuple[bool, bool]:
        """What a check profiles once its verdicts are decided (diagnosis.to_profile): every scope (asked), and
        nothing at all (refused)."""
        return self.profile, self.no_profile

    @property
    def profiles_here(self) -> bool:
        """Whether this process profiles the cases it times: only a fresh process started to profile does. A profiler
        leaves state behind (on the H200, a recording process that profiled each case after timing it read the device
        scope a median 1.5 % slower than its other processes), so no process whose figures are judged profiles."""
        return self.profile and self.child_report is not None


# ---------------------------------------------------------------------------------------------------------------
# Parsers: each takes the raw string and returns a value or raises argparse.ArgumentTypeError with the bad value.


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _choice_list(kind: str, choices: tuple[str, ...]) -> Callable[[str], tuple[str, ...]]:
    lowered = {c.lower(): c for c in choices}

    def parse(value: str) -> tuple[str, ...]:
        parts = _split(value)
        if not parts:
            raise argparse.ArgumentTypeError(f"no {kind} given: name one or more of {', '.join(choices)}, or 'all'")
        if [p.lower() for p in parts] == ["all"]:
            return choices
        chosen: list[str] = []
        for part in parts:
            if part.lower() not in lowered:
                raise argparse.ArgumentTypeError(
                    f"unknown {kind} {part!r}: choose from {', '.join(choices)} (comma-separated), or 'all'"
                )
            name = lowered[part.lower()]
            if name not in chosen:
                chosen.append(name)
        return tuple(chosen)

    parse.__name__ = kind
    return parse


parse_models = _choice_list("model", ALL_MODELS)
parse_backends = _choice_list("backend", ALL_BACKENDS)
parse_scopes = _choice_list("scope", ALL_SCOPES)

_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def parse_device(value: str) -> str:
    text = value.strip().lower()
    if not _DEVICE_RE.match(text):
        raise argparse.ArgumentTypeError(f"invalid device {value!r}: use 'cuda', 'cuda:N' (N a GPU index), or 'cpu'")
    return text


_PERCENT_RE = re.compile(r"^\+?(\d+(\.\d+)?|\.\d+)%$")
TOLERANCE_FORMS = "a percentage such as '5%', or per scope such as 'device=1%,forward=3%,e2e=10%'"


def _percent(value: str, what: str, forms: str) -> float:
    text = value.strip()
    if text.startswith("-"):
        raise argparse.ArgumentTypeError(f"invalid {what} {value!r}: it cannot be negative; give a positive "
                                         f"percentage ({forms})")
    if not _PERCENT_RE.match(text):
        raise argparse.ArgumentTypeError(f"invalid {what} {value!r}: expected {forms}")
    fraction = float(text.rstrip("%").lstrip("+")) / 100.0
    if not (0.0 < fraction < 10.0) or not math.isfinite(fraction):
        raise argparse.ArgumentTypeError(f"invalid {what} {value!r}: must lie above 0% and below 1000%")
    return fraction


def parse_tolerance(value: str) -> Tolerance:
    parts = _split(value)
    if not parts:
        raise argparse.ArgumentTypeError(f"empty tolerance: expected {TOLERANCE_FORMS}")
    per_scope: dict[str, float] = {}
    everywhere: float | None = None
    for part in parts:
        if "=" in part:
            scope, _, amount = part.partition("=")
            scope = scope.strip().lower()
            if scope not in ALL_SCOPES:
                raise argparse.ArgumentTypeError(
                    f"unknown scope {scope!r} in tolerance {value!r}: scopes are {', '.join(ALL_SCOPES)}"
                )
            per_scope[scope] = _percent(amount, "tolerance", TOLERANCE_FORMS)
        else:
            everywhere = _percent(part, "tolerance", TOLERANCE_FORMS)
    return Tolerance(per_scope=per_scope, everywhere=everywhere)


def parse_inject(value: str) -> float:
    return _percent(value, "injected slowdown", "a percentage such as '5%'") * 100.0


def parse_weights(value: str) -> Weights:
    text = value.strip()
    if text.lower() in ("", "random"):
        return Weights()
    if "=" not in text:
        return Weights(everywhere=Path(text).expanduser())
    checkpoints: dict[str, Path] = {}
    for part in _split(text):
        model, sep, path = part.partition("=")
        if not sep or not path.strip():
            raise argparse.ArgumentTypeError(
                f"invalid weights {value!r}: use 'random', a checkpoint path, or MODEL=PATH[,MODEL=PATH]"
            )
        if model.strip().lower() == "all":
            raise argparse.ArgumentTypeError(
                f"invalid weights {value!r}: 'all=' names no model; one checkpoint for the selected model is the "
                f"path alone ({path.strip()}), several are MODEL=PATH[,MODEL=PATH]"
            )
        (name,) = parse_models(model)
        checkpoints[name] = Path(path.strip()).expanduser()
    return Weights(checkpoints=checkpoints)


def _whole_number(what: str, least: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        try:
            number = int(value.strip())
        except ValueError:
            number = least - 1
        if number < least:
            raise argparse.ArgumentTypeError(f"invalid {what} {value!r}: expected a whole number >= {least}")
        return number

    parse.__name__ = what
    return parse


def _positive_int(what: str) -> Callable[[str], int]:
    return _whole_number(what, 1)


def parse_batch_sizes(value: str) -> tuple[int, ...]:
    parse = _positive_int("batch size")
    sizes = tuple(dict.fromkeys(parse(part) for part in _split(value)))
    if not sizes:
        raise argparse.ArgumentTypeError("no batch size given: expected e.g. '1,4'")
    return sizes


def parse_resolutions(value: str) -> tuple[int | None, ...]:
    parse = _positive_int("resolution")
    out: list[int | None] = []
    for part in _split(value):
        out.append(None if part.lower() == "native" else parse(part))
    if not out:
        raise argparse.ArgumentTypeError("no resolution given: expected e.g. 'native,640'")
    return tuple(dict.fromkeys(out))


def parse_budgets(value: str) -> tuple[budget_specs.Budget, ...]:
    try:
        return budget_specs.parse_many(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_memory_tolerance(value: str) -> float:
    return _percent(value, "memory tolerance", "a percentage such as '10%'")


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.]*$")


def parse_onnx_models(value: str) -> dict[str, Path]:
    models: dict[str, Path] = {}
    for part in _split(value):
        name, sep, path = part.partition("=")
        name = name.strip()
        if not sep or not path.strip():
            raise argparse.ArgumentTypeError(f"invalid ONNX model {part!r}: expected NAME=PATH[,NAME=PATH]")
        if not _NAME.match(name) or name in ALL_MODELS:
            raise argparse.ArgumentTypeError(
                f"invalid ONNX model name {name!r}: letters, digits, '_' and '.', and not an RF-DETR variant's name"
            )
        models[name] = Path(path.strip()).expanduser()
    return models


def parse_seed(value: str) -> int:
    try:
        return int(value.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid seed {value!r}: expected a whole number") from None


def parse_image_size(value: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+))?\s*", value)
    if not match:
        raise argparse.ArgumentTypeError(f"invalid image size {value!r}: use WIDTHxHEIGHT such as '640x480', or '640'")
    width = int(match.group(1))
    height = int(match.group(2) or width)
    if not (16 <= width <= 8192 and 16 <= height <= 8192):
        raise argparse.ArgumentTypeError(f"invalid image size {value!r}: each side must lie between 16 and 8192")
    return width, height


def parse_bool(value: str) -> bool:
    text = value.strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise argparse.ArgumentTypeError(f"invalid boolean {value!r}: use true/false, yes/no, on/off or 1/0")


def parse_even_processes(value: str) -> int:
    count = _whole_number("process count", 2)(value)
    if count % 2:
        raise argparse.ArgumentTypeError(
            f"{count} processes per side: give an even number, so that the sides alternate in balanced pairs "
            f"(this-other, other-this, ...), e.g. {count + 1}")
    return count


def parse_inject_on(value: str) -> str:
    text = value.strip().lower()
    if text not in ("gpu", "host", "memory"):
        raise argparse.ArgumentTypeError(f"{value!r}: expected 'gpu', 'host' or 'memory'")
    return text


def parse_interpreter(value: str) -> Path:
    """A Python interpreter: a path, or a name found on PATH; it must exist and be executable."""
    import shutil

    text = value.strip()
    if not text:
        raise argparse.ArgumentTypeError("empty interpreter")
    found = shutil.which(os.path.expanduser(text))
    if found is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an executable Python interpreter: give its path, e.g. /opt/venv-new/bin/python")
    return Path(found)


def parse_path(value: str) -> Path:
    if not value.strip():
        raise argparse.ArgumentTypeError("empty path")
    return Path(value.strip()).expanduser()


def parse_sampling_option(value: str) -> SamplingPlan:
    try:
        return parse_sampling(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# ---------------------------------------------------------------------------------------------------------------
# The option table.


@dataclass(frozen=True)
class OptionSpec:
    dest: str
    flag: str
    help: str
    parser: Callable[[str], Any] | None = None  # None: an on/off flag
    metavar: str | None = None
    ini: bool = True  # also an ini key, for settings that belong to a repository
    env: bool = True  # also an environment variable (not the two switches that say what kind of run this is)

    @property
    def name(self) -> str:
        """The flag without its dashes and its ``rfdetr-`` prefix: ``--rfdetr-images`` is ``images``. The
        environment variable and the ini key are made from it by one rule, so that each can be guessed from the
        flag: ``RFDETR_LATENCY_IMAGES``, ``rfdetr_latency_images``."""
        return self.flag.lstrip("-").removeprefix("rfdetr-")

    @property
    def ini_name(self) -> str:
        return "rfdetr_latency_" + self.name.replace("-", "_")

    @property
    def env_name(self) -> str:
        return "RFDETR_LATENCY_" + self.name.replace("-", "_").upper()

    @property
    def full_help(self) -> str:
        """The help, with where else the setting can be given."""
        also = [f"env {self.env_name}"] if self.env else []
        also += [f"ini {self.ini_name}"] if self.ini else []
        return f"{self.help} Also: {', '.join(also)}." if also else self.help

    @property
    def is_flag(self) -> bool:
        return self.parser is None


_SCOPES_HELP = ", ".join(ALL_SCOPES)
OPTIONS: tuple[OptionSpec, ...] = (
    OptionSpec("enabled", "--rfdetr-latency", "run the RF-DETR latency cases (without it they are collected and "
               "skipped). Default: off.", ini=False, env=False),
    OptionSpec("save_baseline", "--save-baseline", "measure the latency cases and record the results as the "
               "baseline of this device; those cases pass. Default: off.", ini=False, env=False),
    OptionSpec("models", "--rfdetr-models", f"comma list of RF-DETR variants, or 'all'. Choices: "
               f"{', '.join(ALL_MODELS)}. Default: {','.join(DEFAULT_MODELS)}.", parse_models, "LIST"),
    OptionSpec("backends", "--rfdetr-backends", f"comma list of backends, or 'all'. Choices: "
               f"{', '.join(ALL_BACKENDS)}. Default: {','.join(DEFAULT_BACKENDS)}.", parse_backends, "LIST"),
    OptionSpec("device", "--rfdetr-device", "device to measure on: 'cuda', 'cuda:N' or 'cpu'. Default: cuda when "
               "a GPU is visible, else cpu.", parse_device, "DEVICE"),
    OptionSpec("baseline_dir", "--rfdetr-baseline-dir", "folder of the per-device baseline files, relative to the "
               "rootdir. Default: latency_baselines/.", parse_path, "DIR"),
    OptionSpec("weights", "--rfdetr-weights", "'random' (seeded, offline), a local checkpoint path, or "
               "MODEL=PATH[,MODEL=PATH]. Nothing is downloaded. Default: random.", parse_weights, "WEIGHTS"),
    OptionSpec("tolerance", "--rfdetr-tolerance", f"regression threshold: {TOLERANCE_FORMS}. Default: "
               + ", ".join(f"{scope} {value * 100:g}%" for scope, value in DEFAULT_THRESHOLDS.items())
               + " (head to head: " + ", ".join(f"{scope} {value * 100:g}%" for scope, value
                                                 in HEAD_TO_HEAD_THRESHOLDS.items())
               + "), each widened where the processes' own noise needs it (docs/verdict.md).", parse_tolerance, "TOL"),
    OptionSpec("scopes", "--rfdetr-scopes", f"comma list of the scopes to measure and gate (the others are not "
               f"measured): {_SCOPES_HELP}. Default: all.", parse_scopes, "LIST"),
    OptionSpec("report", "--rfdetr-report", "write a JSON report of every case to PATH. Default: none.",
               parse_path, "PATH", ini=False),
    OptionSpec("benchmark_json", "--rfdetr-benchmark-json", "write the results in pytest-benchmark's JSON format to "
               "PATH (for pytest-benchmark compare and github-action-benchmark); timings are CUDA events on a GPU. "
               "Default: none.", parse_path, "PATH", ini=False),
    OptionSpec("plot_dir", "--rfdetr-plot", "write PNG plots to DIR: per case, each scope now against its baseline; "
               "and the throughput chart. Needs matplotlib. Default: none.", parse_path, "DIR", ini=False),
    OptionSpec("markdown", "--rfdetr-markdown", "append a Markdown summary to PATH (also done to "
               "$GITHUB_STEP_SUMMARY when it is set). Default: none.", parse_path, "PATH", ini=False),
    OptionSpec("strict", "--rfdetr-strict", "fail a case that has no baseline for this device, or whose verdict "
               "stays inconclusive (an unresolved one only where its scope or tolerance was asked for by name), "
               "instead of skipping or passing it with a warning. Default: off."),
    OptionSpec("image_size", "--rfdetr-image-size", "synthetic image size, WIDTHxHEIGHT. Default: 640x640.",
               parse_image_size, "WxH"),
    OptionSpec("image_count", "--rfdetr-images", "number of seeded synthetic images the cases cycle through. "
               "Default: 4.", _positive_int("image count"), "N"),
    OptionSpec("detections", "--rfdetr-detections", "detections each image must yield, so that post-processing "
               "does real work (the score threshold is calibrated to it). Default: 50.",
               _positive_int("detection count"), "N"),
    OptionSpec("seed", "--rfdetr-seed", "seed of the random weights and the synthetic images. Default: 0.",
               parse_seed, "N"),
    OptionSpec("sampling", "--rfdetr-sampling", f"sampling preset ({', '.join(PRESETS)}) with optional overrides, "
               "e.g. 'standard,max-seconds=5'. Default: standard.", parse_sampling_option, "PLAN"),
    OptionSpec("inject", "--rfdetr-inject-slowdown", "self-test: slow every measured scope down by PCT (a "
               "calibrated GPU kernel, or host delay on CPU) to see what the gate catches. Default: none.",
               parse_inject, "PCT", ini=False),
    OptionSpec("replace_corrupt", "--rfdetr-replace-corrupt-baseline", "with --save-baseline, replace a baseline "
               "file that cannot be read; the old file is kept beside it as a backup. Default: off.", ini=False),
    OptionSpec("fail_on_drift", "--rfdetr-fail-on-drift", "fail a case whose environment (driver, CUDA, torch, "
               "onnxruntime, rfdetr, clocks, precision) differs from its baseline's. Default: warn only."),
    OptionSpec("cache_dir", "--rfdetr-cache-dir", "folder for exported ONNX files, reused across runs. Default: "
               "the pytest cache (.pytest_cache/d/rfdetr-latency).", parse_path, "DIR"),
    OptionSpec("batch_sizes", "--rfdetr-batch-sizes", "comma list of batch sizes, an axis of the matrix (ids gain "
               "-bN; throughput is reported in images/s). Default: 1.", parse_batch_sizes, "LIST"),
    OptionSpec("resolutions", "--rfdetr-resolutions", "comma list of square input resolutions, an axis of the "
               "matrix (ids gain -rN; each must divide by the model's patch size x windows), or 'native'. "
               "Default: native.", parse_resolutions, "LIST"),
    OptionSpec("budgets", "--rfdetr-budget", "absolute limits that fail a case whatever its baseline: "
               f"{budget_specs.FORMS}; several separated by ';' (the ini key takes one per line). Default: none.",
               parse_budgets, "SPEC"),
    OptionSpec("no_parity", "--rfdetr-no-parity", "do not compare each backend's outputs with FP32 PyTorch's "
               "(by default a case whose outputs diverge fails, whatever its speed). Default: parity checked."),
    OptionSpec("memory_tolerance", "--rfdetr-memory-tolerance", "threshold for peak GPU memory against the "
               "baseline, a percentage (plus a few MiB of allocator slack). Default: 5%.", parse_memory_tolerance,
               "PCT"),
    OptionSpec("profile", "--rfdetr-profile", "profile a few calls of each scope in a fresh process of its own, "
               "never one whose figures are judged (torch.profiler: host operators, GPU kernels through CUPTI): with "
               "--save-baseline one more process after the recording's, its tables kept in the baseline entries; on a "
               "check one more per case once its verdict is decided, every scope diagnosed against the recording's "
               "(what got slower, what is new or gone, and how much of the change that explains), shown under a "
               "regression and in the JSON report; with --rfdetr-report, each scope's raw trace is kept beside it "
               "(opens in Perfetto); head to head, both sides once each per case, the other side diagnosed against "
               "this one. Its cost is reported apart. Without it, a check still profiles a case whose scope "
               "regressed against a profiled recording, and head to head both sides of a regressed case. "
               "Default: off."),
    OptionSpec("no_profile", "--rfdetr-no-profile", "profile nothing, not even a case whose scope regressed (which "
               "otherwise costs one more fresh process, both sides head to head: on the H200 about a minute a case), "
               "for a gate whose job has a tight time limit; the failure then says why there is no diagnosis. "
               "Default: a regression is profiled."),
    OptionSpec("no_pin", "--rfdetr-no-pin", "on a GPU run, leave the launching thread where the OS puts it instead "
               "of moving it to the fastest allowed core while sampling. Default: pinned."),
    OptionSpec("confirm", "--rfdetr-confirm", "when a case's figure moves past its threshold, measure the case again "
               "in up to N fresh processes; the median of all its processes decides (a process's memory placement "
               "and its host's slow spells last as long as the process; a real regression is in every process). 0 "
               "decides on the one process. Default: 2 on a GPU, 0 on the CPU.",
               _whole_number("confirmation count", 0), "N"),
    OptionSpec("save_processes", "--rfdetr-save-processes", "with --save-baseline, record each case in N fresh "
               "processes (cases in rotated order); the baseline keeps every process's figures, their median and "
               "their spread, which sets how finely the case can be judged. Default: 3 on a GPU, 1 on the CPU.",
               _positive_int("process count"), "N"),
    OptionSpec("onnx_models", "--rfdetr-onnx", "your own exported ONNX files as cases, run on the selected onnx-* "
               "backends: NAME=PATH[,NAME=PATH]. Default: none.", parse_onnx_models, "NAME=PATH", ini=False),
    OptionSpec("history_dir", "--rfdetr-history", "append every check's and recording's figures, per case and "
               "scope, to DIR/<device>.jsonl (only ever appended to); 'rfdetr-latency history DIR' charts them and "
               "finds persistent shifts; a recording learns this runner's spread between sessions from the checks "
               "there and stores it in the baseline file. Default: none.", parse_path, "DIR"),
    OptionSpec("against", "--rfdetr-against", "head to head: with --rfdetr-latency, measure every case in this "
               "environment and in the one of interpreter PYTHON (which has pytest-rfdetr-latency installed), "
               "in pairs of fresh processes (one per side) on the same device, and judge PYTHON's side against this "
               "one; no baseline is read or written. Default: none.", parse_interpreter, "PYTHON", ini=False),
    OptionSpec("against_processes", "--rfdetr-against-processes", "with --rfdetr-against, fresh processes per side, "
               "an even number (at least 2), in pairs (one process per side), up to 4 pairs at once. Default: 4.",
               parse_even_processes, "N"),
    OptionSpec("against_max_processes", "--rfdetr-against-max-processes", "with --rfdetr-against, where a "
               "comparison cannot resolve what it must after the first pairs, more pairs in one go, up to N processes "
               "per side (an even number, at least --rfdetr-against-processes; equal to it: never). Default: twice "
               "--rfdetr-against-processes.",
               parse_even_processes, "N"),
    OptionSpec("against_tree", "--rfdetr-against-tree", "with --rfdetr-against, the other side's checkout, the side "
               "judged (e.g. a git worktree of the pull request, run from its merge base's checkout): its processes "
               "run there, collecting its own tests and importing its own code. Default: this rootdir.", parse_path,
               "DIR", ini=False),
    OptionSpec("against_aa", "--rfdetr-against-aa", "with --rfdetr-against, declare an A/A run: both sides may "
               "import the same files (otherwise refused as a comparison of nothing). Default: off.", ini=False),
    OptionSpec("against_sequential", "--rfdetr-against-sequential", "with --rfdetr-against, run the processes one "
               "after the other, instead of up to 4 pairs at once (one process per side each, all live, preparing "
               "together) taking turns block by block (a block of one call, unless --rfdetr-sampling is given) so "
               "that both sides see the same host from one moment to the next. Default: off.", ini=False),
    OptionSpec("inject_on", "--rfdetr-inject-on", "with --rfdetr-inject-slowdown, where the added work runs: 'gpu' "
               "(a calibrated kernel in the forward and device scopes, host delay elsewhere), 'host' (a busy wait "
               "on the launching thread in every host-bound scope, none on the device scope) or 'memory' (PCT of "
               "the baseline's peak held allocated on the GPU while the case runs; timings untouched). Default: gpu.",
               parse_inject_on, "WHERE", ini=False),
)

# How ``pytest --help`` groups the options: what to run, how it is judged, where files go, head to head, self-tests.
OPTION_GROUPS: dict[str, tuple[str, ...]] = {
    "RF-DETR latency: what to run": (
        "enabled", "save_baseline", "models", "backends", "scopes", "device", "weights", "onnx_models",
        "batch_sizes", "resolutions", "image_size", "image_count", "detections", "seed", "sampling", "no_parity",
        "no_pin", "profile", "no_profile"),
    "RF-DETR latency: how it is judged": (
        "tolerance", "memory_tolerance", "budgets", "strict", "confirm", "save_processes", "fail_on_drift"),
    "RF-DETR latency: baselines, reports and history": (
        "baseline_dir", "replace_corrupt", "cache_dir", "report", "markdown", "benchmark_json", "plot_dir",
        "history_dir"),
    "RF-DETR latency: head to head (a pull request against its merge base)": (
        "against", "against_tree", "against_processes", "against_max_processes", "against_aa", "against_sequential"),
    "RF-DETR latency: self-tests": ("inject", "inject_on"),
}

OPTIONS_BY_DEST = {spec.dest: spec for spec in OPTIONS}
ENV_PREFIX = "RFDETR_LATENCY_"
ENV_NAMES = {spec.env_name: spec for spec in OPTIONS if spec.env}


INI_PREFIX = "rfdetr_latency_"
INI_NAMES = {spec.ini_name: spec for spec in OPTIONS if spec.ini}


def _closest(asked: str, known: list[str]) -> str | None:
    import difflib

    close = [n for n in known if n.startswith(asked) or asked.startswith(n)]
    close = close or difflib.get_close_matches(asked, known, n=1, cutoff=0.5)
    return close[0] if close else None


def check_ini_keys(keys: list[str], ini_file: str | None) -> None:
    """Refuse an ``rfdetr_latency_*`` ini key that names no setting (``rfdetr_latency_budgets`` for
    ``rfdetr_latency_budget``, say): pytest would only warn, and the setting would be lost without a failure."""
    for key in sorted(keys):
        if key.startswith(INI_PREFIX) and key not in INI_NAMES:
            close = _closest(key.removeprefix(INI_PREFIX), [n.removeprefix(INI_PREFIX) for n in INI_NAMES])
            hint = f"did you mean {INI_PREFIX}{close}? " if close else ""
            where = f" in {ini_file}" if ini_file else ""
            raise SettingsError(
                f"ini key {key}{where} names no setting of pytest-rfdetr-latency: {hint}Each option's key is "
                f"{INI_PREFIX} and the flag's name after --rfdetr-, dashes as underscores (pytest --help lists them)"
            )


def check_environment(environ: Mapping[str, str]) -> None:
    """Refuse an ``RFDETR_LATENCY_*`` variable that names no setting: a misspelt one would otherwise be ignored
    without a word, and the run would measure something other than what was asked."""
    for key in sorted(environ):
        if key.startswith(ENV_PREFIX) and key not in ENV_NAMES:
            asked = key.removeprefix(ENV_PREFIX)
            if asked in ("ENABLED", "SAVE_BASELINE"):
                flag = "--rfdetr-latency" if asked == "ENABLED" else "--save-baseline"
                raise SettingsError(f"environment variable {key}: {flag} says what kind of run this is and is given "
                                    "on the command line only; unset the variable")
            close = _closest(asked, [n.removeprefix(ENV_PREFIX) for n in ENV_NAMES])
            hint = f"did you mean {ENV_PREFIX}{close}? " if close else ""
            raise SettingsError(
                f"environment variable {key} names no setting of pytest-rfdetr-latency: {hint}Each option's variable "
                f"is {ENV_PREFIX} and the flag's name after --rfdetr- in capitals, dashes as underscores (pytest "
                "--help lists them); unset it or rename it"
            )


@dataclass(frozen=True)
class RawValue:
    """What pytest knows of one option: the command-line value (None when not given) and the ini string."""

    cli: Any = None
    ini: str | None = None
    ini_file: str | None = None


def _check_head_to_head(values: Mapping[str, Any]) -> None:
    """The head-to-head options need --rfdetr-against, and a side may grow to no fewer processes than it starts with."""
    for key in ("against_processes", "against_max_processes", "against_tree", "against_aa", "against_sequential"):
        if key in values and values[key] is not False and "against" not in values:
            flag = OPTIONS_BY_DEST[key].flag
            raise SettingsError(f"{flag} belongs to a head-to-head run: give --rfdetr-against=PYTHON too, or drop it")
    most, least = values.get("against_max_processes"), values.get("against_processes", Settings.against_processes)
    if most is not None and most < least:
        raise SettingsError(f"--rfdetr-against-max-processes {most} is fewer than the {least} processes a side starts "
                            f"with: give at least {least}, or drop it")


def resolve(raw: Mapping[str, RawValue], environ: Mapping[str, str], rootdir: Path) -> Settings:
    """Build :class:`Settings` from command line > environment > ini > defaults.

    Command-line values are already parsed by argparse (``type=`` is the parser); environment and ini strings are
    parsed here with the same function, so the error names the environment variable or ini key.
    """
    check_environment(environ)
    values: dict[str, Any] = {}
    for spec in OPTIONS:
        entry = raw.get(spec.dest, RawValue())
        # Every source that gives a value is parsed, so that a bad one is reported even where another wins.
        given: list[Any] = []
        # A flag left off reads False, an option left out None; any other value (0 included) was given.
        if entry.cli is not None and not (spec.is_flag and entry.cli is False):
            given.append(entry.cli)
        env_text = environ.get(spec.env_name) if spec.env else None
        if env_text is not None and env_text.strip():
            given.append(_parse_from(spec, env_text, f"environment variable {spec.env_name}"))
        if spec.ini and entry.ini is not None and str(entry.ini).strip():
            where = f"ini key {spec.ini_name}" + (f" in {entry.ini_file}" if entry.ini_file else "")
            given.append(_parse_from(spec, str(entry.ini), where))
        if given:
            values[spec.dest] = given[0]
    values["models_explicit"] = "models" in values
    values["backends_explicit"] = "backends" in values
    values["scopes_explicit"] = "scopes" in values
    values["sampling_explicit"] = "sampling" in values
    values["memory_tolerance_given"] = "memory_tolerance" in values
    baseline_dir = values.get("baseline_dir", Settings.baseline_dir)
    values["baseline_dir"] = baseline_dir if baseline_dir.is_absolute() else rootdir / baseline_dir
    _check_head_to_head(values)
    if "inject_on" in values and "inject" not in values:
        raise SettingsError("--rfdetr-inject-on says where --rfdetr-inject-slowdown adds its work: give "
                            "--rfdetr-inject-slowdown=PCT too, or drop it")
    if values.get("inject_on") == "memory" and "against" in values:
        raise SettingsError("--rfdetr-inject-on=memory grows a case's peak by a share of its stored baseline's, and a "
                            "head-to-head run reads no baseline file: use it in a check against a stored baseline")
    if "against_tree" in values:
        tree = values["against_tree"] if values["against_tree"].is_absolute() else rootdir / values["against_tree"]
        if not tree.is_dir():
            raise SettingsError(f"--rfdetr-against-tree {tree} is not a folder: give the other side's checkout, e.g. "
                                "git worktree add ../head <the pull request's commit>")
        values["against_tree"] = tree.resolve()
    for key in ("cache_dir", "history_dir"):
        if key in values and not values[key].is_absolute():
            values[key] = rootdir / values[key]
    for key in ("baseline_dir", "cache_dir", "history_dir"):
        if key in values and values[key].exists() and not values[key].is_dir():
            flag = OPTIONS_BY_DEST[key].flag
            raise SettingsError(f"{flag} {values[key]} is a file: give a folder (it holds "
                                f"{'one file per GPU model' if key != 'cache_dir' else 'the cached exports'})")
    settings = Settings(**values)
    _check_combination(settings)
    return settings


def _parse_from(spec: OptionSpec, text: str, where: str) -> Any:
    parser = spec.parser or parse_bool
    try:
        return parser(text)
    except argparse.ArgumentTypeError as exc:
        raise SettingsError(f"{where}: {exc}") from None


def _check_combination(settings: Settings) -> None:
    if settings.inject is not None and settings.save_baseline:
        raise SettingsError(
            "--rfdetr-inject-slowdown with --save-baseline would record a deliberately slowed run as the baseline: "
            "drop one of the two"
        )
    if settings.against is not None and not settings.enabled:
        raise SettingsError(
            "--rfdetr-against compares two environments in a check: add --rfdetr-latency"
            + (" and drop --save-baseline (a head-to-head run reads and writes no baseline)"
               if settings.save_baseline else "")
        )
    if settings.profile and settings.no_profile:
        raise SettingsError("--rfdetr-profile asks for every scope profiled, --rfdetr-no-profile for none: drop one")
    if settings.against is not None and settings.save_baseline:
        raise SettingsError("--rfdetr-against with --save-baseline: a head-to-head run reads and writes no baseline; "
                            "drop one of the two")
    weights = settings.weights
    if weights.everywhere is not None and settings.models_explicit and len(settings.models) > 1:
        raise SettingsError(
            f"--rfdetr-weights {weights.everywhere} names one checkpoint but {len(settings.models)} models are "
            f"selected ({', '.join(settings.models)}): select its model with --rfdetr-models, or write "
            "--rfdetr-weights MODEL=PATH"
        )
    for model in weights.checkpoints:
        if model not in settings.models:
            raise SettingsError(
                f"--rfdetr-weights names a checkpoint for {model}, which is not among the selected models "
                f"({', '.join(settings.models)}): add it to --rfdetr-models"
            )


def marker_settings(
    case_id: str, kwargs: Mapping[str, Any]
) -> tuple[tuple[str, ...] | None, dict[str, float], tuple[budget_specs.Budget, ...]]:
    """What ``@pytest.mark.rfdetr_latency(scopes=..., tolerance=..., budget=...)`` asks of one case: its scopes, the
    tolerance per scope, and budgets. A bad value raises ArgumentTypeError or ValueError with the accepted forms."""
    scopes = parse_scopes(",".join(_as_list(kwargs["scopes"]))) if kwargs.get("scopes") else None
    budgets = tuple(budget_specs.parse(str(spec), case=case_id) for spec in _as_list(kwargs.get("budget")))
    thresholds: dict[str, float] = {}
    if kwargs.get("tolerance"):
        tolerance = parse_tolerance(str(kwargs["tolerance"]))
        for scope in ALL_SCOPES:
            if scope in tolerance.per_scope or tolerance.everywhere is not None:
                thresholds[scope] = tolerance.for_scope(scope, 0.0)
    return scopes, thresholds, budgets


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]
