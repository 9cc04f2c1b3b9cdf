"""preprocess_scan on real scans shipped with pydicom, pydicom-data, nibabel and nilearn."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.data import MetaTensor

from radfm.transforms import preprocess_pipeline, preprocess_scan, read_scan, target_depth


def check_model_input(image, expected_shape):
    assert isinstance(image, MetaTensor)
    assert tuple(image.shape) == expected_shape
    assert image.dtype == torch.float32
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    assert float(image.max()) > 0.5  # really scaled, not all zeros


@pytest.mark.parametrize("fixture, modality", [("ct_small", "CT"), ("mr_small", "MR"), ("chest_radiograph", "CR"),
                                               ("mr_large", "MR")])
def test_2d_dicom(request, fixture, modality):
    path = request.getfixturevalue(fixture)
    image = preprocess_scan(path)
    check_model_input(image, (3, 512, 512, 4))
    assert torch.equal(image[0], image[2])  # grey repeated to 3 channels
    assert torch.equal(image[..., 0], image[..., 3])  # slice repeated to depth 4
    assert image.meta["modality"] == modality
    assert image.meta["filename_or_obj"] == str(path)


def test_chest_radiograph_metadata_and_monochrome1(chest_radiograph):
    import pydicom

    image = preprocess_scan(chest_radiograph)
    assert image.meta["original_shape"] == (1, 1955, 1841)  # rows, columns kept
    assert image.meta["photometric_interpretation"] == "MONOCHROME1"
    stored = pydicom.dcmread(chest_radiograph).pixel_array.astype(np.float32)
    expected = 1.0 - (stored - stored.min()) / (stored.max() - stored.min())  # inverted: bright = high
    expected = F.interpolate(torch.from_numpy(expected)[None, None], size=(512, 512), mode="bilinear")[0, 0]
    torch.testing.assert_close(image[0, :, :, 0].as_tensor(), expected, atol=1e-4, rtol=1e-4)


def test_ct_small_keeps_hounsfield_metadata(ct_small):
    raw = read_scan(ct_small)
    assert raw.dtype == torch.int16 and int(raw.min()) == -896  # RescaleIntercept applied (HU)
    image = preprocess_scan(ct_small)
    np.testing.assert_allclose(image.meta["spacing"], (0.661468, 0.661468), rtol=1e-5)
    assert "original_affine" in image.meta


def test_dicom_series_folder_is_3d_ras(ct_series_dir, shuffled_series_dir):
    image = preprocess_scan(ct_series_dir)
    check_model_input(image, (3, 256, 256, target_depth(5)))
    assert nib.orientations.aff2axcodes(np.asarray(image.affine)) == ("R", "A", "S")
    assert image.meta["original_shape"] == (1, 16, 16, 5)
    np.testing.assert_allclose(image.meta["spacing"], (0.488281, 0.488281, 2.5), rtol=1e-5)
    # slice order comes from positions, not file names
    torch.testing.assert_close(preprocess_scan(shuffled_series_dir).as_tensor(), image.as_tensor())


def test_dicom_series_geometry_matches_itk(ct_series_dir):
    from monai.data import ITKReader

    ours = read_scan(ct_series_dir)
    reader = ITKReader()
    itk_array, itk_meta = reader.get_data(reader.read(str(ct_series_dir)))
    # ITK indexes (columns, rows, slices); ours (rows, columns, slices)
    np.testing.assert_array_equal(ours[0].numpy(), np.swapaxes(itk_array, 0, 1))
    swap = np.array([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    np.testing.assert_allclose(np.asarray(ours.affine), itk_meta["affine"] @ swap, atol=1e-3)


def test_multiframe_dicom_is_3d(multiframe_mr):
    image = preprocess_scan(multiframe_mr)
    check_model_input(image, (3, 256, 256, target_depth(10)))
    assert image.meta["original_shape"] == (1, 64, 64, 10)


def test_nifti_orientation_matches_nibabel_canonical(anatomical_nii):
    image = preprocess_scan(anatomical_nii)
    check_model_input(image, (3, 256, 256, target_depth(25)))
    assert nib.orientations.aff2axcodes(np.asarray(image.affine)) == ("R", "A", "S")
    canonical = nib.as_closest_canonical(nib.load(anatomical_nii)).get_fdata().astype(np.float32)
    canonical = (canonical - canonical.min()) / (canonical.max() - canonical.min())
    expected = F.interpolate(torch.from_numpy(canonical)[None, None], size=(256, 256, 24), mode="trilinear")[0, 0]
    torch.testing.assert_close(image[0].as_tensor(), expected, atol=1e-4, rtol=1e-4)


def test_orientation_of_an_lps_volume(tmp_path, nifti_writer):
    """A gradient that rises toward the patient's right must rise along the first axis after RAS."""
    volume = np.broadcast_to(np.arange(20, dtype=np.int16)[:, None, None], (20, 12, 8)).copy()
    affine = np.diag([-1.0, -1.0, 2.0, 1.0])  # axis 0 runs to the Left (LPS storage)
    image = preprocess_scan(nifti_writer(tmp_path / "lps.nii.gz", volume, affine))
    profile = image[0, :, 5, 3]
    assert profile[0] > profile[-1]  # index 0 is now the right side, where the stored values were high
    assert nib.orientations.aff2axcodes(np.asarray(image.affine)) == ("R", "A", "S")


def test_mni152_template(mni_t1):
    image = preprocess_scan(mni_t1)
    check_model_input(image, (3, 256, 256, 64))
    assert image.meta["original_shape"] == (1, 197, 233, 189)


def test_dictionary_pipeline_matches_array_version(ct_series_dir):
    out = preprocess_pipeline(keys=("image",), window="mediastinum")({"image": str(ct_series_dir), "text": "q"})
    direct = preprocess_scan(ct_series_dir, window="mediastinum")
    torch.testing.assert_close(out["image"].as_tensor(), direct.as_tensor())
    assert out["text"] == "q"


def test_pipeline_is_invertible_to_the_loaded_grid(anatomical_nii):
    pipeline = preprocess_pipeline(keys="image")
    out = pipeline({"image": str(anatomical_nii)})
    restored = pipeline.inverse({"image": out["image"][:1]})["image"]
    assert tuple(restored.shape) == (1, 33, 41, 25)
    np.testing.assert_allclose(np.asarray(restored.affine), nib.load(anatomical_nii).affine, atol=1e-4)


def test_window_option_changes_values(ct_small):
    plain = preprocess_scan(ct_small)
    lung = preprocess_scan(ct_small, window="lung")
    explicit = preprocess_scan(ct_small, window=(-1350, 150))
    torch.testing.assert_close(lung.as_tensor(), explicit.as_tensor())
    assert not torch.allclose(plain.as_tensor(), lung.as_tensor())
