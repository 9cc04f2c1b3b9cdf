"""The Deploy app's series rules are the node's: translated once to the SDK's selections, the node's choice,
the staging of its input."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from radfm.deploy.deploy_rules import sdk_selections, select_sdk_series
from radfm.dicom.series_rules import DEFAULT_RULES, SeriesRule, select_series


def _sdk_series(uid, modality, description, instances):
    """A stand-in for the SDK's DICOMSeries: the attributes and method the selection reads."""
    return SimpleNamespace(SeriesInstanceUID=uid, Modality=modality, SeriesDescription=description,
                           get_sop_instances=lambda: [object()] * instances)


def test_our_rules_become_the_sdk_selections_in_one_translation():
    rules = [SeriesRule("lung", ["CT"], "<image> Lung?", description="lung|thorax"),
             SeriesRule("any", ["CR", "DX"], "<image> Chest?", description="^$|.*")]  # matches an empty description
    assert sdk_selections(rules) == {"selections": [
        {"name": "lung", "conditions": {"Modality": "(?i)^(CT)$", "SeriesDescription": "lung|thorax"}},
        # the SDK fails a condition on a missing attribute; ours searches "": the condition is left out
        {"name": "any", "conditions": {"Modality": "(?i)^(CR|DX)$"}}]}
    assert [s["name"] for s in sdk_selections(DEFAULT_RULES)["selections"]] == ["ct", "mr", "chest-xray"]


@pytest.mark.parametrize("rules", [DEFAULT_RULES, [
    SeriesRule("ct", ["CT"], "Where is the lesion in <image>?", min_instances=4),
    SeriesRule("axial", ["CT"], "<image> Axial?", description="axial")]])
def test_the_app_chooses_the_series_and_prompt_the_node_chooses(rules):
    """A scout CT of 2 instances and a CT of 10: both pick the 10-instance series (min_instances=4), and a
    series is used by the first rule it matches only."""
    study = [("1.2.1", "CT", "SCOUT", 2), ("1.2.2", "CT", "AXIAL 5mm", 10), ("1.2.3", "CT", "axial bone", 6),
             ("1.2.4", "SR", "", 1)]
    node = [(s["series_uid"], rule.name, rule.prompt) for s, rule in select_series(
        [{"series_uid": u, "modality": m, "description": d, "instances": n} for u, m, d, n in study], rules)]
    app = [(str(s.SeriesInstanceUID), rule.name, rule.prompt)
           for s, rule in select_sdk_series([_sdk_series(*one) for one in study], rules)]
    assert app == node
    assert node[0][:2] == ("1.2.2", "ct")
    if len(rules) == 2:
        assert node[1][:2] == ("1.2.3", "axial")  # the 10-instance axial series was taken by the first rule


def test_the_input_is_checked_by_the_scan_guards_and_only_files_a_rule_may_select_are_staged(tmp_path):
    """D1: the SDK's loader read every file whole (a deflated one inflated in memory) before any check."""
    import sys
    from pathlib import Path

    from support.synthetic import write_ct_series

    from radfm.deploy.deploy_rules import stage_input

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
    from hostile_files import deflated_dicom_bomb, deflated_multiframe_dicom

    given = tmp_path / "in"
    ct = write_ct_series(given / "ct", slices=4, size=16)
    (given / "other").mkdir()
    deflated_multiframe_dicom(given / "other" / "honest.dcm", 512, 512, 4)  # modality OT: no rule selects it
    deflated_dicom_bomb(given / "other" / "bomb.dcm", 64 * 1024**2)  # inflates past what its header claims
    (given / "notes.txt").write_text("not DICOM")
    scout = write_ct_series(given / "scout", slices=2, size=16, description="SCOUT")  # below min_instances=4
    staged = stage_input(given, DEFAULT_RULES, tmp_path / "staged")
    assert staged.kept == len(ct)
    assert sorted(p.resolve() for p in (tmp_path / "staged").iterdir()) == sorted(Path(f).resolve() for f in ct)
    reasons = "\n".join(staged.skipped)
    assert "other/bomb.dcm: the deflated DICOM data inflate to more than" in reasons
    assert "other/honest.dcm: no series rule matches it" in reasons
    for file in scout:  # the node skips a scout: the app's loader never reads it
        assert f"{file.relative_to(given)}: its series is not the one the series rules choose" in reasons
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
    rules = [SeriesRule("ot", ["OT"], "<image> Findings?")]
    assert stage_input(tmp_path / "in", rules, tmp_path / "staged").kept == 1
    (copy,) = (tmp_path / "staged").iterdir()
    assert not copy.is_symlink()
    plain = pydicom.dcmread(copy)
    assert plain.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert (plain.pixel_array == pydicom.dcmread(tmp_path / "in" / "mf.dcm").pixel_array).all()
