"""``radfm batch --dicomweb``: a QIDO-RS query against a real Orthanc, fetched through the node's guarded pull client.

Where Orthanc is not installed the test skips, except in CI (``CI=true``), where it fails (as in tests/node).
"""

from __future__ import annotations

import os

import pytest
from support.orthanc_lab import LabUnavailable, Orthanc

from radfm.batch.parquet_results import read_results
from radfm.batch.ray_pipeline import run_batch


@pytest.fixture
def orthanc(tmp_path):
    try:
        (tmp_path / "orthanc").mkdir()
        server = Orthanc(tmp_path / "orthanc", {})
        server.start()
    except LabUnavailable as error:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{error} is missing; CI must install it (apt-get install -y orthanc orthanc-dicomweb)")
        pytest.skip(f"{error} is not installed")
    yield server
    server.stop()


def test_a_qido_query_is_fetched_and_answered_per_the_rules_once(ray_session, orthanc, archive, tmp_path):
    from support.synthetic import write_chest_xray, write_ct_series

    ct_a = write_ct_series(tmp_path / "a", slices=4, size=32, patient_id="BATCH1")
    ct_b = write_ct_series(tmp_path / "b", slices=4, size=32, patient_id="BATCH2")
    xray = write_chest_xray(tmp_path / "c", size=64, patient_id="BATCH3")
    orthanc.store_files([*ct_a, *ct_b, xray])
    output = tmp_path / "out"
    outcome = run_batch(str(output), dicomweb=orthanc.dicomweb, qido="ModalitiesInStudy=CT",
                        rules=str(archive["rules"]), progress=False, max_new_tokens=8)
    rows = read_results(output)
    assert (outcome["answered"], outcome["failed"]) == (2, 0)  # the two CT studies; the X-ray was not asked for
    assert set(rows["origin"]) == {"dicomweb"} and set(rows["rule"]) == {"ct"}
    import pydicom

    expected = {str(pydicom.dcmread(files[0]).StudyInstanceUID) for files in (ct_a, ct_b)}
    assert set(rows["study_uid"]) == expected
    # a rerun asks again but fetches nothing twice and answers nothing twice
    again = run_batch(str(output), dicomweb=orthanc.dicomweb, qido="ModalitiesInStudy=CT", rules=str(archive["rules"]),
                      progress=False)
    assert (again["answered"], again["skipped"]) == (0, 2)
    assert len(read_results(output)) == 2
