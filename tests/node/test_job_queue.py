"""The durable job queue: stable studies become jobs once, interrupted jobs run again, deliveries back off."""

from __future__ import annotations

import hashlib
import json
import time

import pytest

from radfm.node.job_queue import JobQueue


def _receive(queue: JobQueue, study: str, series: str, sop: str, data: bytes = b"pixels", modality: str = "CT"):
    path = queue.instance_path(study, series, sop)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    queue.add_instance(study, series, sop, path, hashlib.sha256(data).hexdigest(), modality, "CHEST", "ORTHANC")


def test_a_study_becomes_one_job_only_when_stable(tmp_path):
    queue = JobQueue(tmp_path)
    _receive(queue, "1.2.3", "1.2.3.1", "1.2.3.1.1")
    _receive(queue, "1.2.3", "1.2.3.1", "1.2.3.1.2")
    _receive(queue, "1.2.3", "1.2.3.2", "1.2.3.2.1", modality="DX")
    assert queue.seal_stable(60.0) == []  # the last instance arrived just now
    (job_id,) = queue.seal_stable(0.0, now=time.time() + 1)
    job = queue.job(job_id)
    assert job.state == "queued" and job.study_uid == "1.2.3"
    assert sorted((s["series_uid"], s["modality"], s["instances"]) for s in job.series) == [
        ("1.2.3.1", "CT", 2), ("1.2.3.2", "DX", 1)]
    assert sorted(p.name for p in (job.folder / "input").rglob("*.dcm")) == ["1.2.3.1.1.dcm", "1.2.3.1.2.dcm",
                                                                           "1.2.3.2.1.dcm"]
    assert queue.waiting_instances() == 0 and not any(queue.incoming.iterdir())


def test_the_same_study_twice_gives_no_second_job_unless_its_instances_changed(tmp_path):
    queue = JobQueue(tmp_path)
    _receive(queue, "1.2.3", "1.2.3.1", "1.2.3.1.1")
    (first,) = queue.seal_stable(0.0, now=time.time() + 1)
    _receive(queue, "1.2.3", "1.2.3.1", "1.2.3.1.1")  # sent again, same bytes
    assert queue.seal_stable(0.0, now=time.time() + 1) == []
    assert queue.waiting_instances() == 0 and not any(queue.incoming.iterdir())
    _receive(queue, "1.2.3", "1.2.3.1", "1.2.3.1.1", data=b"corrected pixels")  # the instance changed
    (second,) = queue.seal_stable(0.0, now=time.time() + 1)
    assert second != first
    queue.fail_job(second, "test")
    _receive(queue, "1.2.3", "1.2.3.1", "1.2.3.1.1", data=b"corrected pixels")  # a failed study may be sent again
    assert len(queue.seal_stable(0.0, now=time.time() + 1)) == 1


def test_an_interrupted_job_is_queued_again_after_restart_until_its_attempts_run_out(tmp_path):
    queue = JobQueue(tmp_path)
    _receive(queue, "1.2.3", "1.2.3.1", "1.2.3.1.1")
    (job_id,) = queue.seal_stable(0.0, now=time.time() + 1)
    assert queue.claim().id == job_id and queue.claim() is None
    queue.close()  # the process dies here: the row says 'running'
    for attempt in (1, 2):
        queue = JobQueue(tmp_path)
        assert queue.recover(max_job_attempts=2) == 1
        if attempt == 1:
            assert queue.job(job_id).state == "queued"
            assert queue.claim().attempts == 2
            queue.close()
    record = queue.jobs()[0]
    assert record["state"] == "failed" and "interrupted 2 times" in record["reason"]


def test_deliveries_back_off_then_fail_with_the_reason_without_blocking_other_jobs(tmp_path):
    queue = JobQueue(tmp_path)
    for study in ("1.1", "2.2"):
        _receive(queue, study, f"{study}.1", f"{study}.1.1")
    first, second = queue.seal_stable(0.0, now=time.time() + 1)
    job = queue.claim()
    sr = job.folder / "sr.dcm"
    sr.write_bytes(b"report")
    queue.answered(job.id, [{"series_uid": f"{job.study_uid}.1", "rule": "ct", "sr_path": str(sr), "sop_uid": "9"}],
                   ["pacs"])
    assert not (job.folder / "input").exists()  # the images are dropped once the report exists
    waits = []
    for _ in range(3):
        (row,) = queue.due_deliveries(now=time.time() + 3600)
        before = time.time()
        queue.delivery_result(row, "association rejected", retry_first_s=1.0, retry_max_s=3.0, max_attempts=3)
        waits.append(queue.next_delivery_at() - before if queue.next_delivery_at() else None)
    assert waits[0] == pytest.approx(1.0, abs=0.5) and waits[1] == pytest.approx(2.0, abs=0.5) and waits[2] is None
    record = {j["id"]: j for j in queue.jobs()}[job.id]
    assert record["state"] == "failed" and "delivery to pacs failed: association rejected" in record["reason"]
    assert record["deliveries"][0]["attempts"] == 3
    assert queue.claim().id == second  # the next study was never blocked


def test_a_delivered_report_finishes_the_job_and_records_the_send_time(tmp_path):
    queue = JobQueue(tmp_path)
    _receive(queue, "1.1", "1.1.1", "1.1.1.1")
    queue.seal_stable(0.0, now=time.time() + 1)
    job = queue.claim()
    queue.add_timings(job.id, {"answered_at": time.time()})
    queue.answered(job.id, [{"series_uid": "1.1.1", "rule": "ct", "sr_path": "sr.dcm", "sop_uid": "9"}], ["a", "b"])
    rows = queue.due_deliveries()
    assert len(rows) == 2
    queue.delivery_result(rows[0], None, 1.0, 1.0, 3)
    assert queue.job(job.id).state == "sending"  # one destination still pending
    queue.delivery_result(rows[1], None, 1.0, 1.0, 3)
    record = queue.jobs()[0]
    assert record["state"] == "done" and record["finished_at"] and record["timings"]["send"] >= 0
    assert json.dumps(record)  # status --json can print it
