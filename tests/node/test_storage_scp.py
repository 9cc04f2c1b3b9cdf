"""The Storage SCP against hostile callers: allow-list by AE title and host, bad instances refused, node alive."""

from __future__ import annotations

import zlib

import pydicom
import pytest
from pynetdicom import AE
from support.synthetic import CT_IMAGE_STORAGE, write_ct_series

from radfm.node.job_queue import JobQueue
from radfm.node.node_config import NodeConfig
from radfm.node.storage_scp import StorageSCP

LOOPBACK = "127.0.0.1"


@pytest.fixture()
def scp(tmp_path):
    config = NodeConfig.from_dict({"port": 0, "state_dir": str(tmp_path / "state"), "max_instance_mb": 1,
                                   "max_scan_mb": 8, "max_instances_per_study": 10,
                                   "allowed_callers": [{"ae_title": "TESTSCU", "host": LOOPBACK},
                                                       {"ae_title": "ELSEWHERE", "host": "10.1.2.3"}]})
    queue = JobQueue(config.state_path)
    server = StorageSCP(config, queue)
    server.start()
    yield server
    server.stop()
    queue.close()


def _associate(scp: StorageSCP, title: str, contexts=(CT_IMAGE_STORAGE,)):
    ae = AE(ae_title=title)
    ae.add_requested_context("1.2.840.10008.1.1")
    for context in contexts:
        ae.add_requested_context(context)
    return ae.associate(LOOPBACK, scp.port, ae_title="RADFM")


def _echo_ok(scp: StorageSCP) -> bool:
    assoc = _associate(scp, "TESTSCU")
    try:
        return assoc.is_established and assoc.send_c_echo().Status == 0
    finally:
        assoc.release()


def test_allowed_caller_stores_a_series_and_the_instances_are_spooled(scp, tmp_path):
    files = write_ct_series(tmp_path / "ct", slices=3, size=16)
    assoc = _associate(scp, "TESTSCU")
    statuses = [assoc.send_c_store(pydicom.dcmread(f)).Status for f in files]
    assoc.release()
    assert statuses == [0, 0, 0]
    assert scp.queue.waiting_instances() == 3 and scp.received == 3


def test_a_calling_ae_not_on_the_allow_list_is_rejected_at_association(scp):
    assoc = _associate(scp, "INTRUDER")
    assert assoc.is_rejected and not assoc.is_established
    assert _echo_ok(scp)


def test_an_allowed_title_from_another_host_is_rejected_at_association(scp, caplog):
    assoc = _associate(scp, "ELSEWHERE")  # allowed only from 10.1.2.3; this connection is from 127.0.0.1
    assert assoc.is_rejected and not assoc.is_established
    assert "ELSEWHERE@127.0.0.1 rejected (AE title ELSEWHERE is allowed only from 10.1.2.3)" in caplog.text
    assert scp.queue.waiting_instances() == 0 and _echo_ok(scp)


def _hostile_instances(tmp_path) -> dict[str, pydicom.Dataset]:
    (ct,) = write_ct_series(tmp_path / "base", slices=1, size=16)
    cases = {}
    ds = pydicom.dcmread(ct)
    ds.StudyInstanceUID = "../../../etc"  # would be a path if trusted
    cases["uid_traversal"] = ds
    ds = pydicom.dcmread(ct)
    ds.Rows = ds.Columns = 65535  # the header claims 8 GiB of pixels (max_scan_mb=8)
    ds.NumberOfFrames = 1
    cases["pixel_claim"] = ds
    ds = pydicom.dcmread(ct)
    ds.SeriesInstanceUID = "1.2.x;rm -rf"  # not a UID (would become a folder name if trusted)
    cases["bad_series_uid"] = ds
    return cases


def test_malformed_instances_are_refused_and_the_node_keeps_running(scp, tmp_path):
    for name, ds in _hostile_instances(tmp_path).items():
        assoc = _associate(scp, "TESTSCU")
        status = assoc.send_c_store(ds)
        assoc.release()
        assert status is not None and status.Status != 0, name
        assert _echo_ok(scp), f"the node stopped answering after {name}"
    assert scp.queue.waiting_instances() == 0 and scp.refused == 3
    assert not any(p.is_file() for p in scp.queue.incoming.rglob("*"))


def test_a_deflate_bomb_is_refused_by_the_transforms_guard(scp, tmp_path, caplog):
    """Deflated Explicit VR: a 16x16 header over 16 MiB of zeros, shipped as a few kB; the guard inflates no
    further than the header describes (radfm.transforms.guards.check_dicom) and refuses it."""
    (ct,) = write_ct_series(tmp_path / "base", slices=1, size=16)
    ds = pydicom.dcmread(ct)
    ds.PixelData = bytes(16 << 20)
    deflated = pydicom.uid.DeflatedExplicitVRLittleEndian
    ds.file_meta.TransferSyntaxUID = deflated
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(CT_IMAGE_STORAGE, deflated)
    assoc = ae.associate(LOOPBACK, scp.port, ae_title="RADFM")
    assert assoc.is_established
    status = assoc.send_c_store(ds)
    assoc.release()
    assert len(zlib.compress(bytes(16 << 20))) < 1 << 20  # what the sender ships is small
    assert status.Status == 0xA700
    assert "refused by the scan guard" in caplog.text and "beyond what its header describes" in caplog.text
    assert scp.queue.waiting_instances() == 0 and _echo_ok(scp)


def test_a_study_over_the_instance_limit_is_refused_past_the_limit(scp, tmp_path):
    files = write_ct_series(tmp_path / "ct", slices=12, size=8)
    assoc = _associate(scp, "TESTSCU")
    statuses = [assoc.send_c_store(pydicom.dcmread(f)).Status for f in files]
    assoc.release()
    assert statuses[:10] == [0] * 10 and statuses[10:] == [0xA700, 0xA700]
