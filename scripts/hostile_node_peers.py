"""Hostile peers of the DICOM node (issue 28), written as the attacks, never held inflated.

    from hostile_node_peers import deflated_instance, idle_sockets

``deflated_instance(path, rows, columns, frames)``: a Deflated Explicit VR Little Endian CT image
whose header honestly claims ``rows x columns x frames`` 16-bit pixels, all zeros: 4096 x 4096 x 16
is the 510 KiB file that inflates to 512 MiB (N6). ``idle_sockets(host, port, n)``: ``n`` TCP
connections that send nothing (N8).
"""

from __future__ import annotations

import socket
import struct
import zlib
from pathlib import Path

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
_CHUNK = 8 * 1024**2


def deflated_instance(path: str | Path, rows: int = 4096, columns: int = 4096, frames: int = 16,
                      study: str = "1.2.826.0.1.3680043.8.498.1", series: str = "1.2.826.0.1.3680043.8.498.2",
                      sop: str = "1.2.826.0.1.3680043.8.498.3") -> Path:
    """Write the deflated instance to ``path`` (streamed: at most 8 MiB of zeros in memory); returns ``path``.

    Args:
        path: the file to write.
        rows, columns, frames: the honest pixel claim (16 bits each, zeros).
        study, series, sop: its UIDs.

    Returns:
        ``path``.
    """
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset, write_file_meta_info

    meta = FileMetaDataset()
    meta.TransferSyntaxUID = "1.2.840.10008.1.2.1.99"
    meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = sop
    ds = pydicom.Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = CT_IMAGE_STORAGE, sop, "CT"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.PatientName, ds.PatientID = "Synthetic^Deflated", "SYN-DEFLATED"
    ds.Rows, ds.Columns, ds.NumberOfFrames = rows, columns, frames
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    elements = DicomBytesIO()
    elements.is_little_endian, elements.is_implicit_VR = True, False
    write_dataset(elements, ds)
    pixels = rows * columns * frames * 2
    pixel_header = struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, pixels)
    preamble = DicomBytesIO()
    preamble.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(preamble, meta, enforce_standard=True)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    path = Path(path)
    with path.open("wb") as out:
        out.write(preamble.getvalue())
        out.write(compressor.compress(elements.getvalue() + pixel_header))
        zeros = bytes(_CHUNK)
        left = pixels
        while left:
            piece = min(left, _CHUNK)
            out.write(compressor.compress(zeros[:piece] if piece < _CHUNK else zeros))
            left -= piece
        out.write(compressor.flush(zlib.Z_FINISH))
    return path


def idle_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """``count`` connected TCP sockets that send nothing (close them when done).

    Args:
        host, port: the node.
        count: how many.

    Returns:
        The sockets.
    """
    return [socket.create_connection((host, port), timeout=5) for _ in range(count)]
