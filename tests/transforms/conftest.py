"""Fixtures for the preprocessing tests: real scans shipped with pydicom, pydicom-data, nibabel, nilearn."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest


def _pydicom_file(name: str) -> Path:
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name, download=False)  # tests never download
    if path is None:
        pytest.skip(f"{name} is not installed (pydicom / pydicom-data)")
    return Path(path)


def _dicomdir_tests() -> Path:
    import pydicom.data

    return Path(pydicom.data.__file__).parent / "test_files" / "dicomdirtests"


@pytest.fixture(scope="session")
def ct_small() -> Path:
    return _pydicom_file("CT_small.dcm")


@pytest.fixture(scope="session")
def mr_small() -> Path:
    return _pydicom_file("MR_small.dcm")


@pytest.fixture(scope="session")
def chest_radiograph() -> Path:
    """The 1955x1841 CR chest radiograph of pydicom-data (MONOCHROME1)."""
    return _pydicom_file("RG1_UNCR.dcm")


@pytest.fixture(scope="session")
def mr_large() -> Path:
    """A 1024x1024 MR slice of pydicom-data."""
    return _pydicom_file("MR2_UNCR.dcm")


@pytest.fixture(scope="session")
def multiframe_mr() -> Path:
    """A 10-frame MR of pydicom-data (no per-frame geometry)."""
    return _pydicom_file("emri_small.dcm")


@pytest.fixture(scope="session")
def ct_series_dir() -> Path:
    """Five axial 16x16 CT slices, one series (pydicom's dicomdirtests)."""
    return _dicomdir_tests() / "98892001" / "CT5N"


@pytest.fixture(scope="session")
def multi_series_dir() -> Path:
    """One folder with three MR series (pilots + localizer)."""
    return _dicomdir_tests() / "98892003" / "MR2"


@pytest.fixture(scope="session")
def radial_series_dir() -> Path:
    """One series whose slices have different orientations."""
    return _dicomdir_tests() / "98892003" / "MR700"


@pytest.fixture(scope="session")
def anatomical_nii() -> Path:
    from nibabel.testing import data_path

    return Path(data_path) / "anatomical.nii"


@pytest.fixture(scope="session")
def example4d() -> Path:
    from nibabel.testing import data_path

    return Path(data_path) / "example4d.nii.gz"


@pytest.fixture(scope="session")
def mni_t1(tmp_path_factory) -> Path:
    """nilearn's MNI152 T1 template written to a NIfTI file (loads offline from the package)."""
    import nibabel as nib
    from nilearn.datasets import load_mni152_template

    path = tmp_path_factory.mktemp("mni") / "mni152_t1.nii.gz"
    nib.save(load_mni152_template(), path)
    return path


@pytest.fixture(scope="session")
def shuffled_series_dir(tmp_path_factory, ct_series_dir) -> Path:
    """The CT5N series copied under shuffled names (so file order != slice order)."""
    folder = tmp_path_factory.mktemp("shuffled")
    files = sorted(p for p in ct_series_dir.iterdir() if p.is_file())
    for i, src in enumerate(reversed(files)):
        shutil.copy(src, folder / f"img{(i * 3) % 5}.dcm")
    return folder


def write_nifti(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> Path:
    import nibabel as nib

    nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine), os.fspath(path))
    return path


@pytest.fixture(scope="session")
def nifti_writer():
    """``nifti_writer(path, array, affine=None) -> path``."""
    return write_nifti
