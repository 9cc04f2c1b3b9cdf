"""Our DICOM reading as a MONAI ``ImageReader``: ``LoadImage(d)(..., reader=RadFMDicomReader(...))``.

``RadFMDicomReader`` wraps :mod:`radfm.transforms.dicom` (no second copy of the DICOM logic):
a folder is one series chosen by ``SeriesInstanceUID`` (a folder holding several series is an
error that lists them unless ``series_uid`` names one, as :func:`read_scan` does), slices are
sorted by position along the slice normal and checked for a common orientation; single files
(also multi-frame) are read with the fast native read for plain uncompressed grey pixels and
pydicom (or ITK/GDCM) otherwise. The modality LUT is applied, MONOCHROME1 is inverted.

MONAI's conventions for what ``get_data`` returns:

* the array is spatial first, ``[rows, columns(, slices)]``; colour (RGB) puts the channel last
  and says so with ``meta["original_channel_dim"] = -1``; grey images have no channel axis
  (``"no_channel"``), so ``LoadImage(..., ensure_channel_first=True)`` gives ``[C, H, W(, D)]``
  exactly like :func:`radfm.transforms.read_scan`;
* ``meta["affine"]`` / ``meta["original_affine"]`` map (row, column, slice) indices to RAS
  millimetres, ``meta["space"] = "RAS"`` (so MONAI does not flip LPS again), and
  ``meta["spatial_shape"]`` is the spatial size; our extra keys (``modality``, ``series_uid``,
  ``photometric_interpretation``, ``orientation_known``, ``uneven_slice_spacing``, ...) are kept.

Errors: MONAI's ``LoadImage`` quietly tries its other readers when a reader's ``read`` raises,
and ITK would then read a folder of several series as one volume (a guess). So for paths this
reader claims (folders and DICOM files) ``read`` hands the ``ScanReadError`` to ``get_data``,
which raises it: an ambiguous folder, a bad ``series_uid`` or a corrupt file fails with our
message naming the file and what was expected. Paths it does not claim raise in ``read``, so
MONAI falls back to its own readers as usual.

Pixel values keep their stored type in ``get_data``; ``LoadImage`` then casts to its ``dtype``
(float32 unless ``dtype=None``). A single-slice series/file is returned as 2D, as ``read_scan`` does.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.data.image_reader import ImageReader
from monai.utils import MetaKeys, SpaceKeys

from .dicom import read_dicom_file, read_dicom_series
from .errors import ScanReadError
from .formats import DICOM, DICOM_SERIES, detect_format

DICOM_SUFFIXES = DICOM.suffixes  # from the one registry of formats

# (array [C, *spatial] as our reader returns it, metadata)
DicomImage = tuple[np.ndarray, dict[str, Any]]


class _DeferredError:
    """A read error kept for ``get_data`` to raise (see the module docstring: no silent fallback)."""

    def __init__(self, error: ScanReadError) -> None:
        self.error = error


class RadFMDicomReader(ImageReader):
    """MONAI ``ImageReader`` for DICOM files and series folders, built on radfm.transforms' reader.

    Args:
        series_uid: the SeriesInstanceUID to read from a folder holding several series (without
            it such a folder is an error listing the series; never a guess).

    Example::

        LoadImaged(keys="image", reader=RadFMDicomReader(series_uid="1.2.3"), ensure_channel_first=True)
    """

    def __init__(self, series_uid: str | None = None) -> None:
        super().__init__()
        self.series_uid = series_uid

    # ------------------------------------------------------------------ ImageReader API ----
    def verify_suffix(self, filename: Sequence[str | os.PathLike] | str | os.PathLike) -> bool:
        """True for folders (a DICOM series), DICOM suffixes, and files carrying the DICM preamble."""
        names = [filename] if isinstance(filename, (str, os.PathLike)) else list(filename)
        return bool(names) and all(self._is_dicom(name) for name in names)

    def read(self, data: Sequence[str | os.PathLike] | str | os.PathLike,
             **kwargs: Any) -> DicomImage | list[DicomImage] | _DeferredError:
        """Read one path (file or series folder) or several (stacked as channels by :meth:`get_data`).

        ``kwargs`` may hold ``series_uid`` to override the reader's for this call.
        """
        series_uid = kwargs.pop("series_uid", self.series_uid)
        if kwargs:
            raise TypeError(f"RadFMDicomReader.read: unexpected options {sorted(kwargs)}; only series_uid")
        names = [data] if isinstance(data, (str, os.PathLike)) else list(data)
        if not names:
            raise ScanReadError("RadFMDicomReader.read: no path given; expected a DICOM file or series folder")
        if not self.verify_suffix(names):  # not ours: raise, so LoadImage may try its other readers
            raise ScanReadError(f"{names[0] if len(names) == 1 else names}: not a DICOM file or folder; "
                                f"expected a folder of DICOM slices or a file ending in {', '.join(DICOM_SUFFIXES)} "
                                "or carrying the DICM preamble")
        try:
            images = [self._read_one(str(name), series_uid) for name in names]
        except ScanReadError as error:  # ours to report: get_data raises it (LoadImage would guess on)
            return _DeferredError(error)
        return images[0] if len(images) == 1 else images

    def get_data(self, img: DicomImage | list[DicomImage] | _DeferredError) -> tuple[np.ndarray, dict[str, Any]]:
        """(array in MONAI's layout, metadata in MONAI's keys); several images are stacked along a
        new first (channel) axis, which then must agree in shape. Raises the ``ScanReadError`` of a failed read."""
        if isinstance(img, _DeferredError):
            raise img.error
        if isinstance(img, list):
            return self._stack([self._monai_layout(*one) for one in img])
        return self._monai_layout(*img)

    # ------------------------------------------------------------------ helpers ----
    @staticmethod
    def _is_dicom(name: str | os.PathLike) -> bool:
        path = Path(name)
        if path.is_dir():
            return True  # a series folder: what is inside is checked when it is read
        if not path.exists():
            return path.name.lower().endswith(DICOM_SUFFIXES)  # claimed by name: read() reports it missing
        try:
            return detect_format(path) in (DICOM, DICOM_SERIES)  # content first, then name (formats registry)
        except ScanReadError:
            return False

    @staticmethod
    def _read_one(path: str, series_uid: str | None) -> DicomImage:
        if Path(path).is_dir():  # choose_series inside: several series without series_uid is an error
            return read_dicom_series(path, series_uid=series_uid)
        if not Path(path).is_file():
            raise ScanReadError(f"{path}: no such file or folder")
        return read_dicom_file(path)

    @staticmethod
    def _monai_layout(array: np.ndarray, meta: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
        """Our [C, rows, cols(, slices)] -> MONAI's spatial-first array and metadata keys."""
        if array.ndim == 4 and array.shape[-1] == 1:  # one slice: a 2D image (as read_scan does)
            array = array[..., 0]
        affine = np.asarray(meta.get("affine", np.eye(4)), dtype=np.float64)
        out = {k: v for k, v in meta.items() if k != "affine" and v is not None}
        if array.shape[0] == 1:
            data = array[0]
            out[MetaKeys.ORIGINAL_CHANNEL_DIM] = "no_channel"
        else:
            data = np.moveaxis(array, 0, -1)
            out[MetaKeys.ORIGINAL_CHANNEL_DIM] = -1
        spatial_shape = array.shape[1:]
        out[MetaKeys.AFFINE] = affine
        out[MetaKeys.ORIGINAL_AFFINE] = affine.copy()
        out[MetaKeys.SPATIAL_SHAPE] = np.asarray(spatial_shape)
        out[MetaKeys.SPACE] = SpaceKeys.RAS
        return data, out

    @staticmethod
    def _stack(items: list[tuple[np.ndarray, dict[str, Any]]]) -> tuple[np.ndarray, dict[str, Any]]:
        shapes = {tuple(a.shape) for a, _ in items}
        names = [m.get("filename_or_obj") for _, m in items]
        if len(shapes) > 1:
            raise ScanReadError(f"{names}: images of different shapes {sorted(shapes)} cannot be stacked as "
                                "channels; expected one shape")
        if any(m[MetaKeys.ORIGINAL_CHANNEL_DIM] != "no_channel" for _, m in items):
            raise ScanReadError(f"{names}: only grey images can be stacked as channels")
        meta = dict(items[0][1])
        meta["filename_or_obj"] = names
        meta[MetaKeys.ORIGINAL_CHANNEL_DIM] = 0
        return np.stack([a for a, _ in items]), meta


__all__ = ["RadFMDicomReader"]
