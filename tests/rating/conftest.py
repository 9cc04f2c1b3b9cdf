"""Fixtures for the rating app: generated scans, prediction files of three models, a study."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

MODELS = ("radfm", "baseline", "other")


def _write_scans(folder: Path) -> dict[str, Path]:
    """A small CT-like NIfTI volume (HU), a grey PNG and a DICOM from pydicom's test files."""
    import nibabel as nib
    from PIL import Image
    from pydicom.data import get_testdata_file

    folder.mkdir(parents=True, exist_ok=True)
    z, y, x = np.mgrid[0:12, 0:48, 0:48]
    volume = np.full((48, 48, 12), -1000, dtype=np.int16)  # air
    body = ((x - 24) ** 2 + (y - 24) ** 2 < 20**2).transpose(2, 1, 0)
    volume[body] = 40  # soft tissue
    sphere = (((x - 30) ** 2 + (y - 20) ** 2 + (z * 4 - 24) ** 2) < 8**2).transpose(2, 1, 0)
    volume[sphere] = 700  # a bright lesion, bone-like
    nifti = folder / "chest_ct.nii.gz"
    nib.save(nib.Nifti1Image(volume, np.diag([1.5, 1.5, 4.0, 1.0])), nifti)

    picture = folder / "xray.png"
    gradient = np.tile(np.linspace(0, 255, 64, dtype=np.uint8), (64, 1))
    Image.fromarray(gradient).save(picture)

    dicom = Path(get_testdata_file("CT_small.dcm", download=False))
    return {"nifti": nifti, "png": picture, "dicom": dicom}


def _cases(scans: dict[str, Path]) -> list[dict]:
    return [
        {"id": "case-1", "dataset": "phantom", "task": "vqa", "images": [str(scans["nifti"])],
         "instruction": "<image> Where is the lesion?", "reference": "Left upper lung."},
        {"id": "case-2", "dataset": "phantom", "task": "report", "images": [str(scans["png"]), str(scans["dicom"])],
         "instruction": "<image> <image> Please caption this scan with findings.", "reference": "No abnormality detected."},
        {"id": "case-3", "dataset": "phantom", "task": "vqa", "images": [str(scans["dicom"])],
         "instruction": "<image> Which modality is this?", "reference": "CT."},
    ]


def write_predictions(folder: Path, scans: dict[str, Path]) -> list[Path]:
    """One predictions JSONL per model (the Predictions contract), same case ids."""
    files = []
    for model in MODELS:
        path = folder / f"{model}.jsonl"
        with path.open("w", encoding="utf-8") as handle:
            for case in _cases(scans):
                row = dict(case, model=model, prediction=f"{model} says: answer to {case['id']}",
                           error=None, closed_set=None)
                handle.write(json.dumps(row) + "\n")
        files.append(path)
    return files


@pytest.fixture(scope="session")
def scans(tmp_path_factory) -> dict[str, Path]:
    return _write_scans(tmp_path_factory.mktemp("scans"))


@pytest.fixture(scope="session")
def prediction_files(tmp_path_factory, scans) -> list[Path]:
    return write_predictions(tmp_path_factory.mktemp("predictions"), scans)


@pytest.fixture
def study(tmp_path, prediction_files) -> tuple[Path, dict[str, str]]:
    """A fresh study with raters alice and bob; returns (folder, {name: token})."""
    from radfm.rating.study import create_study

    result = create_study(tmp_path / "study", prediction_files, raters=["alice", "bob"])
    return Path(result["study"]), result["tokens"]
