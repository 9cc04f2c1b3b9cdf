"""Server-side slice rendering for the viewer."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from radfm.rating.images import ScanDisplayError, load_display_volume, render_slice_png, resolve_window


def _decode(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)))


def test_nifti_volume_slices_and_ct_windows(scans):
    volume = load_display_volume(scans["nifti"])
    assert volume.depth == 12 and volume.data.shape[1:] == (48, 48) and not volume.rgb
    middle = _decode(render_slice_png(volume, 6, "mediastinum"))
    assert middle.shape == (48, 48) and middle.dtype == np.uint8
    # air (-1000 HU) is black and soft tissue (40 HU) mid-grey in the mediastinal window
    assert middle[0, 0] == 0
    tissue = volume.data[6] == 40
    assert tissue.any() and np.all((middle[tissue] > 100) & (middle[tissue] < 200))
    bone = _decode(render_slice_png(volume, 6, "bone"))
    lesion = volume.data[6] == 700
    assert lesion.any() and bone[lesion].min() > bone[tissue].max()  # the 700 HU lesion stands out
    assert resolve_window(volume, "-100,100") == (-100.0, 100.0)
    with pytest.raises(ValueError, match="window"):
        resolve_window(volume, "sideways")
    with pytest.raises(IndexError):
        render_slice_png(volume, 12)


def test_radiological_orientation_of_nifti(tmp_path):
    import nibabel as nib

    data = np.zeros((4, 6, 2), dtype=np.float32)
    data[0, 5, :] = 1.0  # RAS+: x=0 is the patient's far left, y=5 the most anterior row
    path = tmp_path / "o.nii"
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    plane = load_display_volume(path).data[0]
    assert plane.shape == (6, 4)
    # radiological view: anterior at the top, patient's left on the viewer's right
    assert plane[0, -1] == 1.0 and plane.sum() == 1.0


def test_dicom_and_png(scans):
    ct = load_display_volume(scans["dicom"])
    assert ct.depth == 1 and ct.data.shape[1:] == (128, 128)
    assert ct.data.min() < -500  # modality LUT applied: values are HU
    png = load_display_volume(scans["png"])
    assert png.depth == 1 and _decode(render_slice_png(png, 0)).shape == (64, 64)


def test_unreadable_scan_names_the_file(tmp_path):
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"not a nifti")
    with pytest.raises(ScanDisplayError, match="broken.nii.gz"):
        load_display_volume(bad)


def test_dicom_series_folder_is_sorted_along_the_slice_normal(tmp_path, scans):
    import pydicom

    folder = tmp_path / "series"
    folder.mkdir()
    for file_index, z in enumerate([20.0, 0.0, 10.0]):  # files not in anatomical order
        dataset = pydicom.dcmread(scans["dicom"])
        dataset.ImagePositionPatient = [0.0, 0.0, z]
        dataset.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        dataset.RescaleIntercept = z  # marks each slice by its position
        dataset.save_as(folder / f"slice{file_index}.dcm")
    (folder / "README.txt").write_text("not DICOM, ignored")
    volume = load_display_volume(folder)
    assert volume.depth == 3
    offsets = [float(volume.data[k].mean()) for k in range(3)]
    assert offsets[0] < offsets[1] < offsets[2]
    assert offsets[1] - offsets[0] == pytest.approx(10.0, abs=1e-3)


def test_colour_png_npy_and_nrrd(tmp_path):
    import nrrd

    colour = tmp_path / "photo.png"
    Image.new("RGB", (8, 6), (200, 10, 10)).save(colour)
    volume = load_display_volume(colour)
    assert volume.rgb and volume.depth == 1
    assert tuple(_decode(render_slice_png(volume, 0))[0, 0]) == (200, 10, 10)

    array = np.random.default_rng(0).normal(size=(16, 12, 5)).astype(np.float32)  # [H, W, D]
    np.save(tmp_path / "v.npy", array)
    from_npy = load_display_volume(tmp_path / "v.npy")
    assert from_npy.depth == 5 and np.array_equal(from_npy.data[2], array[:, :, 2])

    # NRRD: read with its geometry, as the model reads it (LPS -> RAS flips x and y, keeps the depth)
    header = {"space": "left-posterior-superior", "space directions": np.eye(3), "space origin": np.zeros(3)}
    nrrd.write(str(tmp_path / "v.nrrd"), array, header)
    assert load_display_volume(tmp_path / "v.nrrd").depth == 5
    nrrd.write(str(tmp_path / "bare.nrrd"), array)  # no geometry: refused by the model's reader, so by the viewer
    with pytest.raises(ScanDisplayError, match="bare.nrrd"):
        load_display_volume(tmp_path / "bare.nrrd")
