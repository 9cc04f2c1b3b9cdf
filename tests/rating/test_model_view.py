"""The rating viewer shows the volume the model reads: same reader, orientation, windows and refusals."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from radfm.rating.app import create_app
from radfm.rating.images import ScanDisplayError, display_order, load_display_volume
from radfm.rating.study import create_study
from radfm.transforms import WINDOW_PRESETS, OrientToRAS, ScanReadError, preprocess_scan, read_scan


def _study_with(tmp_path: Path, scans: list[Path]) -> TestClient:
    """A one-case study over ``scans``, with rater alice signed in."""
    predictions = tmp_path / "model.jsonl"
    row = {"id": "c1", "task": "vqa", "images": [str(p) for p in scans], "instruction": "<image> What?",
           "reference": "x", "prediction": "y", "model": "radfm", "error": None, "closed_set": None}
    predictions.write_text(json.dumps(row) + "\n")
    result = create_study(tmp_path / "study", [predictions], raters=["alice"])
    client = TestClient(create_app(result["study"]), follow_redirects=False)
    assert client.post("/signin", data={"token": result["tokens"]["alice"]}).status_code == 303
    return client


def _served(client: TestClient, image: int, index: int, window: str) -> np.ndarray:
    response = client.get(f"/case/1/image/{image}.png", params={"slice": index, "window": window})
    assert response.status_code == 200, response.text
    return np.asarray(Image.open(io.BytesIO(response.content)))


@pytest.fixture
def oblique_ct(tmp_path) -> Path:
    """A 256 x 256 x 8 CT (HU beyond every preset) stored in LPI-like, axis-swapped order: reading
    it as stored would show a transposed, mirrored slice; only the model's RAS order matches."""
    import nibabel as nib

    rng = np.random.default_rng(7)
    data = rng.integers(-1500, 1500, size=(256, 256, 8), dtype=np.int16)
    affine = np.array([[0.0, -1.0, 0.0, 100.0],   # array axis 1 runs to the patient's left
                       [-1.0, 0.0, 0.0, 50.0],    # array axis 0 runs posterior
                       [0.0, 0.0, -2.5, 20.0],    # array axis 2 runs inferior
                       [0.0, 0.0, 0.0, 1.0]])
    path = tmp_path / "scans" / "oblique_ct.nii.gz"
    path.parent.mkdir()
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


def test_served_slices_are_the_model_volume_windowed(tmp_path, oblique_ct):
    client = _study_with(tmp_path, [oblique_ct])
    model = OrientToRAS()(read_scan(oblique_ct))  # what the model reads before resizing: [1, X, Y, Z] in RAS
    assert tuple(model.shape) == (1, 256, 256, 8)
    expected_planes = display_order(model.numpy(), oriented=True)[0]  # [Z, rows, cols]
    low, high = WINDOW_PRESETS["mediastinum"]
    stored = np.asarray(read_scan(oblique_ct))[0]
    assert not np.array_equal(expected_planes[3], stored[:, :, 3])  # the orientation matters for this file
    # the model's input at its grid (256 x 256 x 8 stays 256 x 256 x 8), windowed by the preprocessing
    tensor = preprocess_scan(oblique_ct, window="mediastinum")
    assert tuple(tensor.shape) == (3, 256, 256, 8)
    tensor_planes = display_order(tensor[:1].numpy(), oriented=True)[0]
    for index in (0, 3, 7):
        served = _served(client, 0, index, "mediastinum").astype(np.int16)
        windowed = np.clip((expected_planes[index] - low) / (high - low), 0.0, 1.0) * 255.0
        assert np.abs(served - np.rint(windowed)).max() <= 1
        assert np.abs(served - tensor_planes[index] * 255.0).max() <= 1.0  # the pixels the model is given
    # display convention: the most anterior row at the top, the patient's right on the left, slice 0 inferior
    volume = load_display_volume(oblique_ct)
    assert np.array_equal(volume.data[0, 0, 0], model[0, -1, -1, 0].numpy())


def _two_series_folder(folder: Path) -> list[str]:
    import pydicom
    from pydicom.data import get_testdata_file

    folder.mkdir(parents=True)
    uids = []
    for series in range(2):
        uid = pydicom.uid.generate_uid()
        uids.append(uid)
        for k in range(2):
            dataset = pydicom.dcmread(get_testdata_file("CT_small.dcm", download=False))
            dataset.SeriesInstanceUID = uid
            dataset.SOPInstanceUID = pydicom.uid.generate_uid()
            dataset.ImagePositionPatient = [0.0, 0.0, float(k * 5)]
            dataset.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
            dataset.save_as(folder / f"s{series}_{k}.dcm")
    return uids


def test_a_folder_with_two_series_is_refused_like_the_model_refuses_it(tmp_path):
    folder = tmp_path / "scans" / "two_series"
    uids = _two_series_folder(folder)
    with pytest.raises(ScanReadError) as model_error:
        read_scan(folder)
    with pytest.raises(ScanDisplayError) as display_error:
        load_display_volume(folder)
    assert str(display_error.value) == str(model_error.value)
    assert all(uid in str(display_error.value) for uid in uids)
    chosen = load_display_volume(folder, series_uid=uids[1])  # naming one series reads it, as for the model
    assert chosen.depth == 2
    client = _study_with(tmp_path, [folder])
    response = client.get("/case/1/image/0.json")
    assert response.status_code == 422 and all(uid in response.text for uid in uids)
