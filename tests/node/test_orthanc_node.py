"""The node against a real PACS (Debian's Orthanc with its DICOMweb plugin), end to end, with faults.

One Orthanc and one node process (``radfm node run``, the demo model) serve the module, on free
ports of 127.0.0.1. Studies go modality -> Orthanc (C-STORE) -> node (Orthanc's REST
``/modalities/radfm/store``) -> demo model -> SR -> Orthanc (C-STORE and STOW-RS), found by QIDO-RS.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pydicom
import pytest
from pynetdicom import AE
from support.synthetic import write_chest_xray, write_ct_series

pytestmark = pytest.mark.slow


def _send_through_orthanc(orthanc, files: list[Path]) -> str:
    orthanc.store_files(files)
    study_uid = pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID
    orthanc.push_study(study_uid, "radfm")
    return study_uid


def _one_sr(orthanc, study_uid: str, tmp_path: Path) -> pydicom.Dataset:
    """The study's only SR, fetched by WADO-RS after QIDO-RS found it."""
    from dicomweb_client.api import DICOMwebClient

    found = orthanc.srs_of_study(study_uid)
    assert len(found) == 1, f"expected exactly one SR in study {study_uid}, QIDO found {len(found)}"
    series_uid, sop_uid = found[0]["0020000E"]["Value"][0], found[0]["00080018"]["Value"][0]
    client = DICOMwebClient(url=orthanc.dicomweb)
    sr = client.retrieve_instance(study_uid, series_uid, sop_uid)
    path = tmp_path / f"{sop_uid}.dcm"
    sr.save_as(path, enforce_file_format=True)
    return pydicom.dcmread(path)


def _dciodvfy_errors(path: Path) -> list[str]:
    run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]


def test_ct_and_chest_xray_go_through_orthanc_and_their_reports_come_back(pacs, tmp_path, patient_data):
    orthanc, node = pacs
    ct_files = write_ct_series(tmp_path / "ct", slices=8, size=64)
    dx_file = write_chest_xray(tmp_path / "dx", size=128)
    # real names: one component ("PLA", a birth date that is not a DICOM date), a name with a space
    patients = {"ct": patient_data.patients[0], "dx": patient_data.patients[1]}
    patient_data.give(ct_files, patients["ct"])
    patient_data.give([dx_file], patients["dx"])
    shown = []
    studies = {"ct": _send_through_orthanc(orthanc, ct_files), "dx": _send_through_orthanc(orthanc, [dx_file])}
    sources = {"ct": ct_files, "dx": [dx_file]}
    for kind, study_uid in studies.items():
        job = node.wait_for(study_uid)
        assert job["state"] == "done", job["reason"]
        sr = _one_sr(orthanc, study_uid, tmp_path)
        assert sr.Modality == "SR" and sr.StudyInstanceUID == study_uid
        assert sr.VerificationFlag == "UNVERIFIED" and sr.CompletionFlag == "COMPLETE"
        source_headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in sources[kind]]
        evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
        assert [s.SeriesInstanceUID for s in evidence] == [source_headers[0].SeriesInstanceUID]
        assert sorted(i.ReferencedSOPInstanceUID for i in evidence[0].ReferencedSOPSequence) == sorted(
            h.SOPInstanceUID for h in source_headers)
        path = tmp_path / f"{kind}-sr.dcm"
        sr.save_as(path)
        assert _dciodvfy_errors(path) == []
        status = subprocess.run(
            [sys.executable, "-m", "radfm.cli", "node", "status", "--config", str(node.config_path), "--json"],
            capture_output=True, text=True, check=True, timeout=120)
        shown.append(status.stdout + status.stderr)
        deliveries = json.loads(status.stdout)
        record = next(j for j in deliveries["jobs"] if j["study_uid"] == study_uid)
        assert {d["destination"]: d["state"] for d in record["deliveries"]} == {
            "orthanc-dimse": "delivered", "orthanc-stow": "delivered"}
        assert set(record["timings"]) >= {"receive", "queue_wait", "preprocess", "generate", "send"}
    assert str(sr.PatientName) == patients["dx"]["name"]  # the SR still carries the patient
    shown.append(node.log_path.read_text(errors="replace"))
    for patient in patients.values():
        assert patient_data.leaks("\n".join(shown), patient) == []


@pytest.mark.parametrize("file", ["693_J2KI.dcm", "MR_small_RLE.dcm"])
def test_a_compressed_study_is_sent_as_stored_and_its_report_comes_back(pacs, tmp_path, file):
    """pydicom's real JPEG 2000 CT and RLE MR: Orthanc may not transcode (AllowTranscoding false)."""
    from pydicom.data import get_testdata_file

    orthanc, node = pacs
    path = Path(get_testdata_file(file))
    header = pydicom.dcmread(path, stop_before_pixels=True)
    stored = orthanc.session.post(f"{orthanc.url}/instances", data=path.read_bytes(), timeout=60)  # kept as is
    stored.raise_for_status()
    syntax = orthanc.session.get(f"{orthanc.url}/instances/{stored.json()['ID']}/metadata/TransferSyntax", timeout=30)
    assert syntax.text.strip() == header.file_meta.TransferSyntaxUID
    orthanc.push_study(header.StudyInstanceUID, "radfm")  # HTTP 500 where the node refuses the syntax
    job = node.wait_for(header.StudyInstanceUID)
    assert job["state"] == "done", job["reason"]
    sr = _one_sr(orthanc, header.StudyInstanceUID, tmp_path)
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
    assert [i.ReferencedSOPInstanceUID for i in evidence[0].ReferencedSOPSequence] == [header.SOPInstanceUID]


def test_the_same_study_sent_again_gives_no_second_report(pacs, tmp_path):
    orthanc, node = pacs
    files = write_chest_xray(tmp_path / "dx", size=64)
    study_uid = _send_through_orthanc(orthanc, [files])
    first = node.wait_for(study_uid)
    orthanc.push_study(study_uid, "radfm")  # the PACS sends it again, unchanged
    time.sleep(3.5)  # longer than stable_after_s: the node has sealed (and dropped) the repeat
    assert [job["id"] for job in node.jobs() if job["study_uid"] == study_uid] == [first["id"]]
    assert len(orthanc.srs_of_study(study_uid)) == 1


def test_a_calling_ae_not_on_the_allow_list_is_refused_and_bad_instances_do_not_stop_the_node(pacs, tmp_path):
    _, node = pacs
    assert not node.echo("INTRUDER")
    (ct,) = write_ct_series(tmp_path / "ct", slices=1, size=16)
    too_big = pydicom.dcmread(ct)
    too_big.Rows = too_big.Columns = 2048
    too_big.PixelData = bytes(2048 * 2048 * 2)  # 8 MiB > max_instance_mb=4
    bad_uid = pydicom.dcmread(ct)
    bad_uid.StudyInstanceUID = "../../x"
    for ds in (too_big, bad_uid):
        ae = AE(ae_title="TESTSCU")
        ae.add_requested_context(ds.SOPClassUID)
        assoc = ae.associate(node.host, node.port, ae_title="RADFM")
        status = assoc.send_c_store(ds)
        assoc.release()
        assert status.get("Status") != 0  # the oversized one: the node aborts the association while it arrives
        assert node.process.poll() is None and node.echo()


def test_orthanc_down_while_the_report_is_sent_gets_it_after_restart_exactly_once(pacs, tmp_path):
    orthanc, node = pacs
    study_uid = _send_through_orthanc(orthanc, [write_chest_xray(tmp_path / "dx", size=64)])
    orthanc.stop(kill=True)  # gone at once; the node still waits stable_after_s (2 s) before it starts the job
    deadline = time.monotonic() + 60
    while True:
        job = node.job_of(study_uid)
        if job is not None and job["state"] == "sending":
            with sqlite3.connect(f"file:{node.folder / 'state' / 'node.sqlite'}?mode=ro", uri=True) as db:
                tries = db.execute("SELECT MAX(attempts) FROM deliveries WHERE job_id = ?", (job["id"],)).fetchone()[0]
            if tries >= 2:
                break
        assert time.monotonic() < deadline, f"the node did not try to deliver: {job}"
        time.sleep(0.1)
    orthanc.start()
    job = node.wait_for(study_uid)
    assert job["state"] == "done", job["reason"]
    _one_sr(orthanc, study_uid, tmp_path)


def test_a_node_killed_mid_job_finishes_the_job_after_restart_with_one_report(pacs, tmp_path):
    orthanc, node = pacs
    files = write_ct_series(tmp_path / "ct", slices=48, size=256)  # long enough to be caught while it runs
    study_uid = _send_through_orthanc(orthanc, files)
    deadline = time.monotonic() + 60
    while (job := node.job_of(study_uid)) is None or job["state"] == "queued":
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.005)
    node.kill9()
    assert job["state"] == "running", f"the job was not caught mid-run: {job['state']}"
    assert node.job_of(study_uid)["state"] == "running"  # what the dead node left on disk
    node.start()
    job = node.wait_for(study_uid)
    assert job["state"] == "done" and job["attempts"] == 2, job
    assert len([j for j in node.jobs() if j["study_uid"] == study_uid]) == 1
    _one_sr(orthanc, study_uid, tmp_path)


def test_dicomweb_pull_fetches_new_matching_studies_once(pacs, tmp_path):
    """QIDO-RS finds the study by the filter, WADO-RS fetches it into the spool; a second poll takes nothing."""
    from radfm.node.dicomweb_pull import DicomwebPull
    from radfm.node.job_queue import JobQueue
    from radfm.node.node_config import NodeConfig
    from radfm.node.storage_scp import StorageSCP

    orthanc, _ = pacs
    files = write_ct_series(tmp_path / "ct", slices=3, size=16, patient_id="PULL001")
    orthanc.store_files(files + [write_chest_xray(tmp_path / "dx", size=16, patient_id="OTHER")])
    config = NodeConfig.from_dict({"state_dir": str(tmp_path / "state"), "allowed_callers": [
        {"ae_title": "ORTHANC", "host": "127.0.0.1"}], "pull": {"url": orthanc.dicomweb, "filter": {"PatientID": "PULL001"}}})
    queue = JobQueue(config.state_path)
    puller = DicomwebPull(config, StorageSCP(config, queue))
    assert puller.poll_once() == 3
    assert puller.poll_once() == 0
    study_uid = pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID
    assert queue.pending_count(study_uid) == 3 and queue.waiting_instances() == 3
    queue.close()
