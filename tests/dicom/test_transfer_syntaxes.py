"""The Storage SCP takes compressed instances as stored when a decoder here reads them, and refuses the rest.

pydicom ships real compressed files (JPEG 2000, JPEG-LS, RLE); each is C-STOREd in its own transfer
syntax, the only one proposed, so a node that offered uncompressed syntaxes alone would refuse it.
"""

from __future__ import annotations

import logging

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pynetdicom import AE

from radfm.dicom.transfer_syntaxes import decodable_storage_contexts, decodable_transfer_syntaxes
from radfm.node.job_queue import JobQueue
from radfm.node.node_config import NodeConfig
from radfm.node.storage_scp import StorageSCP

LOOPBACK = "127.0.0.1"
MPEG2 = "1.2.840.10008.1.2.4.100"  # video: no pixel decoder of pydicom reads it
STORED = {"JPEG 2000": "693_J2KI.dcm", "JPEG-LS": "MR_small_jpeg_ls_lossless.dcm", "RLE": "MR_small_RLE.dcm"}


@pytest.fixture()
def scp(tmp_path):
    config = NodeConfig.from_dict({"port": 0, "state_dir": str(tmp_path / "state"),
                                   "allowed_callers": [{"ae_title": "TESTSCU", "host": LOOPBACK}]})
    queue = JobQueue(config.state_path)
    server = StorageSCP(config, queue)
    server.start()
    yield server
    server.stop()
    queue.close()


def test_the_offered_contexts_carry_every_transfer_syntax_pydicom_can_decode_here():
    from pydicom.pixels import get_decoder

    offered = decodable_transfer_syntaxes()
    for name, file in STORED.items():
        syntax = str(pydicom.dcmread(get_testdata_file(file), stop_before_pixels=True).file_meta.TransferSyntaxUID)
        assert get_decoder(syntax).is_available, f"{name}: no decoder installed"
        assert syntax in offered, name
    assert MPEG2 not in offered
    contexts = decodable_storage_contexts()
    ct = [c for c in contexts if c.abstract_syntax == "1.2.840.10008.5.1.4.1.1.2"]
    assert len(ct) == 1 and set(ct[0].transfer_syntax) == set(offered)


@pytest.mark.parametrize("name", sorted(STORED))
def test_a_compressed_instance_is_received_as_stored(scp, name):
    ds = pydicom.dcmread(get_testdata_file(STORED[name]))
    syntax = ds.file_meta.TransferSyntaxUID
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(ds.SOPClassUID, [syntax])  # as stored: no uncompressed alternative proposed
    assoc = ae.associate(LOOPBACK, scp.port, ae_title="RADFM")
    try:
        assert assoc.is_established
        assert [c.transfer_syntax[0] for c in assoc.accepted_contexts] == [syntax]
        assert assoc.send_c_store(ds).Status == 0
    finally:
        assoc.release()
    assert scp.received == 1 and scp.queue.waiting_instances() == 1


def test_a_transfer_syntax_no_decoder_reads_is_refused_at_association_and_named_in_the_log(scp, caplog):
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context("1.2.840.10008.5.1.4.1.1.77.1.4.1", [MPEG2])  # Video Photographic Image Storage
    ae.add_requested_context("1.2.840.10008.1.1")
    with caplog.at_level(logging.WARNING, logger="radfm.node"):
        assoc = ae.associate(LOOPBACK, scp.port, ae_title="RADFM")
        try:
            assert assoc.is_established  # the echo context is accepted; the video one is not
            assert [c.abstract_syntax for c in assoc.accepted_contexts] == ["1.2.840.10008.1.1"]
            assert [c.abstract_syntax for c in assoc.rejected_contexts] == ["1.2.840.10008.5.1.4.1.1.77.1.4.1"]
        finally:
            assoc.release()
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert any(MPEG2 in line and "TESTSCU@127.0.0.1" in line and "no installed decoder" in line for line in refused), \
        refused
