"""Override checks and the one-line exception hook of our bundle runs (radfm.utils.cli_bundle)."""

from __future__ import annotations

import json
import sys

import pytest

from radfm.utils.cli_bundle import (
    BundleOverrideError,
    check_bundle_run,
    one_line_excepthook,
    unknown_overrides,
    user_error,
)


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"cases": [], "cases_file": None, "net": {"_target_": "X", "size": [1, 2]},
                                "pre": {"transforms": [{"_target_": "A", "window": None}]}}))
    return path


def test_a_misspelled_root_key_names_the_nearest(config_file):
    (problem,) = unknown_overrides(config_file, ["case"])
    assert problem == "unknown config key --case: no config file defines it (did you mean --cases?)"
    assert unknown_overrides(config_file, ["zzz"]) == ["unknown config key --zzz: no config file defines it"]


def test_known_keys_new_arguments_and_extra_keys_pass(config_file):
    assert unknown_overrides(config_file, ["cases", "cases_file", "net#size", "net#new_argument",
                                           "pre#transforms#0#window", "tracking_uri"], extra_keys={"tracking_uri"}) == []


def test_a_nested_id_under_a_missing_parent_is_refused(config_file):
    (problem,) = unknown_overrides(config_file, ["pre#transforms#3#window"])
    assert "'pre#transforms#3' does not exist" in problem


def test_several_config_files_are_merged(config_file, tmp_path):
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"run_name": "x"}))
    assert unknown_overrides([config_file, other], ["run_name", "cases"]) == []


def test_check_bundle_run_outside_create_workflow_does_nothing():
    check_bundle_run()  # no create_workflow frame on the stack: nothing to compare


def test_create_workflow_with_a_misspelled_override_raises(tmp_path):
    from monai.bundle.scripts import create_workflow

    config = tmp_path / "config.json"
    config.write_text(json.dumps({"imports": ["$import radfm", "$import radfm.utils.cli_bundle"], "cases": [1],
                                  "initialize": ["$radfm.utils.cli_bundle.check_bundle_run()"], "run": ["$print(@cases)"]}))
    with pytest.raises(Exception) as caught:
        create_workflow(config_file=str(config), workflow_type=None, logging_file=False, case=[2])
    found = user_error(caught.value)
    assert isinstance(found, BundleOverrideError) and "did you mean --cases?" in str(found)
    workflow = create_workflow(config_file=str(config), workflow_type=None, logging_file=False, cases=[2])
    assert workflow.parser["cases"] == [2]


def test_excepthook_prints_the_user_error_in_one_line(capsys, monkeypatch):
    monkeypatch.delenv("RADFM_DEBUG", raising=False)
    try:
        try:
            raise FileNotFoundError("case 0: image file not found: /data/ct.nii.gz")
        except FileNotFoundError as inner:
            raise RuntimeError("Failed to evaluate ConfigExpression: ...") from inner
    except RuntimeError as outer:
        one_line_excepthook(RuntimeError, outer, outer.__traceback__)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "image file not found: /data/ct.nii.gz" in err and "Traceback" not in err


def test_excepthook_keeps_the_traceback_of_a_bug_or_under_radfm_debug(capsys, monkeypatch):
    calls = []
    monkeypatch.setattr(sys, "__excepthook__", lambda *args: calls.append(args))
    bug = RuntimeError("a bug")
    one_line_excepthook(RuntimeError, bug, None)
    monkeypatch.setenv("RADFM_DEBUG", "1")
    one_line_excepthook(ValueError, ValueError("bad"), None)
    assert len(calls) == 2 and capsys.readouterr().err == ""
