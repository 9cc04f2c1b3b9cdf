"""Building a study: merging prediction files, copying scans, tokens, bad input."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from radfm.rating import store, views
from radfm.rating.study import create_study


def test_study_holds_cases_candidates_and_copied_scans(study, scans):
    folder, _ = study
    with store.connect(folder) as conn:
        assert store.models_in_order(conn) == ["radfm", "baseline", "other"]
        assert [r["case_id"] for r in conn.execute("SELECT case_id FROM cases ORDER BY position")] == [
            "case-1", "case-2", "case-3"]
        assert conn.execute("SELECT COUNT(*) FROM candidates").fetchone()[0] == 9
        paths = [r["rel_path"] for r in conn.execute("SELECT rel_path FROM case_images")]
    assert len(paths) == 4
    for rel in paths:
        copied = folder / rel
        assert copied.is_file() and copied.resolve().is_relative_to((folder / "images").resolve())
    assert (folder / "images/c00000/0_chest_ct.nii.gz").read_bytes() == scans["nifti"].read_bytes()


def test_tokens_are_stored_only_as_hashes(study):
    folder, tokens = study
    raw = b"".join(p.read_bytes() for p in folder.glob("study.sqlite*"))
    for token in tokens.values():
        assert token.encode() not in raw
        assert store.hash_token(token).encode() in raw
    with store.connect(folder) as conn:
        assert store.rater_for_token(conn, tokens["alice"])["name"] == "alice"
        assert store.rater_for_token(conn, "not-a-token") is None
        with pytest.raises(ValueError, match="already exists"):
            store.add_rater(conn, "alice")


def test_blinded_order_is_stable_per_rater_and_differs_between_raters():
    pks = list(range(1, 7))
    secret = bytes(range(32))
    first = views.blinded_order(pks, 1, "case-1", secret)
    assert first == views.blinded_order(list(reversed(pks)), 1, "case-1", secret)  # input order does not leak
    assert sorted(first) == pks
    orders = {tuple(views.blinded_order(pks, rater, "case-1", secret)) for rater in range(1, 6)}
    assert len(orders) > 1  # different raters see different orders
    assert views.slot_label(0) == "Answer A" and views.slot_label(26) == "Answer AA"


def test_rows_with_errors_are_left_out_and_tasks_filtered(tmp_path, prediction_files):
    broken = tmp_path / "broken.jsonl"
    rows = [json.loads(line) for line in prediction_files[1].read_text().splitlines()]
    for row in rows:
        row["model"] = "broken"
        row["error"] = "CUDA out of memory" if row["id"] == "case-1" else None
    broken.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.warns(UserWarning, match="'broken' has no answer for 1"):
        result = create_study(tmp_path / "s", [prediction_files[0], broken], tasks=["vqa"])
    assert result["cases"] == 2
    with store.connect(result["study"]) as conn:
        per_case = dict(conn.execute(
            "SELECT c.case_id, COUNT(*) FROM candidates cand JOIN cases c ON c.pk = cand.case_pk GROUP BY c.case_id"))
    assert per_case == {"case-1": 1, "case-3": 2}


def test_per_task_sampling_is_seeded(tmp_path, prediction_files):
    a = create_study(tmp_path / "a", prediction_files, per_task=1, seed=3)
    b = create_study(tmp_path / "b", prediction_files, per_task=1, seed=3)
    ids = []
    for result in (a, b):
        with store.connect(result["study"]) as conn:
            ids.append([r[0] for r in conn.execute("SELECT task FROM cases ORDER BY position")])
    assert ids[0] == ids[1] and sorted(ids[0]) == ["report", "vqa"]


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda rows: rows[0].pop("reference"), r"broken.jsonl:1: missing field\(s\) reference"),
        (lambda rows: rows.append(dict(rows[0])), r"broken.jsonl:4: duplicate case id 'case-1'"),
        (lambda rows: rows[1].update(model="someone-else"), r"broken.jsonl: field 'model' differs"),
        (lambda rows: rows[2].update(reference="changed"), r"broken.jsonl:3: case 'case-3' has a different reference"),
        (lambda rows: rows[0].update(images="x.nii.gz"), r"broken.jsonl:1: field 'images' must be a list"),
    ],
)
def test_bad_predictions_name_file_and_line(tmp_path, prediction_files, mutate, message):
    rows = [json.loads(line) for line in prediction_files[1].read_text().splitlines()]
    mutate(rows)
    broken = _write(tmp_path / "broken.jsonl", rows)
    with pytest.raises(ValueError, match=message):
        create_study(tmp_path / "s", [prediction_files[0], broken])
    assert not (tmp_path / "s").exists()
    assert not list(tmp_path.glob(".s.building-*"))  # nothing half-built left behind


def test_same_model_twice_and_existing_folder_are_refused(tmp_path, prediction_files):
    with pytest.raises(ValueError, match="model 'radfm' already given"):
        create_study(tmp_path / "s", [prediction_files[0], prediction_files[0]])
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(FileExistsError, match="not empty"):
        create_study(tmp_path / "full", prediction_files)


def test_missing_scan_is_recorded_and_the_study_still_built(tmp_path, prediction_files):
    rows = [json.loads(line) for line in prediction_files[0].read_text().splitlines()]
    rows[0]["images"] = [str(tmp_path / "gone.nii.gz")]
    only = _write(tmp_path / "radfm.jsonl", rows)
    with pytest.warns(UserWarning, match="gone.nii.gz"):
        result = create_study(tmp_path / "s", [only])
    with store.connect(result["study"]) as conn:
        row = conn.execute("SELECT rel_path, error FROM case_images WHERE image_index=0 ORDER BY case_pk").fetchone()
    assert row["rel_path"] is None and "gone.nii.gz" in row["error"]


def test_scores_are_checked_by_the_database(study):
    folder, _ = study
    with store.connect(folder) as conn:
        with pytest.raises(ValueError, match="0..5"):
            store.set_score(conn, 1, 1, 6)
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute("INSERT INTO ratings VALUES (1, 1, 9, 0)")


def test_image_placeholders_are_shown_as_scan_labels():
    assert views.readable_prompt("<image> <image> Compare.") == "[Scan 1] [Scan 2] Compare."
    assert views.readable_prompt("History. <image-2> then <image-1>") == "History. [Scan 2] then [Scan 1]"
