"""``radfm batch`` end to end on the session's local Ray (2 CPUs) with the demo model.

One run over the archive (module fixture) serves several tests: each run starts model actors,
which costs seconds on this machine.
"""

from __future__ import annotations

import json

import pytest

from radfm.batch.parquet_results import read_results
from radfm.batch.ray_pipeline import run_batch

PROMPT = "bank:report:3"  # "{images} Describe the findings in this image."


@pytest.fixture(scope="module")
def archive_run(ray_session, archive, tmp_path_factory):
    """The archive answered with the node's rules, SRs written, a 2 MiB budget over 2 read workers."""
    folder = tmp_path_factory.mktemp("batch")
    outcome = run_batch(str(folder / "out"), folder=str(archive["root"]), rules=str(archive["rules"]), prompt=PROMPT,
                        sr_folder=str(folder / "sr"), budget_mb=2, read_workers=2, read_cpus=0.5, progress=False,
                        max_new_tokens=8)
    return outcome, read_results(folder / "out"), folder


def test_a_folder_tree_gives_one_row_per_series_or_file_with_the_rules_or_bank_prompt(archive_run, archive):
    from radfm.answering.identity import identity_of_model_dir
    from radfm.model.loading import demo_model_dir

    outcome, rows, _ = archive_run
    assert len(rows) == 10 and outcome["skipped_files"] == 1  # the RT plan: DICOM without pixels, not a study
    by_study = {row.study_uid: row for row in rows.itertuples()}
    for name in archive["files"]:  # each scan file is a study, asked the prompt-bank question
        assert by_study[name].error is None and by_study[name].answer
        assert by_study[name].prompt == "<image> Describe the findings in this image."
    dicom = rows[rows["series_uid"] != ""]
    assert sorted(dicom["rule"]) == ["chest-xray", "ct", "ct", "mr"]  # the node's rules picked the series
    assert dicom["error"].isna().all() and (dicom["answer"].str.len() > 0).all()
    identity = identity_of_model_dir(demo_model_dir())
    assert set(rows["weights_sha256"]) == {identity.weights_sha256} and set(rows["model_name"]) == {identity.name}
    answered = rows[rows["error"].isna()]
    assert (answered["generate_s"] > 0).all() and (answered["read_s"] > 0).all()
    # the CPU stage and the model stage ran in different processes: Ray did not fuse them into the actor
    assert not set(answered["read_node"]) & set(answered["generate_node"])


def test_bad_studies_are_rows_with_their_error_and_the_job_goes_on(archive_run, archive):
    outcome, rows, folder = archive_run
    by_study = {row.study_uid: row for row in rows.itertuples()}
    assert (outcome["answered"], outcome["failed"]) == (7, 3)
    assert by_study["bad/cut.dcm"].error.startswith("InvalidDicom: bad/cut.dcm")
    fake = by_study["bad/fake.nii.gz"].error
    assert fake.startswith("invalid_scan:") and "fake.nii.gz" in fake
    summary = (folder / "out" / "summary.md").read_text(encoding="utf-8")
    assert "| answered | 7 |" in summary and "| failed | 3 |" in summary
    assert "| invalid_scan | 1 |" in summary and "| InvalidDicom | 1 |" in summary and "| scan_too_large | 1 |" in summary
    assert "read + guard + preprocess (CPU tasks)" in summary and "generate (model actors)" in summary


def test_the_reading_budget_is_shared_by_the_read_workers(archive_run, archive):
    """budget_mb=2 over 2 read workers: the 1.7 MiB volume is over one worker's 1 MiB share and fails its row."""
    _, rows, _ = archive_run
    large = rows.set_index("study_uid").loc[archive["large"]]
    assert large.error.startswith("scan_too_large:") and large.answer is None


def test_one_sr_per_answered_dicom_series(archive_run):
    from radfm.dicom.sr import read_sr

    _, rows, folder = archive_run
    dicom = rows[rows["series_uid"] != ""]
    written = sorted((folder / "sr").glob("*.dcm"))
    assert len(written) == 4 and set(dicom["sr_path"]) == {str(p) for p in written}
    for row in dicom.itertuples():
        report = json.dumps(read_sr(row.sr_path))
        assert row.answer in report and row.weights_sha256 in report


def test_vllm_is_refused_with_a_clear_error_before_ray_starts(tmp_path):
    from radfm.batch.ray_pipeline import EngineUnavailable

    with pytest.raises(EngineUnavailable, match=r"--engine vllm: .*use --engine transformers"):
        run_batch(str(tmp_path / "out"), folder=str(tmp_path), engine="vllm")
    assert not (tmp_path / "out" / "results").exists()
