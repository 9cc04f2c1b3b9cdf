"""The Storage SCP's network edge (issue 28): who may associate, bytes counted as they arrive, silent sockets.

Each test plays a hostile or careless peer against a running SCP in this process: pynetdicom as the
SCU (bound to 127.0.0.2 where a host not on the allow-list is needed: all of 127/8 is loopback on
Linux) and raw TCP sockets that send nothing or a lying PDU header.
"""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pydicom
import pytest
from pynetdicom import AE
from support.synthetic import CT_IMAGE_STORAGE, write_ct_series

from radfm.dicom.dicom_uid import is_dicom_uid
from radfm.node.job_queue import JobQueue
from radfm.node.node_config import NodeConfig
from radfm.node.storage_scp import StorageSCP

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))
from hostile_node_peers import idle_sockets  # noqa: E402  (the bench and fuzz use the same)

LOOPBACK = "127.0.0.1"
OTHER_HOST = "127.0.0.2"
MiB = 1024 * 1024
PDU = 16 * 1024  # the P-DATA size the SCP asks for


def _start(tmp_path, **limits) -> StorageSCP:
    config = NodeConfig.from_dict({"port": 0, "state_dir": str(tmp_path / "state"), "max_instance_mb": 1,
                                   "max_scan_mb": 512,
                                   "allowed_callers": [{"ae_title": "TESTSCU", "host": LOOPBACK}], **limits})
    server = StorageSCP(config, JobQueue(config.state_path))
    server.start()
    return server


@pytest.fixture()
def system_temp(tmp_path, monkeypatch):
    """The system's temp folder, where pynetdicom writes an instance as it arrives: a fresh one to watch."""
    folder = tmp_path / "system-temp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.fixture()
def scp(tmp_path, system_temp):
    server = _start(tmp_path)
    yield server
    server.stop()
    server.queue.close()


class FolderPeak:
    """Largest total size of the files in ``folder``, sampled every millisecond while in the ``with``."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.peak, self._stop = folder, 0, threading.Event()

    def _sample(self) -> None:
        while not self._stop.is_set():
            total = 0
            for path in self.folder.iterdir():
                try:
                    total += path.stat().st_size
                except OSError:
                    pass  # removed between listing and stat
            self.peak = max(self.peak, total)
            time.sleep(0.001)

    def __enter__(self) -> FolderPeak:
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        time.sleep(0.3)  # the connection closes after the association ends
        self._stop.set()
        self._thread.join()


def _big_instance(tmp_path, mib: int) -> pydicom.Dataset:
    (ct,) = write_ct_series(tmp_path / f"big{mib}", slices=1, size=16)
    ds = pydicom.dcmread(ct)
    side = int((mib * MiB // 2) ** 0.5)
    ds.Rows = ds.Columns = side
    ds.PixelData = bytes(side * side * 2)
    return ds


def _associate(port: int, title: str = "TESTSCU", host: str = LOOPBACK, contexts=(CT_IMAGE_STORAGE,)):
    ae = AE(ae_title=title)
    ae.add_requested_context("1.2.840.10008.1.1")
    for context in contexts:
        ae.add_requested_context(context)
    return ae.associate(LOOPBACK, port, ae_title="RADFM", bind_address=(host, 0))


def _echo_ok(scp: StorageSCP) -> bool:
    assoc = _associate(scp.port)
    try:
        return assoc.is_established and assoc.send_c_echo().Status == 0
    finally:
        assoc.release()


def test_a_20_mib_instance_from_a_host_not_on_the_allow_list_is_rejected_before_any_byte_is_written(
        scp, system_temp, tmp_path, caplog):
    """N7: the allowed AE title from 127.0.0.2 was accepted and its instance written whole before 0x0124."""
    ds = _big_instance(tmp_path, 20)
    with FolderPeak(system_temp) as temp:
        assoc = _associate(scp.port, host=OTHER_HOST)
        if assoc.is_established:
            assoc.send_c_store(ds)
            assoc.release()
    assert assoc.is_rejected and temp.peak == 0
    assert f"TESTSCU@{OTHER_HOST} rejected (AE title TESTSCU is allowed only from {LOOPBACK})" in caplog.text
    assert scp.queue.waiting_instances() == 0 and _echo_ok(scp)


def test_an_instance_over_max_instance_mb_is_cut_off_while_it_arrives(scp, system_temp, tmp_path, caplog):
    """N7: a 20 MiB instance with a 1 MiB cap: the temp folder never holds more than the cap and a PDU or two,
    the association is aborted and the partial file removed; the node answers the next caller."""
    ds = _big_instance(tmp_path, 20)
    with FolderPeak(system_temp) as temp:
        assoc = _associate(scp.port)
        assert assoc.is_established
        status = assoc.send_c_store(ds)
        if assoc.is_established:
            assoc.release()
    assert "Status" not in status and assoc.is_aborted  # no response: the node aborted the association
    assert 0 < temp.peak <= 1 * MiB + 2 * PDU + 1024
    assert not list(system_temp.iterdir())
    assert "an instance passed max_instance_mb=1 while it was received" in caplog.text
    assert scp.queue.waiting_instances() == 0 and _echo_ok(scp)


def test_a_pdu_header_claiming_2_gib_is_not_read(scp, caplog):
    """pynetdicom reads a PDU whole, whatever length its header states: the node closes such a connection."""
    with socket.create_connection((LOOPBACK, scp.port), timeout=10) as peer:
        peer.sendall(struct.pack(">BBL", 0x01, 0, 0x7FFFFFF0) + b"\0" * 64)
        started = time.perf_counter()
        try:
            closed = peer.recv(1) == b""
        except ConnectionResetError:
            closed = True
        assert closed and time.perf_counter() - started < 5
    assert "a PDU of 2147483632 bytes" in caplog.text
    assert _echo_ok(scp)


def test_eight_silent_sockets_do_not_lock_the_allowed_pacs_out(scp, tmp_path, caplog):
    """N8: eight connections that send nothing kept the allowed caller refused for about 30 s, and the log
    blamed its AE title. The study must be answered within a few seconds."""
    first, *files = write_ct_series(tmp_path / "study", slices=5, size=16)
    assoc = _associate(scp.port)  # the first instance read imports the readers: not part of what is timed
    assert assoc.send_c_store(pydicom.dcmread(first)).Status == 0
    assoc.release()
    silent = idle_sockets(LOOPBACK, scp.port, 8)
    try:
        time.sleep(0.3)
        started = time.perf_counter()
        assoc = _associate(scp.port)
        assert assoc.is_established
        statuses = [assoc.send_c_store(pydicom.dcmread(f)).Status for f in files]
        assoc.release()
        elapsed = time.perf_counter() - started
    finally:
        for sock in silent:
            sock.close()
    assert statuses == [0, 0, 0, 0] and elapsed < 5
    assert "not on the allow-list" not in caplog.text


def test_a_flood_of_silent_sockets_does_not_lock_the_allowed_pacs_out(scp, tmp_path):
    """N8, harder: 100 silent sockets opened at once. Each new one closes the oldest silent one, and its
    association thread must end then, not after the request timeout (pynetdicom's own association count
    would fill with them and refuse the PACS)."""
    silent = []
    try:
        for _ in range(100):
            silent += idle_sockets(LOOPBACK, scp.port, 1)
        started = time.perf_counter()
        assoc = _associate(scp.port)
        assert assoc.is_established
        assert assoc.send_c_echo().Status == 0
        assoc.release()
        assert time.perf_counter() - started < 5
    finally:
        for sock in silent:
            sock.close()


def test_silent_connections_are_closed_after_association_request_timeout_s(tmp_path, system_temp):
    """N8: a connection that sends no A-ASSOCIATE-RQ is closed after the short timeout (was 30 s)."""
    server = _start(tmp_path, association_request_timeout_s=1)
    try:
        with socket.create_connection((LOOPBACK, server.port), timeout=10) as peer:
            started = time.perf_counter()
            try:
                closed = peer.recv(1) == b""
            except ConnectionResetError:
                closed = True
            assert closed and time.perf_counter() - started < 4
    finally:
        server.stop()
        server.queue.close()


def test_allowed_associations_are_capped_per_host(tmp_path, system_temp, caplog):
    """N8: one host holds at most max_associations_per_host associations; other hosts keep their room."""
    server = _start(tmp_path, max_associations=4, max_associations_per_host=2,
                    allowed_callers=[{"ae_title": "TESTSCU", "host": LOOPBACK},
                                     {"ae_title": "TESTSCU", "host": OTHER_HOST}])
    held = []
    try:
        held = [_associate(server.port) for _ in range(2)]
        assert all(a.is_established for a in held)
        third = _associate(server.port)
        assert third.is_rejected
        assert "2 associations already open from 127.0.0.1 (max_associations_per_host)" in caplog.text
        other = _associate(server.port, host=OTHER_HOST)
        assert other.is_established
        held.append(other)
    finally:
        for assoc in held:
            assoc.release()
        server.stop()
        server.queue.close()


_MEMORY_PROBE = """
import json, resource, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from hostile_node_peers import deflated_instance
from radfm.node.job_queue import JobQueue
from radfm.node.node_config import NodeConfig
from radfm.node.storage_scp import StorageSCP
import radfm.answering.scans, radfm.transforms.guards, pydicom.filereader  # what a running node has imported
work = Path(sys.argv[2])
path = deflated_instance(work / "deflated.dcm", 2048, 2048, 16)  # 128 MiB of pixels, ~130 KiB on disk
config = NodeConfig.from_dict({"state_dir": str(work / "state"), "max_instance_mb": 8,
                               "allowed_callers": [{"ae_title": "A", "host": "127.0.0.1"}]})
scp = StorageSCP(config, JobQueue(config.state_path))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
status = scp.ingest(path, "A@127.0.0.1")
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"status": status, "size": path.stat().st_size, "grew_mib": (after - before) / 1024,
                  "stored": scp.queue.waiting_instances()}))
"""


def test_a_deflated_instance_inflating_to_128_mib_is_read_within_a_bounded_memory(tmp_path):
    """N6: the header check read a deflated instance whole in memory, twice (pydicom inflates it whole even
    for its header): +2x the inflated size. Now the guard inflates at most 16 MiB of it in memory and the
    header is read from a copy inflated to disk in 1 MiB pieces. Measured in a fresh process (peak RSS)."""
    result = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, str(REPO / "scripts"), str(tmp_path)],
                            capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["size"] < 256 * 1024 and found["status"] == 0 and found["stored"] == 1  # honest, and taken
    assert found["grew_mib"] < 64, found  # old code: +128 MiB and more


@pytest.mark.parametrize("value, valid", [
    ("1.2.840.10008.1.2", True), ("1", True), ("1.2.3\n", False), ("1.2.3\r\n", False), ("\n1.2", False),
    ("1.2.", False), ("", False), ("1..2", False), ("../../etc", False), ("1.2 ", False), ("1" * 65, False),
    (None, False), (1.2, False)])
def test_is_dicom_uid_takes_digit_groups_and_nothing_after(value, valid):
    """N3: ``^[0-9]+(\\.[0-9]+)*$`` with ``re.match`` took "1.2.3\\n" (``$`` matches before a final newline)."""
    assert is_dicom_uid(value) is valid


def test_the_pull_mode_skips_a_study_uid_ending_in_a_newline():
    """N3 on the DICOMweb side: a QIDO answer's StudyInstanceUID "1.2.3\\n" is not trusted."""
    from radfm.node.dicomweb_pull import _study_uid

    answers = [{"0020000D": {"vr": "UI", "Value": [uid]}} for uid in ("1.2.3\n", "1.2.4", "1.2.5\r\n")]
    assert [_study_uid(answer) for answer in answers] == [None, "1.2.4", None]


def test_no_module_keeps_its_own_copy_of_the_uid_pattern():
    """N3: every UID check in radfm/ goes through radfm.dicom.dicom_uid (one rule, one place)."""
    copies = [str(p.relative_to(REPO)) for p in (REPO / "radfm").rglob("*.py")
              if p.name != "dicom_uid.py" and "[0-9]+(\\.[0-9]+)*" in p.read_text(encoding="utf-8")]
    assert copies == []
