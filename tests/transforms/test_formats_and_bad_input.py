"""Every supported format, and each bad input giving a ScanReadError that names the file."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from radfm.transforms import ScanReadError, list_dicom_series, preprocess_scan, read_scan


def test_png_grey_rgb_rgba_and_jpeg(tmp_path):
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 255, (60, 90), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    rgba = rng.integers(0, 255, (60, 90, 4), dtype=np.uint8)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(rgba[..., :3]).save(tmp_path / "rgb.jpg")
    raw = read_scan(tmp_path / "grey.png")
    assert tuple(raw.shape) == (1, 60, 90)  # rows, columns kept
    np.testing.assert_array_equal(raw[0].numpy(), grey)
    for name in ("grey.png", "rgba.png", "rgb.jpg"):
        image = preprocess_scan(tmp_path / name)
        assert tuple(image.shape) == (3, 512, 512, 4) and image.dtype == torch.float32
        assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    rgba_image = preprocess_scan(tmp_path / "rgba.png")
    assert not torch.equal(rgba_image[0], rgba_image[1])  # colours kept, alpha dropped


def test_npy_nrrd_and_mha(tmp_path, nifti_writer):
    import itk
    import nrrd

    volume = np.random.default_rng(1).integers(-100, 900, (30, 20, 9)).astype(np.int16)
    np.save(tmp_path / "vol.npy", volume)
    nrrd.write(str(tmp_path / "vol.nrrd"), volume, {"space": "left-posterior-superior",
                                                     "space directions": np.eye(3), "space origin": np.zeros(3)})
    itk.imwrite(itk.image_from_array(np.ascontiguousarray(volume.transpose(2, 1, 0))), str(tmp_path / "vol.mha"))
    nifti = nifti_writer(tmp_path / "vol.nii", volume, np.diag([1.0, 1.0, 1.0, 1.0]))
    results = {}
    for name in ("vol.npy", "vol.nrrd", "vol.mha", nifti.name):
        image = preprocess_scan(tmp_path / name)
        assert tuple(image.shape) == (3, 256, 256, 8), name
        results[name] = image.as_tensor()
    # .npy and RAS NIfTI store the same array the same way; NRRD/MHA in LPS come out flipped to RAS
    torch.testing.assert_close(results["vol.npy"], results["vol.nii"])
    torch.testing.assert_close(results["vol.nrrd"], results["vol.mha"])
    torch.testing.assert_close(results["vol.nrrd"], results["vol.nii"].flip(1, 2))
    np.save(tmp_path / "one_slice.npy", volume[..., :1])
    assert tuple(preprocess_scan(tmp_path / "one_slice.npy").shape) == (3, 512, 512, 4)  # 1 slice = 2D


def test_single_slice_nifti_is_2d(tmp_path, nifti_writer):
    path = nifti_writer(tmp_path / "slice.nii.gz", np.arange(35 * 21, dtype=np.int16).reshape(35, 21, 1))
    image = preprocess_scan(path)
    assert tuple(image.shape) == (3, 512, 512, 4)
    assert image.meta["spatial_dims"] == 2


def test_several_series_lists_them_and_can_choose(multi_series_dir):
    with pytest.raises(ScanReadError) as info:
        preprocess_scan(multi_series_dir)
    message = str(info.value)
    assert str(multi_series_dir) in message and "3 DICOM series" in message
    assert "pass --series_uid UID on the command line (series_uid=UID in Python)" in message  # issue 24 item 15
    series = list_dicom_series(multi_series_dir)
    for s in series:
        assert s.uid in message
    localizer = [s for s in series if len(s.files) == 1][0]
    image = preprocess_scan(multi_series_dir, series_uid=localizer.uid)
    assert tuple(image.shape) == (3, 512, 512, 4)
    assert image.meta["series_uid"] == localizer.uid
    with pytest.raises(ScanReadError, match="no series with SeriesInstanceUID=1.2.3"):
        preprocess_scan(multi_series_dir, series_uid="1.2.3")
    pilot = [s for s in series if len(s.files) == 3][0]
    with pytest.raises(ScanReadError, match="different orientations"):
        preprocess_scan(multi_series_dir, series_uid=pilot.uid)


def test_non_parallel_series(radial_series_dir):
    with pytest.raises(ScanReadError, match="different orientations"):
        preprocess_scan(radial_series_dir)


def test_4d_volume_is_an_error(example4d):
    with pytest.raises(ScanReadError, match=r"4D image of shape \(128, 96, 24, 2\)") as info:
        preprocess_scan(example4d)
    assert str(example4d) in str(info.value)


def test_empty_and_non_dicom_folders(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ScanReadError, match="no DICOM images found") as info:
        preprocess_scan(empty)
    assert str(empty) in str(info.value)
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "readme.txt").write_text("not an image")
    with pytest.raises(ScanReadError, match="no DICOM images found"):
        preprocess_scan(notes)


def test_unsupported_missing_and_corrupt_files(tmp_path, ct_small):
    (tmp_path / "report.pdf").write_bytes(b"%PDF-1.4")
    with pytest.raises(ScanReadError, match=r"report.pdf: unsupported file type .pdf; expected"):
        preprocess_scan(tmp_path / "report.pdf")
    with pytest.raises(ScanReadError, match="no such file"):
        preprocess_scan(tmp_path / "missing.nii.gz")
    (tmp_path / "broken.nii.gz").write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(ScanReadError, match=r"broken.nii.gz: cannot read as nifti"):
        preprocess_scan(tmp_path / "broken.nii.gz")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ScanReadError, match=r"broken.png: cannot read as image"):
        preprocess_scan(tmp_path / "broken.png")
    (tmp_path / "broken.dcm").write_bytes(b"\x00" * 128 + b"DICM" + b"\x02\x00")
    with pytest.raises(ScanReadError, match=r"broken.dcm"):
        preprocess_scan(tmp_path / "broken.dcm")
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(ct_small.read_bytes()[:-20000])
    with pytest.raises(ScanReadError, match=r"truncated.dcm"):
        preprocess_scan(truncated)
    np.save(tmp_path / "five_d.npy", np.zeros((2, 2, 2, 2, 2)))
    with pytest.raises(ScanReadError, match=r"five_d.npy: .npy array of shape"):
        preprocess_scan(tmp_path / "five_d.npy")
    with open(tmp_path / "pickled.npy", "wb") as handle:
        np.save(handle, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ScanReadError, match="pickled.npy"):
        preprocess_scan(tmp_path / "pickled.npy")


def test_dicom_without_extension_and_without_pixels(tmp_path, ct_small):
    from pydicom.data import get_testdata_file

    shutil.copy(ct_small, tmp_path / "IM0001")
    assert tuple(preprocess_scan(tmp_path / "IM0001").shape) == (3, 512, 512, 4)
    shutil.copy(get_testdata_file("rtplan.dcm", download=False), tmp_path / "plan.dcm")
    with pytest.raises(ScanReadError, match="plan.dcm: DICOM object without pixel data"):
        preprocess_scan(tmp_path / "plan.dcm")


def test_nan_volume_and_constant_volume(tmp_path, nifti_writer):
    volume = np.ones((12, 12, 8), dtype=np.float32)
    constant = preprocess_scan(nifti_writer(tmp_path / "constant.nii.gz", volume))
    assert tuple(constant.shape) == (3, 256, 256, 8) and float(constant.abs().max()) == 0.0
    volume[3, 3, 3] = np.nan
    path = nifti_writer(tmp_path / "nan.nii.gz", volume)
    with pytest.raises(ScanReadError, match=r"nan.nii.gz: the image holds NaN or Inf"):
        preprocess_scan(path)
    replaced = preprocess_scan(path, nonfinite="replace")
    assert torch.isfinite(replaced).all()


def test_bundle_json_composes_the_transforms(tmp_path, ct_series_dir):
    from monai.bundle import ConfigParser

    config = {"preprocessing": {"_target_": "Compose", "transforms": [
        {"_target_": "radfm.transforms.LoadScand", "keys": "image"},
        {"_target_": "radfm.transforms.DropAlphad", "keys": "image"},
        {"_target_": "radfm.transforms.OrientToRASd", "keys": "image"},
        {"_target_": "radfm.transforms.ScaleResizeToRadFMd", "keys": "image", "window": "bone"},
        {"_target_": "radfm.transforms.ToThreeChannelsd", "keys": "image"},
    ]}, "factory": {"_target_": "radfm.transforms.preprocess_pipeline", "keys": ["image"], "window": "bone"}}
    (tmp_path / "inference.json").write_text(json.dumps(config))
    parser = ConfigParser()
    parser.read_config(str(tmp_path / "inference.json"))
    from_json = parser.get_parsed_content("preprocessing")({"image": str(ct_series_dir)})["image"]
    from_factory = parser.get_parsed_content("factory")({"image": str(ct_series_dir)})["image"]
    assert tuple(from_json.shape) == (3, 256, 256, 4)
    torch.testing.assert_close(from_json.as_tensor(), from_factory.as_tensor())
