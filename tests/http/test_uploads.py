"""Recognising uploaded scan files and grouping DICOM slices into series."""

from __future__ import annotations

import shutil

import pydicom
import pytest

from radfm.answering.refusal import RequestError
from radfm.answering.scans import detect_kind, group_scans, save_scan


def test_detect_kind_by_content_then_name(ct_series_dir, small_scans):
    first = next(ct_series_dir.iterdir())
    assert detect_kind("17106", first.read_bytes()[:352]) == "dicom"  # no suffix: the preamble decides
    assert detect_kind("x", small_scans["png"].read_bytes()[:352]) == "png"
    assert detect_kind("brain.nii.gz", small_scans["nifti"].read_bytes()[:352]) == "nifti"
    with pytest.raises(RequestError, match=r"scan.png: named like a PNG image \(2D\) \(.png\) but its content is not one"):
        detect_kind("scan.png", b"GIF89a" + b"\0" * 400)
    with pytest.raises(RequestError) as info:
        detect_kind("report.pdf", b"%PDF-1.4")
    assert info.value.status_code == 415


def test_group_scans_one_per_series_in_upload_order(ct_series_dir, small_scans, tmp_path):
    saved = []
    for index, path in enumerate(sorted(ct_series_dir.iterdir())):
        target = tmp_path / f"{index:04d}_{path.name}"
        if index == 2:  # put one slice into a second series
            dataset = pydicom.dcmread(path)
            dataset.SeriesInstanceUID = pydicom.uid.generate_uid()
            dataset.save_as(target)
        else:
            shutil.copy(path, target)
        saved.append((path.name, target, "dicom"))
    with small_scans["png"].open("rb") as source:  # saved under its reader's suffix, whatever it was called
        saved.insert(1, *save_scan("chest", source, tmp_path, first_index=9, max_files=10, max_bytes=1 << 30))
    scans = group_scans(saved, tmp_path, max_scan_bytes=1 << 30)
    assert [s.kind for s in scans] == ["dicom", "png", "dicom"]
    assert [len(s.names) for s in scans] == [3, 1, 1]
    assert scans[1].path.suffix == ".png"  # readers go by suffix
    assert len(list(scans[0].path.iterdir())) == 3
