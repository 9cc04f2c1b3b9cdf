"""The sampler's 2D/3D split comes from the model's reader (header only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from radfm.data.sampler import image_dims
from radfm.transforms import ScanReadError, read_scan, scan_spatial_dims


def test_image_dims_agree_with_read_scan(tmp_path: Path):
    import nibabel as nib
    import nrrd

    flat = tmp_path / "flat.npy"
    np.save(flat, np.zeros((8, 8, 1), dtype=np.float32))  # one slice: read_scan returns it as 2D
    deep = tmp_path / "deep.npy"
    np.save(deep, np.zeros((8, 8, 3), dtype=np.float32))
    picture = tmp_path / "p.png"
    Image.new("L", (4, 4)).save(picture)
    volume = tmp_path / "v.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((6, 5, 4), dtype=np.int16), np.eye(4)), volume)
    single = tmp_path / "single.nii"
    nib.save(nib.Nifti1Image(np.zeros((6, 5, 1), dtype=np.int16), np.eye(4)), single)
    stack = tmp_path / "s.nrrd"
    nrrd.write(str(stack), np.zeros((4, 4, 3), dtype=np.int16),
               {"space": "left-posterior-superior", "space directions": np.eye(3), "space origin": np.zeros(3)})
    for path in (flat, deep, picture, volume, single, stack):
        assert scan_spatial_dims(path) == read_scan(path).ndim - 1 == image_dims(str(path)), path


def test_dicom_file_dims_and_unsupported_files(tmp_path: Path):
    from pydicom.data import get_testdata_file

    ct = get_testdata_file("CT_small.dcm", download=False)
    assert scan_spatial_dims(ct) == read_scan(ct).ndim - 1 == 2
    gif = tmp_path / "p.gif"
    gif.write_bytes(b"GIF89a")
    with pytest.raises(ScanReadError, match="p.gif: unsupported file type"):
        image_dims(str(gif))
    with pytest.raises(ScanReadError, match="no such file"):
        scan_spatial_dims(tmp_path / "missing.nii.gz")
