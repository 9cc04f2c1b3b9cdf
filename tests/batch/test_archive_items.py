"""The work items and the output of ``radfm batch`` without Ray: keys, prompts, rules, queries, parts."""

from __future__ import annotations

import json

import pytest

from radfm.batch import archive_items as items
from radfm.batch import parquet_results as results


def test_the_key_changes_with_the_study_series_weights_and_prompt():
    base = items.item_key("1.2.3", "1.2.3.4", "ab" * 32, "Describe <image>.")
    assert len(base) == 64
    assert base == items.item_key("1.2.3", "1.2.3.4", "ab" * 32, "Describe <image>.")
    assert len({base, items.item_key("1.2.9", "1.2.3.4", "ab" * 32, "Describe <image>."),
                items.item_key("1.2.3", "1.2.3.5", "ab" * 32, "Describe <image>."),
                items.item_key("1.2.3", "1.2.3.4", "cd" * 32, "Describe <image>."),
                items.item_key("1.2.3", "1.2.3.4", "ab" * 32, "Describe <image> briefly.")}) == 5


def test_an_item_listed_twice_is_kept_once():
    one = items._item("s", "", ["a.nii.gz"], "q", origin="folder")
    assert len(items.with_keys([one, dict(one)], "ab" * 32)) == 1


def test_a_prompt_bank_entry_is_rendered_for_one_scan_and_bad_entries_are_named():
    assert items.resolve_prompt("bank:report:3") == "<image> Describe the findings in this image."
    assert items.resolve_prompt("What is shown? <image>") == "What is shown? <image>"
    with pytest.raises(items.BatchInputError, match=r"bank 'report' has entries 0-10"):
        items.resolve_prompt("bank:report:99")
    with pytest.raises(items.BatchInputError, match=r"no prompt bank for task 'reprot'"):
        items.resolve_prompt("bank:reprot")
    with pytest.raises(items.BatchInputError, match=r"needs field 'modality'"):
        items.resolve_prompt("bank:modality_inductive:0")


def test_a_rules_file_is_checked_by_the_node_validator_naming_the_file_and_field(tmp_path):
    good = tmp_path / "rules.json"
    good.write_text(json.dumps([{"name": "ct", "modalities": ["CT"], "prompt": "<image> Findings?"}]))
    assert [rule.name for rule in items.load_rules(good)] == ["ct"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"rules": [{"name": "ct", "modalities": ["ct"], "prompt": "<image> Findings?"}]}))
    with pytest.raises(items.BatchInputError, match=rf"{bad}: rules\[0\]\.modalities: expected a list of DICOM"):
        items.load_rules(bad)


def test_a_qido_query_is_name_value_pairs():
    assert items.parse_query("ModalitiesInStudy=CT, StudyDate=20240101-20241231") == {
        "ModalitiesInStudy": "CT", "StudyDate": "20240101-20241231"}
    assert items.parse_query({"ModalitiesInStudy": "CT"}) == {"ModalitiesInStudy": "CT"}
    with pytest.raises(items.BatchInputError, match="NAME=VALUE"):
        items.parse_query("ModalitiesInStudy")


def test_reading_the_output_keeps_one_row_per_key_an_answer_over_an_earlier_error(tmp_path):
    row = {"key": "k1", "study_uid": "s1", "series_uid": "", "prompt": "q"}
    results.write_part(tmp_path, "run1", 0, results.as_table([{**row, "error": "invalid_scan: x", "finished_at": 1.0},
                                                               {**row, "key": "k2", "answer": "a2", "finished_at": 1.0}]))
    results.write_part(tmp_path, "run2", 0, results.as_table([{**row, "answer": "a1", "finished_at": 2.0}]))
    (tmp_path / "results" / ".part-run3-000000.parquet.x.tmp.parquet").write_bytes(b"torn")  # a kill mid-write
    assert results.finished_keys(tmp_path) == {"k1", "k2"}
    assert results.finished_keys(tmp_path, retry_failed=True) == {"k1", "k2"}
    rows = results.read_results(tmp_path)
    assert list(rows["key"]) == ["k1", "k2"] and list(rows["answer"]) == ["a1", "a2"]
    assert rows["error"].isna().all()


def test_a_failed_row_is_retried_only_with_retry_failed(tmp_path):
    row = {"key": "k1", "study_uid": "s1", "series_uid": "", "prompt": "q", "error": "invalid_scan: x"}
    results.write_part(tmp_path, "run1", 0, results.as_table([row]))
    assert results.finished_keys(tmp_path) == {"k1"}
    assert results.finished_keys(tmp_path, retry_failed=True) == set()
