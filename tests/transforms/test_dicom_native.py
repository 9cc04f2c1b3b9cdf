"""The direct read of plain uncompressed DICOM pixels equals pydicom's decoding, file by file."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest

from radfm.transforms.dicom import read_native_pixels


def _installed_test_files() -> list[Path]:
    """Every file pydicom and pydicom-data installed (``get_testdata_files`` would download more)."""
    import importlib.util

    import pydicom.data

    folders = [Path(pydicom.data.__file__).parent / "test_files"]
    spec = importlib.util.find_spec("data_store")  # pydicom-data
    folders += [Path(p) for p in (spec.submodule_search_locations or [])] if spec else []
    return sorted(p for folder in folders for p in folder.rglob("*") if p.is_file())


def _native_read(path: str | Path):
    with open(path, "rb") as handle:
        ds = pydicom.dcmread(handle, stop_before_pixels=True)
        return read_native_pixels(handle, ds)


def test_native_pixels_equal_pydicom_on_every_test_file_that_takes_the_fast_path():
    taken, declined = [], 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the odd test files it ships
        for path in _installed_test_files():
            try:
                fast = _native_read(path)
            except Exception:  # not DICOM at all (pydicom ships other test files too)
                continue
            if fast is None:
                declined += 1  # compressed, colour, big endian, ...: pydicom decodes those
                continue
            reference = pydicom.dcmread(path).pixel_array
            assert fast.dtype == reference.dtype and fast.shape == reference.shape, path
            assert np.array_equal(fast, reference), path
            taken.append(Path(path).name)
    # single-frame, multi-frame, 8/16-bit, signed, MONOCHROME1 and 15-of-16-bit files among them
    assert {"CT_small.dcm", "MR_small.dcm", "emri_small.dcm", "RG1_UNCR.dcm"} <= set(taken)
    assert len(taken) >= 15 and declined >= 15


@pytest.mark.parametrize("name", ["JPEG2000.dcm", "SC_rgb.dcm", "MR_small_bigendian.dcm"])
def test_other_layouts_are_left_to_pydicom(name):
    from pydicom.data import get_testdata_file

    assert _native_read(get_testdata_file(name, download=False)) is None
