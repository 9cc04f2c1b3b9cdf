"""``RadFMDicomReader``: our DICOM reading through MONAI's ``LoadImage(d)`` equals ``read_scan``."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.transforms import Compose, LoadImage, LoadImaged

from radfm.transforms import (
    DropAlphad,
    OrientToRASd,
    RadFMDicomReader,
    ScaleResizeToRadFMd,
    ScanReadError,
    ToThreeChannelsd,
    preprocess_scan,
    read_scan,
)
from radfm.transforms.dicom import list_dicom_series

from .conftest import _pydicom_file


def _load(path, **reader_options) -> torch.Tensor:
    loader = LoadImage(reader=RadFMDicomReader(**reader_options), image_only=True, ensure_channel_first=True,
                       dtype=None)
    return loader(path)


def _assert_same_as_read_scan(loaded, expected) -> None:
    assert tuple(loaded.shape) == tuple(expected.shape)
    # MONAI holds uint16 as int32 (torch has no full uint16 support): compare values, not dtypes
    np.testing.assert_array_equal(loaded.numpy(), expected.numpy())
    np.testing.assert_allclose(np.asarray(loaded.affine), np.asarray(expected.affine), atol=1e-6)
    assert loaded.meta["space"] == "RAS"
    for key in ("modality", "series_uid", "photometric_interpretation", "orientation_known"):
        assert loaded.meta.get(key) == expected.meta.get(key), key


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "emri_small.dcm", "SC_rgb.dcm", "RG1_UNCR.dcm"])
def test_pydicom_files_equal_read_scan(name):
    path = _pydicom_file(name)  # CT (HU rescale), MR, 10-frame MR, RGB, MONOCHROME1 radiograph
    _assert_same_as_read_scan(_load(path), read_scan(path))


def test_series_folders_equal_read_scan(ct_series_dir, shuffled_series_dir):
    expected = read_scan(ct_series_dir)
    assert expected.ndim == 4
    _assert_same_as_read_scan(_load(ct_series_dir), expected)
    # file names in another order: the same volume (slices sorted by position, not by name)
    np.testing.assert_array_equal(_load(shuffled_series_dir).numpy(), expected.numpy())


def _write_oblique_series(folder: Path, uid: str, slices: int, offset: int, seed: int) -> list[np.ndarray]:
    """``slices`` 16x16 slices of one oblique series, written under shuffled names with shuffled
    InstanceNumbers; returns the pixel planes in the order of their position along the normal."""
    import pydicom

    template = pydicom.dcmread(_pydicom_file("CT_small.dcm"))
    angle = np.deg2rad(20)
    row = np.array([np.cos(angle), np.sin(angle), 0.0])
    col = np.array([0.0, 0.0, -1.0])  # a tilted coronal plane
    normal = np.cross(row, col)
    rng = np.random.default_rng(seed)
    planes = [rng.integers(-1000, 1000, size=(16, 16)).astype(np.int16) for _ in range(slices)]
    order = rng.permutation(slices)
    for file_index, k in enumerate(order):
        ds = template.copy()
        ds.SeriesInstanceUID = uid
        ds.SOPInstanceUID = f"{uid}.{k + 1}"
        ds.Rows, ds.Columns = 16, 16
        ds.PixelSpacing = [0.8, 0.8]
        ds.ImageOrientationPatient = [float(v) for v in np.concatenate([row, col])]
        ds.ImagePositionPatient = [float(v) for v in np.array([10.0, -5.0, 30.0]) + 2.5 * k * normal]
        ds.InstanceNumber = int(slices - k)  # reversed: sorting must follow the positions
        ds.RescaleSlope, ds.RescaleIntercept = 1, 0
        ds.PixelData = planes[k].tobytes()
        ds.save_as(folder / f"f{offset + file_index:03d}.dcm")
    return planes


@pytest.fixture()
def two_series_folder(tmp_path) -> tuple[Path, dict[str, list[np.ndarray]]]:
    folder = tmp_path / "two_series"
    folder.mkdir()
    planes = {"1.2.826.0.1.3680043.99.1": _write_oblique_series(folder, "1.2.826.0.1.3680043.99.1", 6, 0, 1),
              "1.2.826.0.1.3680043.99.2": _write_oblique_series(folder, "1.2.826.0.1.3680043.99.2", 4, 100, 2)}
    return folder, planes


def test_generated_series_chosen_by_uid_and_sorted_along_the_normal(two_series_folder):
    folder, planes = two_series_folder
    for uid, expected_planes in planes.items():
        loaded = _load(folder, series_uid=uid)
        _assert_same_as_read_scan(loaded, read_scan(folder, series_uid=uid))
        assert loaded.meta["series_uid"] == uid
        assert tuple(loaded.shape) == (1, 16, 16, len(expected_planes))
        for k, plane in enumerate(expected_planes):  # slice k is the k-th along the normal
            np.testing.assert_array_equal(loaded[0, :, :, k].numpy(), plane)
        # the affine steps 2.5 mm along the (RAS) slice normal
        step = np.asarray(loaded.affine)[:3, 2]
        assert np.isclose(np.linalg.norm(step), 2.5)


def test_several_series_is_an_error_not_a_guess(two_series_folder):
    folder, planes = two_series_folder
    # LoadImaged would try ITK after a failing reader (which reads one series of its choice): ours must raise
    with pytest.raises(ScanReadError, match="2 DICOM series") as info:
        LoadImaged("image", reader=RadFMDicomReader())({"image": str(folder)})
    for uid in planes:
        assert uid in str(info.value)
    with pytest.raises(ScanReadError, match="no series with SeriesInstanceUID=9.9.9"):
        _load(folder, series_uid="9.9.9")


def test_corrupt_dicom_is_reported_not_read_by_another_reader(tmp_path, ct_small):
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(ct_small.read_bytes()[:2000])
    with pytest.raises(ScanReadError, match="broken.dcm"):
        _load(broken)


def test_other_formats_fall_back_to_monai_readers(anatomical_nii):
    reader = RadFMDicomReader()
    assert not reader.verify_suffix(str(anatomical_nii))
    loaded = LoadImage(reader=reader, image_only=True, ensure_channel_first=True)(anatomical_nii)
    assert loaded.shape[0] == 1 and loaded.ndim == 4  # read by MONAI's nibabel reader


def test_several_files_stack_as_channels(ct_small, tmp_path):
    copy = tmp_path / "copy.dcm"
    shutil.copy(ct_small, copy)
    loaded = _load([ct_small, copy])
    single = read_scan(ct_small)
    assert tuple(loaded.shape) == (2, *single.shape[1:])
    np.testing.assert_array_equal(loaded[1].numpy(), single[0].numpy())


def test_load_imaged_in_a_pipeline_equals_preprocess_scan(ct_series_dir):
    """A bundle ``preprocessing`` with MONAI's LoadImaged + our reader gives what preprocess_scan gives."""
    keys = ["image"]
    pipeline = Compose([
        LoadImaged(keys, reader=RadFMDicomReader(), image_only=True, ensure_channel_first=True, dtype=None),
        DropAlphad(keys),
        OrientToRASd(keys),
        ScaleResizeToRadFMd(keys),
        ToThreeChannelsd(keys),
    ])
    out = pipeline({"image": str(ct_series_dir)})["image"]
    expected = preprocess_scan(ct_series_dir)
    assert tuple(out.shape) == tuple(expected.shape)
    torch.testing.assert_close(out.as_tensor(), expected.as_tensor(), atol=1e-6, rtol=0)
    np.testing.assert_allclose(np.asarray(out.affine), np.asarray(expected.affine), atol=1e-6)


def test_listing_helper_and_reader_agree_on_series(two_series_folder):
    folder, planes = two_series_folder
    assert {s.uid for s in list_dicom_series(folder)} == set(planes)
