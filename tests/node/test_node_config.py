"""The node's config file: every field checked, errors name the file and the field."""

from __future__ import annotations

import json

import pytest

from radfm.node.node_config import NodeConfig, NodeConfigError

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
    # upper bounds (issue 28): max_studies_in_memory 1e9 was accepted and the node grew past 2.5 GB
    ({"max_studies_in_memory": 1_000_000_000}, "max_studies_in_memory: expected a whole number >= 1 and <= 64"),
    ({"max_instance_mb": 10**6}, "max_instance_mb: expected a whole number >= 1 and <= 4096"),
    ({"max_scan_mb": 10**7}, "max_scan_mb: expected a whole number >= 1 and <= 65536"),
    ({"max_instances_per_study": 10**9}, "max_instances_per_study: expected a whole number >= 1 and <= 100000"),
    ({"max_new_tokens": 10**6}, "max_new_tokens: expected a whole number >= 1 and <= 8192"),
    ({"max_attempts": 10**6}, "max_attempts: expected a whole number >= 1 and <= 1000"),
    ({"max_job_attempts": 10**6}, "max_job_attempts: expected a whole number >= 1 and <= 100"),
    ({"stable_after_s": 1e12}, "stable_after_s: expected a number of seconds >= 0.1 and <= 86400"),
    ({"generation_timeout_s": 1e12}, "generation_timeout_s: expected a number of seconds >= 1 and <= 86400"),
    ({"retry_first_s": 1e9}, "retry_first_s: expected a number of seconds >= 0.01 and <= 3600"),
    ({"retry_max_s": 1e9}, "retry_max_s: expected a number of seconds >= 5 and <= 86400"),
    ({"pull": {"url": "http://127.0.0.1/dw", "every_s": 1e9}}, "pull.every_s: expected a number of seconds >= 0.1"),
    ({"rules": [{"modalities": ["CT"], "prompt": "x", "min_instances": 10**9}]}, "rules[0].min_instances: expected"),
    ({"max_associations": 1000}, "max_associations: expected a whole number >= 1 and <= 64"),
    ({"max_associations": 2, "max_associations_per_host": 3}, "max_associations_per_host: expected <= max_associations"),
    ({"association_request_timeout_s": 3600}, "association_request_timeout_s: expected a number of seconds >= 0.5 and"),
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


@pytest.mark.parametrize("change, message", [
    # a misspelt limit used to be refused at the top level only; nested objects are checked alike
    ({"pull": {"url": "http://127.0.0.1/dw", "every_sec": 5}}, "pull.every_sec: unknown field (did you mean 'every_s'?)"),
    ({"rules": [{"modalities": ["CT"], "prompt": "x", "min_instance": 2}]},
     "rules[0].min_instance: unknown field (did you mean 'min_instances'?)"),
    ({"destinations": [{"name": "pacs", "kind": "dimse", "ae_title": "P", "host": "h", "port": 104, "aet": "P"}]},
     "destinations[0].aet: unknown field"),
    # the unknown name is named even when it leaves a required field missing
    ({"pull": {"ur": "http://127.0.0.1/dw"}}, "pull.ur: unknown field (did you mean 'url'?)"),
])
def test_a_typo_anywhere_is_refused_naming_the_field_path(tmp_path, change, message):
    """The error carries the field's path (from pydantic's error location) for callers, not only in its text."""
    path = _write(tmp_path, {"allowed_callers": CALLERS, **change})
    with pytest.raises(NodeConfigError) as error:
        NodeConfig.from_file(path)
    assert str(error.value).startswith(f"{path}: {message}")
    assert error.value.field == message.split(":")[0]


def test_the_config_has_a_json_schema_that_refuses_unknown_fields_at_every_level():
    """Editors and CI can check a node.json against the same model the node validates with."""
    schema = NodeConfig.model_json_schema()
    assert schema["additionalProperties"] is False
    assert all(definition.get("additionalProperties") is False for definition in schema["$defs"].values())
    assert {"Caller", "Destination", "SeriesRule", "PullConfig"} <= set(schema["$defs"])


def test_sizes_are_converted_to_bytes_in_one_place(tmp_path):
    config = NodeConfig.from_dict({"allowed_callers": CALLERS, "max_scan_mb": 3, "max_instance_mb": 2})
    assert (config.max_scan_bytes, config.max_instance_bytes) == (3 * 1024 * 1024, 2 * 1024 * 1024)
    assert [r.name for r in NodeConfig.from_dict({"allowed_callers": CALLERS, "rules": [
        {"modalities": ["CT"], "prompt": "x"}, {"name": "mr", "modalities": ["MR"], "prompt": "y"}]}).rules] == ["rule0", "mr"]


def test_the_engine_field_picks_transformers_or_vllm(tmp_path):
    """``"engine"`` (issue 29): the node's series are answered on the transformers or the vLLM engine."""
    assert NodeConfig.from_file(_write(tmp_path, {"allowed_callers": CALLERS})).engine == "transformers"
    assert NodeConfig.from_file(_write(tmp_path, {"allowed_callers": CALLERS, "engine": "vllm"})).engine == "vllm"
    path = _write(tmp_path, {"allowed_callers": CALLERS, "engine": "tensorrt"})
    with pytest.raises(NodeConfigError, match="engine: Input should be 'transformers' or 'vllm', got 'tensorrt'"):
        NodeConfig.from_file(path)
