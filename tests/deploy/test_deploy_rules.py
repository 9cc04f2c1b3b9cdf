"""The Deploy app's rules file: checked without the SDK, errors name the file and the selection."""

from __future__ import annotations

import json

import pytest

from radfm.deploy.deploy_rules import DEFAULT_RULES, load_rules


def test_no_file_gives_the_default_rules_and_a_good_file_loads(tmp_path):
    assert load_rules(None) is DEFAULT_RULES
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({"selections": [{"name": "ct", "conditions": {"Modality": "CT"},
                                                 "prompt": "<image> Findings?"}]}))
    assert load_rules(rules)["selections"][0]["prompt"] == "<image> Findings?"


@pytest.mark.parametrize("content, message", [
    ({"selections": [{"name": "x", "conditions": {}, "prompt": "<image> <image>"}]}, r"selections\[0\].prompt"),
    ({"selections": [{"name": "x"}]}, r"selections\[0\]: expected an object with \"conditions\""),
    ({"rules": []}, "expected {\"selections\""),
])
def test_bad_rules_are_refused_naming_the_file(tmp_path, content, message):
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps(content))
    with pytest.raises(ValueError, match=r"rules.json: " + message):
        load_rules(rules)
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="bad.json: not a readable rules JSON file"):
        load_rules(tmp_path / "bad.json")


def test_the_input_is_checked_by_the_scan_guards_and_only_files_a_rule_may_select_are_staged(tmp_path):
    """D1: the SDK's loader read every file whole (a deflated one inflated in memory) before any check."""
    import sys
    from pathlib import Path

    from radfm.deploy.deploy_rules import stage_input
    from support.synthetic import write_ct_series

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
    from hostile_files import deflated_dicom_bomb, deflated_multiframe_dicom

    given = tmp_path / "in"
    ct = write_ct_series(given / "ct", slices=4, size=16)
    (given / "other").mkdir()
    deflated_multiframe_dicom(given / "other" / "honest.dcm", 512, 512, 4)  # modality OT: no rule selects it
    deflated_dicom_bomb(given / "other" / "bomb.dcm", 64 * 1024**2)  # inflates past what its header claims
    (given / "notes.txt").write_text("not DICOM")
    staged = stage_input(given, DEFAULT_RULES, tmp_path / "staged")
    assert staged.kept == len(ct)
    assert sorted(p.resolve() for p in (tmp_path / "staged").iterdir()) == sorted(Path(f).resolve() for f in ct)
    reasons = "\n".join(staged.skipped)
    assert "other/bomb.dcm: the deflated DICOM data inflate to more than" in reasons
    assert "other/honest.dcm: no selection rule matches it" in reasons
    assert "notes.txt: not DICOM" in reasons


def test_a_selected_deflated_file_is_staged_as_a_plain_copy(tmp_path):
    import sys
    from pathlib import Path

    import pydicom

    from radfm.deploy.deploy_rules import stage_input

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
    from hostile_files import deflated_multiframe_dicom

    (tmp_path / "in").mkdir()
    deflated_multiframe_dicom(tmp_path / "in" / "mf.dcm", 64, 64, 2)
    rules = {"selections": [{"name": "ot", "conditions": {"Modality": "(?i)^OT$"}}]}
    assert stage_input(tmp_path / "in", rules, tmp_path / "staged").kept == 1
    (copy,) = (tmp_path / "staged").iterdir()
    assert not copy.is_symlink()
    plain = pydicom.dcmread(copy)
    assert plain.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert (plain.pixel_array == pydicom.dcmread(tmp_path / "in" / "mf.dcm").pixel_array).all()
