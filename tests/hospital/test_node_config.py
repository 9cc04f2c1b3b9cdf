"""The node's config file: every field checked, errors name the file and the field."""

from __future__ import annotations

import json

import pytest

from radfm.hospital.node_config import NodeConfig, NodeConfigError

CALLERS = [{"ae_title": "ORTHANC", "host": "127.0.0.1"}]


def _write(tmp_path, data) -> str:
    path = tmp_path / "node.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return str(path)


def test_a_full_config_loads_and_state_dir_is_relative_to_the_file(tmp_path):
    config = NodeConfig.from_file(_write(tmp_path, {
        "ae_title": "RADFM", "port": 11112, "allowed_callers": CALLERS, "state_dir": "state",
        "rules": [{"name": "ct", "modalities": ["CT"], "description": "chest|thorax", "prompt": "<image> Findings?"}],
        "destinations": [{"name": "pacs", "kind": "dimse", "ae_title": "ORTHANC", "host": "127.0.0.1", "port": 4242},
                         {"name": "web", "kind": "stow", "url": "http://127.0.0.1:8042/dicom-web/"}],
        "pull": {"url": "http://127.0.0.1:8042/dicom-web", "filter": {"ModalitiesInStudy": "CT"}}}))
    assert config.state_dir == str(tmp_path.resolve() / "state")
    assert [d.kind for d in config.destinations] == ["dimse", "stow"]
    assert config.destinations[1].url == "http://127.0.0.1:8042/dicom-web"
    assert config.rules[0].description == "chest|thorax" and config.pull.filter == {"ModalitiesInStudy": "CT"}


@pytest.mark.parametrize("change, message", [
    ({"allowed_callers": []}, "allowed_callers: expected a non-empty list"),
    ({"ae_title": "A" * 17}, "ae_title: expected an AE title"),
    ({"port": 70000}, "port: expected a whole number >= 0 and <= 65535"),
    ({"stable_after_s": 0}, "stable_after_s: expected a number of seconds >= 0.1"),
    ({"max_studies_in_memory": 0}, "max_studies_in_memory: expected a whole number >= 1"),
    ({"generation_timeout_s": 0}, "generation_timeout_s: expected a number of seconds >= 1"),
    ({"stable_afer_s": 3}, "stable_afer_s: unknown field (did you mean 'stable_after_s'?)"),
    ({"rules": [{"modalities": ["ct"], "prompt": "x"}]}, "rules[0].modalities: expected a list of DICOM modality"),
    ({"rules": [{"modalities": ["CT"], "prompt": "<image> <image>"}]}, "rules[0].prompt: expected a question"),
    ({"rules": [{"modalities": ["CT"], "prompt": "x", "description": "("}]}, "rules[0].description: expected a regular"),
    ({"destinations": [{"kind": "ftp"}]}, "destinations[0].kind: expected \"dimse\""),
    ({"destinations": [{"kind": "dimse", "ae_title": "X", "host": "127.0.0.1"}]}, "destinations[0].port"),
    ({"allowed_callers": [{"ae_title": "X", "hots": "127.0.0.1"}]}, "allowed_callers[0].hots: unknown field"),
])
def test_bad_values_are_refused_naming_file_and_field(tmp_path, change, message):
    data = {"allowed_callers": CALLERS, **change}
    path = _write(tmp_path, data)
    with pytest.raises(NodeConfigError) as error:
        NodeConfig.from_file(path)
    assert str(error.value).startswith(path) and message in str(error.value)


def test_unreadable_file_and_bad_json_are_named(tmp_path):
    with pytest.raises(NodeConfigError, match="cannot read the node config"):
        NodeConfig.from_file(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{", encoding="utf-8")
    with pytest.raises(NodeConfigError, match="bad.json: not valid JSON"):
        NodeConfig.from_file(tmp_path / "bad.json")
