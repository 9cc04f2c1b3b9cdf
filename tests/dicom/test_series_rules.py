"""Series selection: modality, description pattern, minimum instances, one series per rule."""

import pytest

from radfm.dicom.series_rules import DEFAULT_RULES, SeriesRule, select_series


def _series(uid, modality, description="", instances=10):
    return {"series_uid": uid, "modality": modality, "description": description, "instances": instances}


def test_default_rules_pick_the_largest_ct_and_the_chest_xray_and_skip_others():
    study = [_series("1", "CT", "SCOUT", 2), _series("2", "CT", "CHEST", 80), _series("3", "CT", "CHEST BONE", 40),
             _series("4", "DX", "CHEST PA", 1), _series("5", "SR", "", 1), _series("6", "PR", "", 1)]
    chosen = [(series["series_uid"], rule.name) for series, rule in select_series(study, DEFAULT_RULES)]
    assert chosen == [("2", "ct"), ("4", "chest-xray")]


def test_description_pattern_is_case_insensitive_and_first_rule_wins():
    rules = [SeriesRule("lung", ["CT"], "<image> Lung?", description=r"lung|thorax"),
             SeriesRule("any-ct", ["CT"], "<image> Findings?")]
    study = [_series("1", "CT", "Thorax 1mm", 100), _series("2", "CT", "Abdomen", 200)]
    chosen = [(series["series_uid"], rule.name) for series, rule in select_series(study, rules)]
    assert chosen == [("1", "lung"), ("2", "any-ct")]


def test_nothing_matches_gives_an_empty_choice():
    assert select_series([_series("1", "US", "", 5)], DEFAULT_RULES) == []


def test_a_rules_file_holds_the_node_configs_rules_as_a_list_or_under_rules(tmp_path):
    import json

    from radfm.dicom.series_rules import load_series_rules

    rules = [{"modalities": ["CT"], "prompt": "<image> Findings?", "min_instances": 4},
             {"name": "dx", "modalities": ["DX"], "prompt": "<image> Chest?", "description": "pa|ap"}]
    for content in (rules, {"rules": rules}):
        (tmp_path / "rules.json").write_text(json.dumps(content))
        loaded = load_series_rules(tmp_path / "rules.json")
        assert loaded == [SeriesRule("rule0", ["CT"], "<image> Findings?", min_instances=4),
                          SeriesRule("dx", ["DX"], "<image> Chest?", description="pa|ap")]


@pytest.mark.parametrize("content, message", [
    ([{"modalities": ["CT"], "prompt": "<image> <image>"}], r"rules\[0\].prompt: expected a question with at most one"),
    ({"rules": [{"modalities": ["CT"], "prompt": "x", "min_instance": 4}]},
     r"rules\[0\].min_instance: unknown field \(did you mean 'min_instances'\?\)"),
    ({"rulez": []}, r"rulez: unknown field \(did you mean 'rules'\?\)"),
    ([], "rules: expected a non-empty list of series rules"),
    ({"selections": [{"name": "ct", "conditions": {"Modality": "CT"}}]}, "selections: unknown field"),  # the SDK's
    ("CT", r"expected a list of series rules or \{\"rules\": \[...\]\}, got str"),
])
def test_a_bad_rules_file_is_refused_naming_the_file_and_the_field(tmp_path, content, message):
    import json

    from radfm.dicom.series_rules import load_series_rules

    (tmp_path / "rules.json").write_text(json.dumps(content))
    with pytest.raises(ValueError, match=r"rules.json: " + message):
        load_series_rules(tmp_path / "rules.json")
    (tmp_path / "bad.json").write_text("[")
    with pytest.raises(ValueError, match="bad.json: not valid JSON"):
        load_series_rules(tmp_path / "bad.json")
