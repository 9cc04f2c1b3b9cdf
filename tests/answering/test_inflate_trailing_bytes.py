"""inflate_to_disk on a deflated DICOM with bytes after the deflate stream's end (issue 28, found by the node fuzz).

pydicom (and so pynetdicom) pads an odd-length deflated data set with one byte: about half of the
deflated instances a PACS or pynetdicom sends. The inflate loop spun forever on that byte.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pydicom

from radfm.answering.scans import inflate_to_disk

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from hostile_node_peers import deflated_instance  # noqa: E402


def test_a_padding_byte_after_the_deflate_stream_is_ignored(tmp_path):
    path = deflated_instance(tmp_path / "padded.dcm", 1024, 1024, 1)  # 2 MiB inflated: more than one 1 MiB piece
    with path.open("ab") as out:
        out.write(b"\0")
    done = []
    worker = threading.Thread(target=lambda: done.append(inflate_to_disk(path, 1 << 24)), daemon=True)
    worker.start()
    worker.join(30)
    assert done == [True], "inflate_to_disk did not return"
    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian and len(ds.PixelData) == 1024 * 1024 * 2
