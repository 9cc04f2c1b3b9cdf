"""Generated attacks on a running Storage SCP (issue 28, Build 6): pynetdicom as the attacker.

Each example is one peer: a calling AE title and host (allowed pairs, allowed titles from the wrong
host, random titles), an instance whose data set is sized around ``max_instance_mb`` or a deflated one
whose pixels inflate past ``max_scan_mb``, UIDs that are not UIDs (a trailing newline among them), and
up to ten silent TCP sockets held open meanwhile. Whatever the peer does, the node must:

* reject a pair not on the allow-list at association, with nothing written to the temp folder;
* never hold more than the cap and a PDU or two of an instance in the temp folder, never keep a
  partial file, and store only instances within the cap whose UIDs are UIDs;
* answer the allowed caller right after, within a few seconds, silent sockets still open;
* never blame the AE title of an allowed title.

CI runs ``RADFM_NODE_EDGE_EXAMPLES`` examples (default 20, derandomized); ``scripts/fuzz_node_edge.py``
runs thousands and prints :data:`COUNTS`.
"""

from __future__ import annotations

import io
import logging
import os
import sys
import tempfile
import threading
import time
import warnings
from collections import Counter
from pathlib import Path

import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.uid import DeflatedExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from support.synthetic import CT_IMAGE_STORAGE

from radfm.dicom.dicom_uid import is_dicom_uid
from radfm.node.job_queue import JobQueue
from radfm.node.node_config import NodeConfig
from radfm.node.storage_scp import StorageSCP

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from hostile_node_peers import idle_sockets  # noqa: E402

EXAMPLES = int(os.environ.get("RADFM_NODE_EDGE_EXAMPLES", "20"))
MiB = 1024 * 1024
CAP = 1 * MiB  # max_instance_mb
SCAN_MB = 16  # max_scan_mb: a deflated instance claiming more is refused
SLACK = 2 * 16 * 1024 + 1024  # what may be written past the cap before the abort lands: the PDU in hand and one more
ALLOWED = {("TESTSCU", "127.0.0.1"), ("OTHERSCU", "127.0.0.3")}
HOSTS = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
COUNTS: Counter = Counter()  # outcome -> examples, read by scripts/fuzz_node_edge.py

_AE_CHARS = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) != "\\")
BAD_UIDS = {"trailing_newline": "1.2.3.4\n", "traversal": "../../etc", "letters": "1.2.abc",
            "too_long": "1." + "2" * 70, "empty_groups": "1..2", "internal_newline": "1.2\n3"}


class _Logs(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


class _Node:
    """One SCP for all examples, with its own system temp folder watched by a sampler thread."""

    def __init__(self, root: Path) -> None:
        self.temp = root / "system-temp"
        self.temp.mkdir()
        self._old_tempdir, tempfile.tempdir = tempfile.tempdir, str(self.temp)
        config = NodeConfig.from_dict({"port": 0, "state_dir": str(root / "state"), "max_instance_mb": CAP // MiB,
                                       "max_scan_mb": SCAN_MB,
                                       "allowed_callers": [{"ae_title": t, "host": h} for t, h in sorted(ALLOWED)]})
        self.scp = StorageSCP(config, JobQueue(config.state_path))
        self.scp.start()
        self.peak = 0
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()
        self.logs = _Logs()
        logging.getLogger("radfm.node").addHandler(self.logs)
        logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)  # the attacker's side of each rejection

    def _sample(self) -> None:
        while not self._stop.is_set():
            total = 0
            for path in self.temp.iterdir():
                try:
                    total += path.stat().st_size
                except OSError:
                    pass
            self.peak = max(self.peak, total)
            time.sleep(0.001)

    def close(self) -> None:
        self._stop.set()
        self._sampler.join()
        logging.getLogger("radfm.node").removeHandler(self.logs)
        self.scp.stop()
        self.scp.queue.close()
        tempfile.tempdir = self._old_tempdir


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    made = _Node(tmp_path_factory.mktemp("edge"))
    yield made
    made.close()


@st.composite
def peers(draw) -> dict:
    allowed_pair = st.sampled_from(sorted(ALLOWED))
    title, host = draw(st.one_of(allowed_pair, allowed_pair,  # most peers get in: what they send is the attack
                                 st.tuples(st.sampled_from(sorted({t for t, _ in ALLOWED})), st.sampled_from(HOSTS)),
                                 st.tuples(st.text(_AE_CHARS, min_size=1, max_size=16), st.sampled_from(HOSTS))))
    deflated = draw(st.booleans())
    return {
        "title": title,
        "host": host,
        "deflated": deflated,
        # the data set's bytes: mostly around the cap, some small, some far over
        "pixels": draw(st.one_of(st.integers(CAP - 48 * 1024, CAP + 48 * 1024), st.integers(64, 64 * 1024),
                                 st.integers(CAP, 3 * CAP))) if not deflated else
        draw(st.sampled_from([1, 8, 24, 40])) * MiB,  # inflated sizes around max_scan_mb
        "uid": draw(st.one_of(st.just("valid"), st.sampled_from(sorted(BAD_UIDS)))),
        "uid_field": draw(st.sampled_from(["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"])),
        "silent": draw(st.one_of(st.just(0), st.integers(0, 10))),
    }


def _instance(peer: dict) -> pydicom.Dataset:
    warnings.simplefilter("ignore", UserWarning)  # pydicom warns about the bad UIDs we mean to send
    ds = pydicom.Dataset()
    ds.SOPClassUID, ds.Modality = CT_IMAGE_STORAGE, "CT"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid(), generate_uid()
    if peer["uid"] != "valid":
        field = peer["uid_field"]
        if peer["uid"] == "too_long" and field == "SOPInstanceUID":
            field = "SeriesInstanceUID"  # the attacker's own pynetdicom refuses to put it in the C-STORE command
        setattr(ds, field, BAD_UIDS[peer["uid"]])
    ds.Columns = 1024  # 16-bit: 2 KiB a row
    ds.Rows = max(1, peer["pixels"] // 2048)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.PixelData = bytes(ds.Rows * ds.Columns * 2)
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian if peer["deflated"] else ImplicitVRLittleEndian
    return ds


def _wire_bytes(ds: pydicom.Dataset) -> int:
    """The data set's bytes as the SCU sends them (implicit VR; deflated ones are small on the wire)."""
    out = io.BytesIO()
    ds.save_as(out, implicit_vr=True, little_endian=True, enforce_file_format=False)
    return len(out.getvalue())


def run_peer(node: _Node, peer: dict) -> str:
    """Play ``peer`` against ``node``; check what the node must guarantee; returns the outcome's name."""
    scp = node.scp
    node.logs.lines.clear()
    node.peak = 0
    stored_before = scp.queue.waiting_instances()
    silent = idle_sockets("127.0.0.1", scp.port, peer["silent"]) if peer["silent"] else []
    try:
        ds = _instance(peer)
        syntax = ds.file_meta.TransferSyntaxUID
        ae = AE(ae_title=peer["title"])
        ae.add_requested_context(CT_IMAGE_STORAGE, [syntax])
        assoc = ae.associate("127.0.0.1", scp.port, ae_title="RADFM", bind_address=(peer["host"], 0))
        allowed = (peer["title"], peer["host"]) in ALLOWED
        if not allowed:
            assert assoc.is_rejected, (peer, assoc.is_established, assoc.is_aborted, node.logs.lines)
            assert node.peak == 0, "bytes written for a caller not on the allow-list"
            outcome = "rejected at association (title/host pair not allowed)"
        else:
            assert assoc.is_established, (peer, node.logs.lines)
            status = assoc.send_c_store(ds)
            if assoc.is_established:
                assoc.release()
            code = status.get("Status") if status is not None else None
            size = _wire_bytes(ds) if not peer["deflated"] else 0
            if code is None:  # aborted by the node: only past the cap
                assert size > CAP - 16 * 1024, (peer, size)
                outcome = "aborted while received (over max_instance_mb)"
            elif code == 0:
                assert size <= CAP, (peer, size)
                assert peer["pixels"] <= SCAN_MB * MiB
                outcome = "stored"
            else:
                outcome = f"refused with status 0x{code:04X}"
                if peer["deflated"] and peer["pixels"] > SCAN_MB * MiB:
                    assert code == 0xA700, peer
            if peer["uid"] != "valid" and peer["uid"] != "trailing_newline":
                assert code != 0, ("a bad UID was stored", peer)
            if "calling AE title not on the allow-list" in " ".join(node.logs.lines):
                raise AssertionError(f"an allowed title was blamed: {node.logs.lines}")
        # the allowed caller is answered at once, the silent sockets still open
        started = time.perf_counter()
        echo = AE(ae_title="TESTSCU")
        echo.add_requested_context("1.2.840.10008.1.1")
        check = echo.associate("127.0.0.1", scp.port, ae_title="RADFM")
        assert check.is_established and check.send_c_echo().Status == 0, node.logs.lines
        check.release()
        assert time.perf_counter() - started < 5
    finally:
        for sock in silent:
            sock.close()
    deadline = time.monotonic() + 3
    while any(node.temp.iterdir()) and time.monotonic() < deadline:  # the connection closes after the abort
        time.sleep(0.02)
    assert not any(node.temp.iterdir()), "a partial instance was left in the temp folder"
    assert node.peak <= CAP + SLACK, node.peak
    for path in scp.queue.incoming.rglob("*"):
        if path.is_file():
            _, series, name = path.relative_to(scp.queue.incoming).parts  # study_key(study)/series/sop.dcm
            assert is_dicom_uid(series) and is_dicom_uid(name.removesuffix(".dcm")), path
            path.unlink()  # keep the disk small over thousands of examples
    if outcome == "stored":
        assert scp.queue.waiting_instances() == stored_before + 1
    if silent:
        COUNTS["with silent sockets open"] += 1
    COUNTS[outcome] += 1
    return outcome


@settings(max_examples=EXAMPLES, deadline=None, derandomize=EXAMPLES <= 200, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(peer=peers())
def test_generated_peers_never_get_past_the_edge(node, peer):
    run_peer(node, peer)
