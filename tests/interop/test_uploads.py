"""Recognising uploaded scan files and grouping DICOM slices into series."""

from __future__ import annotations

import shutil

import pydicom
import pytest

from radfm.interop.uploads import UploadError, detect_kind, group_scans


def test_detect_kind_by_content_then_name(ct_series_dir, small_scans):
    first = next(ct_series_dir.iterdir())
    assert detect_kind("17106", first.read_bytes()[:352]) == "dicom"  # no suffix: the preamble decides
    assert detect_kind("x", small_scans["png"].read_bytes()[:352]) == "png"
    assert detect_kind("brain.nii.gz", small_scans["nifti"].read_bytes()[:352]) == "nifti"
    with pytest.raises(UploadError, match="scan.png: named like a png"):
        detect_kind("scan.png", b"GIF89a" + b"\0" * 400)
    with pytest.raises(UploadError) as info:
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
    png = tmp_path / "0009_chest"
    shutil.copy(small_scans["png"], png)
    saved.insert(1, ("chest", png, "png"))
    scans = group_scans(saved, tmp_path)
    assert [s.kind for s in scans] == ["dicom", "png", "dicom"]
    assert [len(s.names) for s in scans] == [3, 1, 1]
    assert scans[1].path.suffix == ".png"  # readers go by suffix
    assert len(list(scans[0].path.iterdir())) == 3
