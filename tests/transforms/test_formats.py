"""The one registry of scan formats: recognition by content then name, conflicts refused, upload rules."""

from __future__ import annotations

import gzip
import os

import numpy as np
import pytest

from radfm.transforms import ScanReadError, formats, read_scan, scan_format

NIFTI_HEAD = b"\x5c\x01\x00\x00" + bytes(340) + b"n+1\x00" + bytes(4)


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("name,data,expected", [
    ("a.dcm", bytes(128) + b"DICM" + bytes(300), "dicom"),
    ("no_extension", bytes(128) + b"DICM" + bytes(300), "dicom"),  # PACS exports
    ("a.nii", NIFTI_HEAD, "nifti"),
    ("a.nii.gz", gzip.compress(NIFTI_HEAD), "nifti"),
    ("a.NRRD", b"NRRD0004\n", "nrrd"),
    ("a.png", b"\x89PNG\r\n\x1a\n" + bytes(30), "png"),
    ("a.png", b"\xff\xd8\xff\xe0" + bytes(30), "jpeg"),  # same reader: read as the JPEG it is
    ("a.jpeg", b"\xff\xd8\xff\xe0" + bytes(30), "jpeg"),
    ("a.npy", b"\x93NUMPY\x01\x00", "numpy"),
    ("a.mha", b"ObjectType = Image\n", "metaimage"),  # no magic: by name
    ("a.dcm", b"\x08\x00\x05\x00CS", "dicom"),  # DICOM without its preamble: by name
])
def test_detect_format_by_content_then_name(tmp_path, name, data, expected):
    fmt = formats.detect_format(_write(tmp_path / name, data))
    assert fmt.name == expected and fmt is formats.BY_NAME[expected]
    assert scan_format(tmp_path / name) == fmt.reader


@pytest.mark.parametrize("name,data,named,content", [
    ("scan.png", b"NRRD0004\ndata file: /etc/passwd\n", "PNG image", "NRRD volume"),
    ("scan.dcm", b"\x89PNG\r\n\x1a\n" + bytes(200), "DICOM file", "PNG image"),
    ("scan.mha", bytes(128) + b"DICM" + bytes(300), "MetaImage volume", "DICOM file"),
])
def test_name_and_content_that_disagree_are_refused(tmp_path, name, data, named, content):
    path = _write(tmp_path / name, data)
    with pytest.raises(ScanReadError, match=rf"{name}: named like a {named} .* but its content is a {content}"):
        read_scan(path)


def test_missing_unsupported_and_special_files(tmp_path):
    with pytest.raises(ScanReadError, match="no such file or folder"):
        formats.detect_format(tmp_path / "nothing.nii")
    with pytest.raises(ScanReadError, match=r"notes\.txt: unsupported file type \.txt; expected a DICOM series folder, "):
        formats.detect_format(_write(tmp_path / "notes.txt", b"hello"))
    fifo = tmp_path / "pipe.nrrd"
    os.mkfifo(fifo)  # reading it would block forever
    with pytest.raises(ScanReadError, match="pipe.nrrd: not a regular file"):
        read_scan(fifo)
    assert formats.detect_format(tmp_path) is formats.DICOM_SERIES
    with pytest.raises(ScanReadError, match="not a valid path"):
        read_scan(str(tmp_path / "a\x00.nii"))


def test_upload_detection_keeps_the_service_rules():
    """What radfm/answering/scans.detect_kind decides today, from the registry."""
    head = {"dicom": bytes(128) + b"DICM" + bytes(220), "png": b"\x89PNG\r\n\x1a\n" + bytes(344),
            "jpeg": b"\xff\xd8\xff" + bytes(349), "nrrd": b"NRRD0004\n" + bytes(343), "nifti": NIFTI_HEAD}
    for kind, data in head.items():
        assert formats.detect_upload("upload.bin", data).name == kind
    assert formats.detect_upload("ct.nii.gz", b"\x1f\x8b" + bytes(350)).name == "nifti"  # gzip: by name
    assert formats.detect_upload("slice.dcm", bytes(352)).name == "dicom"  # no preamble: by name
    with pytest.raises(ScanReadError, match="ct.nii.gz: named .nii.gz but not gzip data"):
        formats.detect_upload("ct.nii.gz", bytes(352))
    with pytest.raises(ScanReadError, match=r"x\.png: named like a PNG image .* but its content is not one"):
        formats.detect_upload("x.png", bytes(352))
    with pytest.raises(ScanReadError, match=r"notes\.txt: unsupported file type .txt; expected one of DICOM file, NIfTI volume"):
        formats.detect_upload("notes.txt", b"hello")
    with pytest.raises(ScanReadError, match=r"a\.npy: a NumPy array .* is not accepted here"):
        formats.detect_upload("a.npy", b"\x93NUMPY" + bytes(10))
    with pytest.raises(ScanReadError, match="empty file"):
        formats.detect_upload("a.png", b"")
    assert [f.name for f in formats.UPLOAD_FORMATS] == ["dicom", "nifti", "nrrd", "png", "jpeg"]
    assert formats.format_by_suffix("CT.NII.GZ") == (".nii.gz", formats.NIFTI)
    assert {s: f.name for s, f in formats.UPLOAD_SUFFIXES.items()} == {
        ".nii.gz": "nifti", ".dicom": "dicom", ".jpeg": "jpeg", ".nrrd": "nrrd", ".nhdr": "nrrd", ".dcm": "dicom",
        ".ima": "dicom", ".nii": "nifti", ".png": "png", ".jpg": "jpeg"}


def test_one_entry_per_format_with_label_dims_guard_and_reader(tmp_path):
    assert formats.label_of("png") == "PNG image (2D)" and formats.label_of("nrrd") == "NRRD volume"
    with pytest.raises(ValueError, match="unknown scan format 'gif'"):
        formats.label_of("gif")
    from radfm.transforms.readers import READERS

    for fmt in formats.FORMATS:
        assert fmt.reader in READERS and fmt.label and set(fmt.dims) <= {2, 3}
        assert fmt.guard is not None or fmt.reader_checks  # every format is checked before pixels are read
    suffixes = [s for f in formats.FORMATS for s in f.suffixes]
    assert len(suffixes) == len(set(suffixes))  # each suffix belongs to one format
    # the registry's reader and guard are what read_scan runs
    np.save(tmp_path / "v.npy", np.zeros((4, 5, 6), np.int16))
    assert tuple(read_scan(tmp_path / "v.npy").shape) == (1, 4, 5, 6)
