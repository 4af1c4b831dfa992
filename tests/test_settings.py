from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import pytest

from pytest_rfdetr_latency.measure.cases import DEFAULT_MODELS, Case, matrix
from pytest_rfdetr_latency.measure.sampling import PRESETS, parse_sampling
from pytest_rfdetr_latency.measure.settings import (
    OPTIONS,
    OPTIONS_BY_DEST,
    RawValue,
    SettingsError,
    Weights,
    parse_device,
    parse_models,
    parse_tolerance,
    parse_weights,
    resolve,
)


@pytest.mark.parametrize("bad", ["10", "ten%", "-5%", "0%", "%", "5%%", "1e3%", ""])
def test_tolerance_rejects_ambiguous_or_negative_values(bad: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=r"a percentage such as '5%'|must lie above"):
        parse_tolerance(bad)


def test_a_negative_tolerance_is_told_it_is_negative() -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=r"invalid tolerance '-5%': it cannot be negative; give a "
                                                          r"positive percentage"):
        parse_tolerance("-5%")


def test_tolerance_accepts_global_and_per_scope_forms() -> None:
    tolerance = parse_tolerance("4%, device=1%, e2e=+12.5%")
    assert tolerance.everywhere == pytest.approx(0.04)
    assert tolerance.for_scope("device", 0.3) == pytest.approx(0.01)
    assert tolerance.for_scope("e2e", 0.3) == pytest.approx(0.125)
    assert tolerance.for_scope("forward", 0.3) == pytest.approx(0.04)
    assert parse_tolerance("device=2%").for_scope("forward", 0.05) == 0.05


def test_tolerance_names_unknown_scope() -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=r"unknown scope 'gpu'.*e2e, forward, iobinding, device"):
        parse_tolerance("gpu=1%")


def test_models_are_validated_case_insensitively_and_list_choices() -> None:
    assert parse_models("rfdetrnano, RFDETRMedium") == ("RFDETRNano", "RFDETRMedium")
    assert len(parse_models("all")) == 11
    with pytest.raises(argparse.ArgumentTypeError) as info:
        parse_models("RFDETRHuge")
    assert "unknown model 'RFDETRHuge'" in str(info.value)
    assert "RFDETRKeypointPreview" in str(info.value)


@pytest.mark.parametrize(("value", "expected"), [("cuda", "cuda"), ("CUDA:1", "cuda:1"), ("cpu", "cpu")])
def test_device_forms(value: str, expected: str) -> None:
    assert parse_device(value) == expected


@pytest.mark.parametrize("bad", ["gpu", "cuda:", "cuda:x", "mps"])
def test_device_rejects_other_forms(bad: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="use 'cuda', 'cuda:N'"):
        parse_device(bad)


def test_weights_forms(tmp_path: Path) -> None:
    assert parse_weights("random") == Weights()
    ckpt = tmp_path / "m.pth"
    assert parse_weights(str(ckpt)).for_model("RFDETRNano") == ckpt
    pair = parse_weights(f"RFDETRNano={ckpt}")
    assert pair.for_model("RFDETRNano") == ckpt
    assert pair.for_model("RFDETRSmall") is None
    with pytest.raises(argparse.ArgumentTypeError, match="unknown model"):
        parse_weights(f"Nope={ckpt}")


def raw(**values: object) -> dict[str, RawValue]:
    return {key: RawValue(cli=value) for key, value in values.items()}


def test_precedence_cli_over_environment_over_ini(tmp_path: Path) -> None:
    entries = {"models": RawValue(cli=None, ini="RFDETRSmall", ini_file="tox.ini")}
    assert resolve(entries, {}, tmp_path).models == ("RFDETRSmall",)
    env = {"RFDETR_LATENCY_MODELS": "RFDETRNano"}
    assert resolve(entries, env, tmp_path).models == ("RFDETRNano",)
    entries["models"] = RawValue(cli=("RFDETRLarge",), ini="RFDETRSmall")
    assert resolve(entries, env, tmp_path).models == ("RFDETRLarge",)
    assert resolve({}, {}, tmp_path).models == DEFAULT_MODELS


def test_zero_on_the_command_line_is_a_value_not_an_absence(tmp_path: Path) -> None:
    env = {"RFDETR_LATENCY_CONFIRM": "2", "RFDETR_LATENCY_SEED": "7"}
    given = {"confirm": RawValue(cli=0), "seed": RawValue(cli=0)}
    settings = resolve(given, env, tmp_path)
    assert settings.confirm == 0 and settings.seed == 0
    assert resolve({}, env, tmp_path).confirm == 2
    # A flag left off still leaves the environment's value standing.
    assert resolve({"strict": RawValue(cli=False)}, {"RFDETR_LATENCY_STRICT": "1"}, tmp_path).strict is True


def test_a_sampling_plan_from_any_source_counts_as_given(tmp_path: Path) -> None:
    assert resolve({}, {}, tmp_path).sampling_explicit is False
    assert resolve({}, {"RFDETR_LATENCY_SAMPLING": "quick"}, tmp_path).sampling_explicit is True
    from_ini = resolve({"sampling": RawValue(cli=None, ini="thorough", ini_file="tox.ini")}, {}, tmp_path)
    assert from_ini.sampling_explicit is True and from_ini.sampling.block_size == 20


def test_a_head_to_head_may_grow_to_no_fewer_processes_than_it_starts_with(tmp_path: Path) -> None:
    against = {"enabled": RawValue(cli=True), "against": RawValue(cli=Path(sys.executable)),
               "against_processes": RawValue(cli=4)}
    with pytest.raises(SettingsError, match="--rfdetr-against-max-processes 2 is fewer than the 4 processes a side "
                                            "starts with: give at least 4, or drop it"):
        resolve({**against, "against_max_processes": RawValue(cli=2)}, {}, tmp_path)
    assert resolve({**against, "against_max_processes": RawValue(cli=6)}, {}, tmp_path).against_max_processes == 6
    with pytest.raises(SettingsError, match="--rfdetr-against-max-processes belongs to a head-to-head run"):
        resolve({"against_max_processes": RawValue(cli=6)}, {}, tmp_path)


def test_profiling_is_taken_head_to_head_in_every_form(tmp_path: Path) -> None:
    against = {"enabled": RawValue(cli=True), "against": RawValue(cli=Path(sys.executable))}
    assert resolve({**against, "profile": RawValue(cli=True)}, {}, tmp_path).profile is True
    assert resolve(against, {"RFDETR_LATENCY_PROFILE": "1"}, tmp_path).profile is True
    assert resolve(against, {}, tmp_path).profile is False
    assert resolve({"enabled": RawValue(cli=True), "profile": RawValue(cli=True)}, {}, tmp_path).profile is True


def test_bad_environment_value_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="environment variable RFDETR_LATENCY_TOLERANCE: invalid tolerance '10'"):
        resolve({}, {"RFDETR_LATENCY_TOLERANCE": "10"}, tmp_path)


def test_bad_ini_value_names_the_key_and_file(tmp_path: Path) -> None:
    entries = {"backends": RawValue(ini="torch-fp8", ini_file="/repo/pytest.ini")}
    with pytest.raises(SettingsError, match=r"ini key rfdetr_latency_backends in /repo/pytest.ini: unknown backend"):
        resolve(entries, {}, tmp_path)


def test_every_variable_and_ini_key_is_made_from_its_flag_by_one_rule() -> None:
    for spec in OPTIONS:
        words = spec.flag.lstrip("-").removeprefix("rfdetr-").replace("-", "_")
        assert spec.env_name == f"RFDETR_LATENCY_{words.upper()}" and spec.ini_name == f"rfdetr_latency_{words}"
    names = {spec.flag: spec.env_name for spec in OPTIONS if spec.env}
    assert names["--rfdetr-images"] == "RFDETR_LATENCY_IMAGES"
    assert names["--rfdetr-inject-slowdown"] == "RFDETR_LATENCY_INJECT_SLOWDOWN"
    assert names["--rfdetr-plot"] == "RFDETR_LATENCY_PLOT"
    assert "--rfdetr-latency" not in names and "--save-baseline" not in names  # the run's kind: said on its command
    assert all(f"env {spec.env_name}" in spec.full_help for spec in OPTIONS if spec.env)


def test_variables_named_by_the_rule_take_effect(tmp_path: Path) -> None:
    env = {"RFDETR_LATENCY_IMAGES": "2", "RFDETR_LATENCY_INJECT_SLOWDOWN": "60%", "RFDETR_LATENCY_PLOT": "plots"}
    settings = resolve({}, env, tmp_path)
    assert settings.image_count == 2 and settings.inject == pytest.approx(60.0) and settings.plot_dir == Path("plots")


@pytest.mark.parametrize(("variable", "hint"), [
    ("RFDETR_LATENCY_IMAGE_COUNT", "did you mean RFDETR_LATENCY_IMAGES?"),
    ("RFDETR_LATENCY_INJECT", "did you mean RFDETR_LATENCY_INJECT_SLOWDOWN?"),
    ("RFDETR_LATENCY_MODEL", "did you mean RFDETR_LATENCY_MODELS?"),
    ("RFDETR_LATENCY_XYZZY", "names no setting"),
])
def test_an_unknown_variable_is_refused_naming_the_close_match(tmp_path: Path, variable: str, hint: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(hint)) as caught:
        resolve({}, {variable: "1"}, tmp_path)
    assert variable in str(caught.value) and "pytest --help lists them" in str(caught.value)


def test_the_run_kind_switches_are_command_line_only(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="--rfdetr-latency says what kind of run this is and is given on the "
                                            "command line only"):
        resolve({}, {"RFDETR_LATENCY_ENABLED": "1"}, tmp_path)


def test_a_bad_ini_value_is_reported_even_where_the_environment_overrides_it(tmp_path: Path) -> None:
    entries = {"backends": RawValue(ini="torch-fp8", ini_file="/repo/pytest.ini")}
    with pytest.raises(SettingsError, match=r"ini key rfdetr_latency_backends in /repo/pytest.ini: unknown backend"):
        resolve(entries, {"RFDETR_LATENCY_BACKENDS": "onnx-cpu"}, tmp_path)
    with pytest.raises(SettingsError, match="environment variable RFDETR_LATENCY_SEED"):
        resolve({"seed": RawValue(cli=3)}, {"RFDETR_LATENCY_SEED": "x"}, tmp_path)


@pytest.mark.parametrize("dest", ["baseline_dir", "cache_dir", "history_dir"])
def test_a_folder_option_given_a_file_is_refused_before_anything_runs(tmp_path: Path, dest: str) -> None:
    (tmp_path / "taken").write_text("a file")
    flag = OPTIONS_BY_DEST[dest].flag
    with pytest.raises(SettingsError, match=rf"{flag} {tmp_path / 'taken'} is a file: give a folder"):
        resolve(raw(**{dest: Path("taken")}), {}, tmp_path)
    assert (tmp_path / "taken").read_text() == "a file"


def test_relative_baseline_dir_is_under_the_rootdir(tmp_path: Path) -> None:
    assert resolve({}, {}, tmp_path).baseline_dir == tmp_path / "latency_baselines"
    settings = resolve(raw(baseline_dir=Path("perf/base")), {}, tmp_path)
    assert settings.baseline_dir == tmp_path / "perf" / "base"


def test_injection_and_saving_do_not_mix(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="drop one of the two"):
        resolve(raw(save_baseline=True, inject=5.0), {}, tmp_path)


def test_profiling_everything_and_nothing_do_not_mix(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="--rfdetr-no-profile for none: drop one"):
        resolve(raw(profile=True, no_profile=True), {}, tmp_path)
    assert resolve(raw(no_profile=True), {}, tmp_path).profiling == (False, True)


def test_one_checkpoint_for_several_models_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="write --rfdetr-weights MODEL=PATH"):
        resolve(raw(weights=parse_weights("x.pth"), models=("RFDETRNano", "RFDETRSmall")), {}, tmp_path)


def test_every_option_has_help_with_its_default() -> None:
    for spec in OPTIONS_BY_DEST.values():
        assert "Default" in spec.help, spec.flag
        assert spec.flag.startswith("--")


def test_sampling_presets_and_overrides() -> None:
    plan = parse_sampling("quick,max-seconds=5,target=1%")
    assert plan.max_seconds == 5.0 and plan.target == pytest.approx(0.01)
    assert plan.block_size == PRESETS["quick"].block_size
    with pytest.raises(ValueError, match="unknown sampling preset 'fast'"):
        parse_sampling("fast")
    with pytest.raises(ValueError, match="min-blocks >= 2"):
        parse_sampling("standard,min-blocks=1")
    with pytest.raises(ValueError, match="takes a number"):
        parse_sampling("standard,block=many")


def test_case_ids_and_matrix_order() -> None:
    assert Case("RFDETRMedium", "onnx-cuda").id == "RFDETRMedium-onnx-cuda"
    assert Case("RFDETRMedium", "torch-fp16", batch=4, resolution=640).id == "RFDETRMedium-torch-fp16-b4-r640"
    cases = matrix(["RFDETRNano", "RFDETRSmall"], ["torch-fp32", "onnx-cpu"])
    assert [c.id for c in cases] == [
        "RFDETRNano-torch-fp32",
        "RFDETRNano-onnx-cpu",
        "RFDETRSmall-torch-fp32",
        "RFDETRSmall-onnx-cpu",
    ]


def test_every_option_is_in_exactly_one_help_group() -> None:
    from pytest_rfdetr_latency.measure.settings import OPTION_GROUPS, OPTIONS

    grouped = [dest for members in OPTION_GROUPS.values() for dest in members]
    assert sorted(grouped) == sorted(spec.dest for spec in OPTIONS)
