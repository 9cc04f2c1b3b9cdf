"""An honest deflated multi-frame DICOM costs about its decoded size in ``preprocess_scan``, not 3-4x.

pydicom inflates a deflated file whole for every read (the header, then the pixels: the data set
twice, the pixel bytes, the array). The reader inflates it once to a plain temp file and reads the
pixels from there into their array. Peak RSS is measured in a fresh process from after the imports
(``scripts/measure_dicom_memory.py``, which reports the same figures at larger sizes).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from hostile_files import deflated_multiframe_dicom  # noqa: E402
from measure_dicom_memory import measure  # noqa: E402

pytestmark = pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="peak RSS reset needs Linux /proc")


def test_a_deflated_multiframe_dicom_file_or_folder_is_read_with_a_peak_under_1_5x_its_decoded_size(tmp_path, monkeypatch):
    rows = columns = 1024
    frames = 64  # many frames: the resize's per-frame float32 chunks stay small next to the volume
    path = deflated_multiframe_dicom(tmp_path / "deflated.dcm", rows, columns, frames)
    decoded = rows * columns * frames * 2  # 128 MiB of uint16
    assert path.stat().st_size < decoded / 100  # a small file on disk: the claim is honest, the bytes are real
    _pixels_equal_pydicom_s(tmp_path, monkeypatch)
    row = measure(path, decoded)
    assert row["shape"] == [3, 256, 256, 64]
    assert row["extra"] < 1.5 * decoded, f"peak {row['extra'] / 2**20:.0f} MiB above the imports for " \
                                          f"{decoded / 2**20:.0f} MiB of pixels"
    # the same file as a series folder: the listing reads its header from a plain copy too
    folder = tmp_path / "series"
    folder.mkdir()
    path.rename(folder / path.name)
    row = measure(folder, decoded)
    assert row["extra"] < 1.5 * decoded, f"folder: peak {row['extra'] / 2**20:.0f} MiB above the imports for " \
                                          f"{decoded / 2**20:.0f} MiB of pixels"


def _pixels_equal_pydicom_s(tmp_path: Path, monkeypatch) -> None:
    """The plain copy's pixels are pydicom's own, and the copy is gone after the read."""
    import tempfile

    from radfm.transforms.dicom import read_dicom_file

    (tmp_path / "temp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "temp"))

    path = deflated_multiframe_dicom(tmp_path / "small.dcm", 64, 48, 3)
    data, meta = read_dicom_file(path)
    assert meta["filename_or_obj"] == str(path)
    assert np.array_equal(data[0], np.moveaxis(pydicom.dcmread(path).pixel_array, 0, -1))
    assert not list((tmp_path / "temp").iterdir())

