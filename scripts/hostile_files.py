"""Hostile scan files for tests and the bad-input sweep (issue 22): written as the attacks, never held inflated.

    from hostile_files import deflated_dicom_bomb, hostile_headers

``hostile_headers(secret)``: file name -> bytes of NRRD/MetaImage headers whose bare reader
(pynrrd, ITK's MetaIO) reads ``secret``, a file outside the header's folder: the 22-H1 variants.
``deflated_dicom_bomb(path, junk)``: a Deflated Explicit VR Little Endian DICOM whose header
describes an 8 x 8 image and whose deflate stream inflates to ``junk`` bytes more (22-H2).
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

CHUNK = 64 * 1024**2


def hostile_headers(secret: str | Path, side: int = 16) -> dict[str, bytes]:
    """Headers pointing at ``secret`` (a ``side`` x ``side`` uint8 image claimed), one per reported bypass."""
    target = str(secret).encode()
    body = f"type: uint8\ndimension: 2\nsizes: {side} {side}\nencoding: raw\nbyte skip: -1\n".encode()
    meta = f"ObjectType = Image\nNDims = 2\nDimSize = {side} {side}\nElementType = MET_UCHAR\nHeaderSize = -1\n".encode()
    return {
        "plain.nhdr": b"NRRD0004\n" + body + b"data file: " + target + b"\n",
        "non_ascii_field.nhdr": b"NRRD0004\n" + body + b"data\x80 file: " + target + b"\n",  # (a)
        "long_comments.nhdr": b"NRRD0004\n" + b"# padding\n" * 110_000 + body + b"data file: " + target + b"\n",  # (b)
        "bom.nrrd": b"\xef\xbb\xbfNRRD0004\n" + body + b"data file: " + target + b"\n",  # (c)
        "colon.mhd": meta + b"ElementDataFile : " + target + b"\n",  # (d)
        "double_equals.mhd": meta + b"ElementDataFile == " + target + b"\n",
        "wrong_size.nhdr": b"NRRD0004\ntype: uint8\ndimension: 2\nsizes: 999 999\nencoding: raw\nbyte skip: -1\n"
                           b"data file: " + target + b"\n",  # (e) the error would state the file's size
    }


def deflated_dicom_bomb(path: str | Path, junk: int) -> Path:
    """Write the bomb: about ``junk / 1030`` bytes on disk (a 64 MiB flushed deflate block of zeros repeated)."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset, write_file_meta_info

    meta = FileMetaDataset()
    meta.TransferSyntaxUID = "1.2.840.10008.1.2.1.99"
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    meta.MediaStorageSOPInstanceUID = "1.2.3.4.5"
    ds = pydicom.Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID, "OT"
    ds.SeriesInstanceUID = "1.2.3.4"
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 8, 8, 7
    ds.SamplesPerPixel, ds.PixelRepresentation, ds.PhotometricInterpretation = 1, 0, "MONOCHROME2"
    elements = DicomBytesIO()
    elements.is_little_endian, elements.is_implicit_VR = True, False
    write_dataset(elements, ds)
    pixel_header = struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, junk)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    head = compressor.compress(elements.getvalue() + pixel_header) + compressor.flush(zlib.Z_FULL_FLUSH)
    block = compressor.compress(bytes(CHUNK)) + compressor.flush(zlib.Z_FULL_FLUSH)
    rest = compressor.compress(bytes(junk % CHUNK)) + compressor.flush(zlib.Z_FINISH)
    preamble = DicomBytesIO()
    preamble.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(preamble, meta, enforce_standard=True)
    path = Path(path)
    path.write_bytes(preamble.getvalue() + head + block * (junk // CHUNK) + rest)
    return path


def deflated_multiframe_dicom(path: str | Path, rows: int, columns: int, frames: int) -> Path:
    """An honest Deflated Explicit VR Little Endian multi-frame DICOM: ``frames`` x ``rows`` x ``columns`` uint16.

    The pixels are real values (a ramp along the row, shifted per frame), so the file reads as an
    image; rows repeat, so the stream deflates about 1000:1 (4096 x 4096 x 16 frames: 512 MiB of
    pixels in about 0.5 MB). Written row by row: never held inflated.
    """
    import numpy as np
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset, write_file_meta_info

    meta = FileMetaDataset()
    meta.TransferSyntaxUID = "1.2.840.10008.1.2.1.99"
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7.3"  # Multi-frame Grayscale Word SC
    meta.MediaStorageSOPInstanceUID = "1.2.3.4.6"
    ds = pydicom.Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID, "OT"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.3.5", "1.2.3.4"
    ds.Rows, ds.Columns, ds.NumberOfFrames = rows, columns, frames
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.SamplesPerPixel, ds.PixelRepresentation, ds.PhotometricInterpretation = 1, 0, "MONOCHROME2"
    elements = DicomBytesIO()
    elements.is_little_endian, elements.is_implicit_VR = True, False
    write_dataset(elements, ds)
    pixel_bytes = rows * columns * frames * 2
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    preamble = DicomBytesIO()
    preamble.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(preamble, meta, enforce_standard=True)
    path = Path(path)
    with path.open("wb") as out:
        out.write(preamble.getvalue())
        out.write(compressor.compress(elements.getvalue() + struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0,
                                                                         pixel_bytes)))
        ramp = np.arange(columns, dtype=np.uint32)
        for frame in range(frames):
            row = ((ramp * 16 + frame * 997) % 65536).astype("<u2").tobytes()
            out.write(compressor.compress(row * rows))
        out.write(compressor.flush(zlib.Z_FINISH))
    return path
