"""The node's job runner in process, with a counting answerer: series rules, SR, failures, no second report."""

from __future__ import annotations

import threading
import time

import pydicom
import pytest
from support.synthetic import write_chest_xray, write_ct_series

from radfm.answering.identity import ModelIdentity
from radfm.dicom.sr import read_sr
from radfm.node.node_config import NodeConfig
from radfm.node.node_runner import NodeRunner
from radfm.node.storage_scp import StorageSCP


class CountingAnswerer:
    """Reads scans with our transforms (so the request path does its real work) and answers a fixed sentence."""

    identity = ModelIdentity("test-model", "1", "0" * 64)
    max_images = 4

    def __init__(self) -> None:
        self.calls = 0
        self.active = self.peak = 0
        self.lock = threading.Lock()

    def prepare(self, paths):
        from radfm.transforms import preprocess_scan

        return [preprocess_scan(str(p), size_2d=(32, 32), size_3d=(32, 32), max_depth=4) for p in paths]

    def answer(self, prompt, images, options):
        with self.lock:
            self.calls += 1
            self.active += 1
            self.peak = max(self.peak, self.active)
        time.sleep(0.05)
        with self.lock:
            self.active -= 1
        return f"{len(images)} scan(s) of shape {tuple(images[0].shape)}"


@pytest.fixture()
def node(tmp_path):
    config = NodeConfig.from_dict({"port": 0, "state_dir": str(tmp_path / "state"), "max_studies_in_memory": 2,
                                   "allowed_callers": [{"ae_title": "TESTSCU", "host": "127.0.0.1"}]})
    runner = NodeRunner(config, answerer=CountingAnswerer())
    yield runner
    runner.path.close()
    runner.queue.close()


def _spool(node: NodeRunner, files) -> str:
    scp = StorageSCP(node.config, node.queue)  # its ingest is the C-STORE path after the allow-list
    for file in files:
        assert scp.ingest(file, "TESTSCU@127.0.0.1") == 0
    return pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID


def _run_all(node: NodeRunner) -> None:
    node.queue.seal_stable(0.0, now=time.time() + 1)
    while node.run_next():
        pass


def test_a_study_is_answered_per_rule_and_the_sr_references_its_series(node, tmp_path):
    ct = write_ct_series(tmp_path / "ct", slices=4, size=16)
    study = pydicom.dcmread(ct[0]).StudyInstanceUID
    dx = write_chest_xray(tmp_path / "dx", size=32, study_uid=study)
    _spool(node, [*ct, dx])
    _run_all(node)
    (record,) = node.queue.jobs()
    assert record["state"] == "done" and node.answerer.calls == 2  # no destinations: done once written
    by_rule = {r["rule"]: r for r in record["results"]}
    assert set(by_rule) == {"ct", "chest-xray"}
    sr = read_sr(by_rule["ct"]["sr_path"])
    assert sr["study_instance_uid"] == study and sr["verification"] == "UNVERIFIED"
    assert sorted(sr["referenced_sop_instance_uids"]) == sorted(pydicom.dcmread(f).SOPInstanceUID for f in ct)
    assert sr["prompt"] == "<image> Describe the findings of this CT scan." and sr["answer"].startswith("1 scan(s)")
    assert set(record["timings"]) >= {"receive", "queue_wait", "preprocess", "generate"}


def test_a_study_no_rule_selects_fails_with_the_reason(node, tmp_path):
    files = write_ct_series(tmp_path / "ct", slices=2, size=16)  # 2 < min_instances=4 of the CT rule
    _spool(node, files)
    node.queue.seal_stable(0.0, now=time.time() + 1)
    assert node.run_next() and not node.run_next()
    (record,) = node.queue.jobs()
    assert record["state"] == "failed" and "no series matches the rules (modalities in the study: CT)" in record["reason"]


def test_a_report_written_before_an_interruption_is_reused_not_generated_again(node, tmp_path):
    _spool(node, [write_chest_xray(tmp_path / "dx", size=32)])
    node.queue.seal_stable(0.0, now=time.time() + 1)
    job = node.queue.claim()
    node.run_job(job)
    (first,) = node.queue.jobs()[0]["results"]
    # as if the node died after writing the SR: the job runs again from 'running'
    node.queue._tx([("UPDATE jobs SET state = 'running' WHERE id = ?", (job.id,))])
    node.run_job(node.queue.job(job.id))
    (again,) = node.queue.jobs()[0]["results"]
    assert again["sop_uid"] == first["sop_uid"] and node.answerer.calls == 1


def test_the_running_node_answers_every_study_with_at_most_max_studies_in_memory_at_once(node, tmp_path):
    studies = [_spool(node, [write_chest_xray(tmp_path / f"dx{i}", size=32)]) for i in range(4)]
    node.start()
    try:
        deadline = time.monotonic() + 60
        while {job["state"] for job in node.queue.jobs()} != {"done"} or len(node.queue.jobs()) < 4:
            assert time.monotonic() < deadline, node.queue.jobs()
            time.sleep(0.1)
        assert sorted(job["study_uid"] for job in node.queue.jobs()) == sorted(studies)
    finally:
        node.request_stop()
        node.stop()
    assert 1 <= node.peak_active <= node.config.max_studies_in_memory == 2
    assert node.answerer.peak == 1  # one model thread, whatever the number of readers


def test_pull_mode_node_fetches_a_matching_study_over_dicomweb_and_stows_the_report_back(orthanc_factory, tmp_path):
    """The node's pull loop end to end against Orthanc (the answerer is the counting one: no model here)."""
    orthanc = orthanc_factory({})
    dx = write_chest_xray(tmp_path / "dx", size=32, patient_id="PULLNODE")
    orthanc.store_files([dx, write_chest_xray(tmp_path / "other", size=32, patient_id="NOTME")])
    study = pydicom.dcmread(dx, stop_before_pixels=True).StudyInstanceUID
    config = NodeConfig.from_dict({
        "port": 0, "state_dir": str(tmp_path / "state"), "stable_after_s": 0.5,
        "allowed_callers": [{"ae_title": "ORTHANC", "host": "127.0.0.1"}],
        "pull": {"url": orthanc.dicomweb, "filter": {"PatientID": "PULLNODE"}, "every_s": 0.5},
        "destinations": [{"name": "orthanc", "kind": "stow", "url": orthanc.dicomweb}]})
    runner = NodeRunner(config, answerer=CountingAnswerer())
    runner.start()
    try:
        deadline = time.monotonic() + 60
        while not (jobs := runner.queue.jobs()) or jobs[0]["state"] not in ("done", "failed"):
            assert time.monotonic() < deadline, jobs
            time.sleep(0.1)
    finally:
        runner.request_stop()
        runner.stop()
    assert [(job["study_uid"], job["state"]) for job in jobs] == [(study, "done")], jobs
    (sr,) = orthanc.srs_of_study(study)
    assert sr["00080060"]["Value"] == ["SR"]


def test_the_node_writes_no_patient_data_to_its_log_or_job_records(node, tmp_path, identifying_patient, patient_data,
                                                                  capfd, caplog, recwarn):
    """Real names have no "^" and may read like words; highdicom quotes them in a warning, pydicom and
    highdicom quote a birth date that is not a DICOM date. The node's log, its warnings and its job
    records (what `radfm node` shows as status) hold none of it, and the SR still carries the patient."""
    import json
    import logging

    caplog.set_level(logging.DEBUG)
    ct = write_ct_series(tmp_path / "ct", slices=4, size=16, description="AXIAL", patient_id=identifying_patient["id"])
    patient_data.give(ct, identifying_patient)
    capfd.readouterr()
    recwarn.clear()
    _spool(node, ct)
    _run_all(node)
    (record,) = node.queue.jobs()
    assert record["state"] == "done", record
    emitted = patient_data.emitted(capfd, caplog, recwarn) + json.dumps(node.queue.jobs())
    assert patient_data.leaks(emitted, identifying_patient) == []
    sr = pydicom.dcmread(record["results"][0]["sr_path"])
    assert str(sr.PatientName) == identifying_patient["name"] and sr.PatientID == identifying_patient["id"]


class _QuotingAnswerer(CountingAnswerer):
    """Fails as pydicom does on a birth date that is not a DICOM date: its message quotes the value."""

    def answer(self, prompt, images, options):
        raise ValueError("Unable to convert '1970-02-03' to 'DA' object")


def test_a_failed_job_records_its_reason_without_the_patient_value(tmp_path, patient_data, caplog):
    """The job's reason is what `radfm node status` shows; the library's wording stays, the value goes."""
    import json
    import logging

    caplog.set_level(logging.DEBUG)
    config = NodeConfig.from_dict({"port": 0, "state_dir": str(tmp_path / "state"), "max_attempts": 1,
                                   "allowed_callers": [{"ae_title": "TESTSCU", "host": "127.0.0.1"}]})
    runner = NodeRunner(config, answerer=_QuotingAnswerer())
    try:
        _spool(runner, write_ct_series(tmp_path / "ct", slices=4, size=16))
        _run_all(runner)
        (record,) = runner.queue.jobs()
        assert record["state"] == "failed" and "Unable to convert <withheld> to 'DA' object" in record["reason"]
        assert "1970-02-03" not in json.dumps(runner.queue.jobs()) + caplog.text
    finally:
        runner.path.close()
        runner.queue.close()
