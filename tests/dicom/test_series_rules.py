"""Series selection: modality, description pattern, minimum instances, one series per rule."""

from radfm.node.node_config import DEFAULT_RULES, SeriesRule
from radfm.dicom.series_rules import select_series


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
