"""The Deploy app's rules file: checked without the SDK, errors name the file and the selection."""

from __future__ import annotations

import json

import pytest

from radfm.hospital.deploy_rules import DEFAULT_RULES, load_rules


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
