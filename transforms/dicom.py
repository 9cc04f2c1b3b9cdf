"""DICOM reading with pydicom: single files (incl. multi-frame) and series folders.

Why not ``monai.data.PydicomReader`` for folders: it stacks every file of a folder in
InstanceNumber order and cannot separate several series; here slices are grouped by
SeriesInstanceUID, sorted by position along the slice normal and checked for a common
orientation. Plain uncompressed grey pixels are read straight from the file into their array
(:func:`read_native_pixels`); everything else is decoded by pydicom, and files whose transfer
syntax pydicom cannot decode here fall back to ITK (GDCM).

Arrays come back channel first: ``[C, rows, columns]`` or ``[C, rows, columns, slices]``,
with the modality LUT (RescaleSlope/Intercept, e.g. CT -> HU) applied and MONOCHROME1
inverted so that bright always means high values. The affine maps (row, column, slice)
indices to RAS millimetres.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import formats
from .errors import ScanReadError
from .guards import (
    HeaderCheck,
    check_claimed_size,
    check_dicom_inflation,
    dicom_pixel_bytes,
    effective_limit,
    inflated_dicom,
)

# header fields read when scanning a folder (no pixel data)
_HEADER_TAGS = [
    "SeriesInstanceUID", "SeriesDescription", "SeriesNumber", "Modality", "Rows", "Columns",
    "ImagePositionPatient", "ImageOrientationPatient", "InstanceNumber", "NumberOfFrames",
    "PixelSpacing", "ImagerPixelSpacing", "BitsAllocated", "SamplesPerPixel",
]


@dataclass
class DicomSeriesInfo:
    """One series found in a folder; ``files`` sorted in slice order once read."""

    uid: str
    modality: str = ""
    description: str = ""
    number: str = ""
    files: list[str] = field(default_factory=list)
    headers: list[Any] = field(default_factory=list)  # each file's header (no pixels), as listed

    def describe(self) -> str:
        """One line naming the series (UID, modality, file count, description) for error messages."""
        return (f"SeriesInstanceUID={self.uid} (modality {self.modality or '?'}, "
                f"{len(self.files)} file(s), description {self.description!r}, number {self.number or '?'})")


def list_dicom_series(folder: str | os.PathLike, *, max_scan_bytes: int | None = None) -> list[DicomSeriesInfo]:
    """All image series under ``folder`` (searched recursively), largest first.

    Files that are not DICOM, DICOMDIR index files and objects without pixel rows are skipped.
    A deflated file inflating beyond ``max_scan_bytes`` raises ``ScanTooLargeError`` (see ``guards``).
    """
    import pydicom

    by_uid: dict[str, DicomSeriesInfo] = {}
    for path in sorted(Path(folder).rglob("*")):
        if not path.is_file() or path.name.upper() == "DICOMDIR":
            continue
        check_dicom_inflation(path, max_scan_bytes)  # pydicom inflates a deflated file whole, even for headers
        kept = formats.recall(path, max_scan_bytes)  # the request path read this header for its claim
        try:
            if kept is not None and kept.checked is not None:
                ds = kept.checked.header
            else:
                with inflated_dicom(path, max_scan_bytes) as plain:  # a deflated file: its header from a plain copy
                    ds = pydicom.dcmread(plain or path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
        except Exception:  # not DICOM or unreadable: a folder may hold notes, thumbnails...
            continue
        if "Rows" not in ds or "SeriesInstanceUID" not in ds:
            continue  # SR, presentation states, DICOMDIR records: no image
        uid = str(ds.SeriesInstanceUID)
        info = by_uid.setdefault(uid, DicomSeriesInfo(
            uid=uid, modality=str(ds.get("Modality", "")), description=str(ds.get("SeriesDescription", "")),
            number=str(ds.get("SeriesNumber", ""))))
        info.files.append(str(path))
        info.headers.append(ds)
    return sorted(by_uid.values(), key=lambda s: (-len(s.files), s.uid))


def choose_series(folder: str | os.PathLike, series_uid: str | None, *,
                  max_scan_bytes: int | None = None) -> DicomSeriesInfo:
    """The series to read from ``folder``: the only one, or the one named by ``series_uid``."""
    series = list_dicom_series(folder, max_scan_bytes=max_scan_bytes)
    if not series:
        raise ScanReadError(f"{folder}: no DICOM images found in this folder (expected a folder of DICOM slices)")
    listing = "\n  ".join(s.describe() for s in series)
    if series_uid is not None:
        for s in series:
            if s.uid == series_uid:
                return s
        raise ScanReadError(f"{folder}: no series with SeriesInstanceUID={series_uid}; the folder holds:\n  {listing}")
    if len(series) > 1:
        raise ScanReadError(f"{folder}: the folder holds {len(series)} DICOM series; choose one: pass "
                            f"--series_uid UID on the command line (series_uid=UID in Python):\n  {listing}")
    return series[0]


_decoding = threading.local()  # set while this thread asks pydicom for pixels (see _QuietDecoderTries)
_ITK_STDERR = threading.Lock()  # one redirected read of fd 2 at a time
# what GDCM's JPEG codecs print on fd 2 while they try 8-bit before 12-bit (the read then succeeds)
_GDCM_TRIES = re.compile(rb"^(Unsupported JPEG data precision \d+|Invalid SOS parameters for sequential JPEG)\s*$")


class _QuietDecoderTries(logging.Filter):
    """Drop pydicom's per-plugin decode failures (an ERROR with a traceback each, e.g. Pillow on 12-bit JPEG)
    logged while :func:`_pixels` asks for the pixels: when every plugin fails pydicom raises one error naming
    them all, and that error is what the reader reports if GDCM cannot decode the file either."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(_decoding, "active", False)


logging.getLogger("pydicom.pixels.decoders.base").addFilter(_QuietDecoderTries())


@contextmanager
def _gdcm_tries_dropped_on_success() -> Iterator[None]:
    """Hold what native code writes to fd 2 during the block; give it back after, less GDCM's codec tries
    when the block succeeded (all of it when it failed, so nothing real is hidden)."""
    with _ITK_STDERR, tempfile.TemporaryFile() as held:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(held.fileno(), 2)
        succeeded = False
        try:
            yield
            succeeded = True
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            lines = held.read().splitlines(keepends=True)
            kept = [line for line in lines if not (succeeded and _GDCM_TRIES.match(line))]
            if kept:
                os.write(2, b"".join(kept))


def _pixels(ds: Any, path: str) -> np.ndarray:
    """Decoded pixels as stored: [rows, cols], [frames, rows, cols] (+ a trailing RGB axis)."""
    try:
        _decoding.active = True
        try:
            arr = ds.pixel_array
        finally:
            _decoding.active = False
    except Exception as pydicom_error:  # a codec pydicom lacks here: GDCM inside ITK has most of them
        try:
            import itk

            # GDCM only: ITK would otherwise pick any reader that claims the bytes (a DICOM preamble
            # can start with "NRRD" and carry a detached "data file:" line)
            with _gdcm_tries_dropped_on_success():
                arr = itk.array_from_image(itk.imread(path, imageio=itk.GDCMImageIO.New()))
            if int(ds.get("NumberOfFrames", 1) or 1) == 1 and arr.ndim >= 3 and arr.shape[0] == 1 \
                    and int(ds.get("SamplesPerPixel", 1)) == 1:
                arr = arr[0]
        except Exception:
            raise ScanReadError(f"{path}: cannot decode the DICOM pixel data "
                                f"(transfer syntax {ds.file_meta.get('TransferSyntaxUID', '?')}): {pydicom_error}") from None
    if str(ds.get("PhotometricInterpretation", "")) == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        arr = apply_color_lut(arr, ds)
    return arr


# uncompressed little-endian transfer syntaxes -> whether the VR is explicit
_NATIVE_LITTLE_ENDIAN = {"1.2.840.10008.1.2": False, "1.2.840.10008.1.2.1": True}
_PIXEL_DATA_TAG = (0x7FE0, 0x0010)


def read_native_pixels(handle: Any, ds: Any) -> np.ndarray | None:
    """Uncompressed grey pixels read from ``handle`` straight into their array, or None.

    ``ds`` is the header read with ``stop_before_pixels=True`` from ``handle``, which then
    stands at the Pixel Data element. For the common plain layout (little endian, 8/16/32
    bits allocated, one sample per pixel) the values are read with one ``np.fromfile`` instead
    of pydicom's bytes object plus array copy (3x faster on a 7 MB radiograph); the result
    equals ``ds.pixel_array`` (unused high bits cleared or sign-extended the same way).
    Anything else returns None (the caller then reads the file with pydicom).
    """
    import struct

    explicit_vr = _NATIVE_LITTLE_ENDIAN.get(str(getattr(ds, "file_meta", {}).get("TransferSyntaxUID", "")))
    bits = int(ds.get("BitsAllocated", 0) or 0)
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    stored = int(ds.get("BitsStored", bits) or bits)
    if (explicit_vr is None or bits not in (8, 16, 32) or not 1 <= stored <= bits or min(rows, cols, frames) < 1
            or int(ds.get("SamplesPerPixel", 1) or 1) != 1
            or str(ds.get("PhotometricInterpretation", "")) not in ("MONOCHROME1", "MONOCHROME2")):
        return None
    header_size = 12 if explicit_vr else 8  # tag, (VR, 2 reserved bytes,) 4-byte length
    head = handle.read(header_size)
    if len(head) != header_size or struct.unpack("<HH", head[:4]) != _PIXEL_DATA_TAG \
            or (explicit_vr and head[4:6] not in (b"OB", b"OW")):
        return None
    length = struct.unpack("<I", head[-4:])[0]
    count = rows * cols * frames
    dtype = np.dtype(f"<{'i' if int(ds.get('PixelRepresentation', 0) or 0) else 'u'}{bits // 8}")
    if length == 0xFFFFFFFF or length < count * dtype.itemsize:  # encapsulated or truncated
        return None
    arr = np.fromfile(handle, dtype=dtype, count=count)
    if arr.size != count:
        return None
    if stored < bits:  # as pydicom: shift the unused high bits out and back (clears or sign-extends)
        np.left_shift(arr, bits - stored, out=arr)
        np.right_shift(arr, bits - stored, out=arr)
    return arr.reshape((frames, rows, cols) if frames > 1 else (rows, cols))


def _apply_modality_lut(arr: np.ndarray, ds: Any) -> np.ndarray:
    """RescaleSlope/Intercept without a float64 copy: integers stay integers when they fit."""
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    return apply_rescale(arr, slope, intercept)


def apply_rescale(arr: np.ndarray, slope: float, intercept: float) -> np.ndarray:
    """``slope * arr + intercept`` leanly: unchanged for (1, 0); integers stay integers (int16 when
    they fit) for slope 1 and an integer intercept; otherwise one float32 copy (never float64)."""
    if slope == 1 and intercept == 0:
        return arr
    if slope == 1 and float(intercept).is_integer() and arr.dtype.kind in "iu":
        lo, hi = int(arr.min()) + int(intercept), int(arr.max()) + int(intercept)
        target = np.int16 if -(2 ** 15) <= lo and hi < 2 ** 15 else np.int32
        out = arr.astype(target)
        out += target(int(intercept))
        return out
    out = arr.astype(np.float32)
    out *= np.float32(slope)
    out += np.float32(intercept)
    return out


def _invert_monochrome1(arr: np.ndarray) -> np.ndarray:
    """MONOCHROME1 stores bright as low values; flip so that bright is high like everywhere else.

    ``lo + hi - x`` lies in [lo, hi], so integers are flipped in place in their own dtype (no
    int32 copy), as ``hi - x`` (in [0, hi - lo]) then ``+ lo``, when ``hi - lo`` fits the dtype.
    """
    lo, hi = _stored_range(arr)
    if arr.dtype.kind in "iu":
        lo, hi = int(lo), int(hi)
        if hi - lo <= np.iinfo(arr.dtype).max:
            out = arr if arr.flags.writeable else arr.copy()  # pydicom's decoded array is ours to reuse
            np.subtract(arr.dtype.type(hi), out, out=out)
            out += arr.dtype.type(lo)
            return out
        out = arr.astype(np.int32)  # int32 holds lo + hi - x for any 16-bit input
        np.subtract(np.int32(lo + hi), out, out=out)
        return out
    return (lo + hi) - arr


def _monochrome1_rescale(arr: np.ndarray) -> tuple[float, float]:
    """The inversion ``lo + hi - x`` as a pending (slope, intercept), for the resize to apply leanly."""
    lo, hi = _stored_range(arr)
    return -1.0, float(lo) + float(hi)


def _stored_range(arr: np.ndarray) -> tuple[float, float]:
    from .intensity import value_range  # torch's reduction: faster than numpy's min + max on uint16

    if not arr.dtype.isnative or arr.dtype.kind not in "iuf":
        return arr.min(), arr.max()
    return value_range(arr)


def _pixel_spacing(ds: Any) -> tuple[float, float]:
    """(row spacing, column spacing) in mm; 1 mm when the file does not say."""
    for item in (ds, *_functional_group(ds, "PixelMeasuresSequence")):
        for name in ("PixelSpacing", "ImagerPixelSpacing"):
            value = item.get(name)
            if value and len(value) == 2 and float(value[0]) > 0 and float(value[1]) > 0:
                return float(value[0]), float(value[1])
    return 1.0, 1.0


def _functional_group(ds: Any, sequence: str) -> list:
    """Items of ``sequence`` in the shared functional groups of an enhanced multi-frame file."""
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared and sequence in shared[0]:
        return list(shared[0].get(sequence))
    return []


def _orientation(ds: Any) -> np.ndarray | None:
    """ImageOrientationPatient as [row cosine(3), column cosine(3)], or None when absent."""
    iop = ds.get("ImageOrientationPatient")
    if iop is None:
        for item in _functional_group(ds, "PlaneOrientationSequence"):
            iop = item.get("ImageOrientationPatient")
    return None if iop is None else np.asarray([float(v) for v in iop], dtype=np.float64)


def _frame_positions(ds: Any) -> list[np.ndarray] | None:
    """ImagePositionPatient per frame of an enhanced multi-frame file, or None."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if not per_frame:
        return None
    try:
        return [np.asarray([float(v) for v in f.PlanePositionSequence[0].ImagePositionPatient]) for f in per_frame]
    except (AttributeError, IndexError):
        return None


def _affine_ras(iop: np.ndarray, first_position: np.ndarray, spacing_rc: tuple[float, float],
                slice_step: np.ndarray) -> np.ndarray:
    """4x4 affine from (row, column, slice) indices to RAS mm (DICOM is LPS: x and y negate)."""
    row_cosine, column_cosine = iop[:3], iop[3:]
    affine = np.eye(4)
    affine[:3, 0] = column_cosine * spacing_rc[0]  # moving down one row follows the column cosine
    affine[:3, 1] = row_cosine * spacing_rc[1]
    affine[:3, 2] = slice_step
    affine[:3, 3] = first_position
    affine[:2, :] *= -1
    return affine


def _channel_first(arr: np.ndarray, samples_per_pixel: int, frames: int) -> np.ndarray:
    """[frames?, rows, cols, samples?] -> [C, rows, cols, frames?] (views only, no copy)."""
    if samples_per_pixel == 1:
        arr = arr[None]
    else:
        arr = np.moveaxis(arr, -1, 0)
    if frames > 1:
        arr = np.moveaxis(arr, 1, -1)  # frames last: [C, rows, cols, frames]
    return arr


def _base_meta(ds: Any, path: str) -> dict[str, Any]:
    return {
        "filename_or_obj": path,
        "modality": str(ds.get("Modality", "")) or None,
        "photometric_interpretation": str(ds.get("PhotometricInterpretation", "")),
        "series_uid": str(ds.get("SeriesInstanceUID", "")) or None,
        "source_format": "dicom",
    }


def inspect_dicom_file(path: str | os.PathLike, max_scan_bytes: int | None = None) -> formats.InspectedScan | None:
    """One DICOM file's header read as :func:`read_dicom_file` reads it (no pixels), kept for it.

    Inside :func:`radfm.transforms.formats.inspected_scans` the reader (and the series listing)
    reuses this parse and the position of the pixel data instead of reading the header again;
    the size check runs there, on this header. Values over 1 MiB are left on disk (read if asked
    for). None for a deflated file (its data set must first be inflated, see ``guards``) or one
    pydicom reads only with ``force`` (no preamble): those are read again by the reader.
    """
    import pydicom
    from pydicom.filereader import _read_file_meta_info, read_preamble

    path = str(path)
    try:
        with open(path, "rb") as handle:
            read_preamble(handle, False)
            if str(_read_file_meta_info(handle).get("TransferSyntaxUID", "")) == "1.2.840.10008.1.2.1.99":
                return None
            handle.seek(0)
            ds = pydicom.dcmread(handle, stop_before_pixels=True, defer_size="1 MB")
            pixels_at = handle.tell()
        stamp = formats.file_stamp(path)
    except Exception:
        return None
    return formats.remember(formats.InspectedScan(path, formats.DICOM, HeaderCheck(ds, dicom_pixel_bytes(ds), pixels_at),
                                                  effective_limit(max_scan_bytes), stamp))


def read_dicom_file(path: str | os.PathLike, defer_rescale: bool = False, *,
                    max_scan_bytes: int | None = None, checked: HeaderCheck | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """One DICOM file (single- or multi-frame) -> (array [C, rows, cols(, frames)], metadata).

    ``defer_rescale``: a MONOCHROME1 image is not inverted here but returned with
    ``meta["rescale"] = (-1, lo + hi)``, which the resize applies to its (smaller) output.
    ``max_scan_bytes``: rows x columns x frames x samples x bits (and a deflated file's inflated
    size) above it raise ``ScanTooLargeError`` before the pixels are read (None: the default limit).
    ``checked``: this file's header as :func:`inspect_dicom_file` read it (else the kept inspection
    of this file, else it is read here); the size check runs on it all the same.
    """
    import pydicom

    path = str(path)
    with inflated_dicom(path, max_scan_bytes) as plain:  # deflated: read from a plain temp copy, once
        if plain is not None:
            data, meta = read_dicom_file(plain, defer_rescale, max_scan_bytes=max_scan_bytes)
            meta["filename_or_obj"] = path
            return data, meta
    if checked is None:
        kept = formats.recall(path, max_scan_bytes)
        checked = kept.checked if kept is not None and kept.format is formats.DICOM else None
    try:
        with open(path, "rb") as handle:  # the header, then plain pixels straight from the file
            if checked is not None and checked.header_bytes:
                ds = checked.header
                ds.filename = path  # values left on disk are read from here (the file may have moved)
                handle.seek(checked.header_bytes)
            else:
                ds = pydicom.dcmread(handle, stop_before_pixels=True)
            check_claimed_size(path, dicom_pixel_bytes(ds), f"the DICOM header ({ds.get('Rows', '?')} rows x "
                               f"{ds.get('Columns', '?')} columns x {ds.get('NumberOfFrames', 1) or 1} frames, "
                               f"{ds.get('BitsAllocated', '?')} bits)", max_scan_bytes)
            pixels = read_native_pixels(handle, ds)
        if pixels is None:  # compressed, colour, big endian, ...: pydicom (or ITK) decodes
            ds = pydicom.dcmread(path)
    except ScanReadError:
        raise
    except Exception as error:
        raise ScanReadError(f"{path}: not a readable DICOM file ({type(error).__name__}: {error})") from None
    if pixels is None:
        if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
            raise ScanReadError(f"{path}: DICOM object without pixel data (SOP class "
                                f"{ds.get('SOPClassUID', '?')}); expected an image")
        pixels = _pixels(ds, path)
    arr = _apply_modality_lut(pixels, ds)
    pending: dict[str, Any] = {}
    if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1":
        if defer_rescale:
            pending["rescale"] = _monochrome1_rescale(arr)
        else:
            arr = _invert_monochrome1(arr)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if samples > 1 and arr.shape[-1] != samples:  # palette colour expanded to RGB
        samples = arr.shape[-1]
    if str(ds.get("PhotometricInterpretation", "")) == "PALETTE COLOR":
        samples = 3
    data = _channel_first(arr, samples, frames)
    meta = _base_meta(ds, path)
    spacing_rc = _pixel_spacing(ds)
    iop = _orientation(ds)
    positions = _frame_positions(ds) if frames > 1 else None
    position = ds.get("ImagePositionPatient")
    if frames > 1 and iop is not None and positions and len(positions) == frames:
        step = (positions[-1] - positions[0]) / (frames - 1)
        meta["affine"] = _affine_ras(iop, positions[0], spacing_rc, step)
        meta["orientation_known"] = True
    elif iop is not None and position is not None and frames == 1:
        normal = np.cross(iop[:3], iop[3:])
        thickness = float(ds.get("SpacingBetweenSlices") or ds.get("SliceThickness") or 1.0)
        meta["affine"] = _affine_ras(iop, np.asarray([float(v) for v in position]), spacing_rc, normal * thickness)
        meta["orientation_known"] = True
    else:  # no geometry (e.g. multi-frame without functional groups, most radiographs): keep as stored
        meta["affine"] = np.diag([spacing_rc[0], spacing_rc[1], 1.0, 1.0])
        meta["orientation_known"] = False
    meta.update(pending)
    return data, meta


def read_dicom_series(folder: str | os.PathLike, series_uid: str | None = None, *,
                      max_scan_bytes: int | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """A folder of DICOM slices -> (array [C, rows, cols, slices] (or [C, rows, cols] for one slice), metadata).

    ``max_scan_bytes``: the whole volume (sum over the slices' headers) must fit, checked before
    any pixels are read (``ScanTooLargeError``; None: the default limit).
    """
    folder = str(folder)
    series = choose_series(folder, series_uid, max_scan_bytes=max_scan_bytes)
    if len(series.files) == 1:
        data, meta = read_dicom_file(series.files[0], max_scan_bytes=max_scan_bytes)
        meta["filename_or_obj"] = folder
        return data, meta
    headers = series.headers  # read while listing the folder
    check_claimed_size(folder, sum(dicom_pixel_bytes(h) for h in headers),
                       f"series {series.uid} ({len(headers)} slices, by their headers)", max_scan_bytes)
    if any(int(h.get("NumberOfFrames", 1) or 1) > 1 for h in headers):
        raise ScanReadError(f"{folder}: series {series.uid} mixes multi-frame files; pass one file at a time")
    sizes = {(int(h.Rows), int(h.Columns)) for h in headers}
    if len(sizes) > 1:
        raise ScanReadError(f"{folder}: series {series.uid} has slices of different sizes {sorted(sizes)}; "
                            "expected one rows x columns for a volume")
    orientations = [_orientation(h) for h in headers]
    have_geometry = all(o is not None for o in orientations) and all("ImagePositionPatient" in h for h in headers)
    if have_geometry:
        if any(not np.allclose(o, orientations[0], atol=1e-3) for o in orientations):
            raise ScanReadError(f"{folder}: series {series.uid} has slices with different orientations "
                                "(a localizer?); expected parallel slices")
        normal = np.cross(orientations[0][:3], orientations[0][3:])
        positions = [np.asarray([float(v) for v in h.ImagePositionPatient]) for h in headers]
        along = np.asarray([float(p @ normal) for p in positions])
        order = np.argsort(along, kind="stable")
        gaps = np.diff(along[order])
        if np.any(np.abs(gaps) < 1e-4):
            raise ScanReadError(f"{folder}: series {series.uid} has several slices at the same position "
                                "(multi-echo or time series?); expected one 3D volume")
    else:
        order = np.argsort([int(h.get("InstanceNumber", i) or i) for i, h in enumerate(headers)], kind="stable")
    files = [series.files[i] for i in order]
    first_data, first_meta = read_dicom_file(files[0])
    volume = np.empty(first_data.shape + (len(files),), dtype=first_data.dtype)
    volume[..., 0] = first_data
    for k, path in enumerate(files[1:], start=1):
        slice_data, _ = read_dicom_file(path)
        if slice_data.dtype != volume.dtype:  # rescale differs per slice: widen once
            both_integer = volume.dtype.kind in "iu" and slice_data.dtype.kind in "iu"
            volume = volume.astype(np.int32 if both_integer else np.float32)
        volume[..., k] = slice_data
    meta = dict(first_meta, filename_or_obj=folder, series_uid=series.uid, number_of_files=len(files))
    if have_geometry:
        sorted_positions = [positions[i] for i in order]
        step = (sorted_positions[-1] - sorted_positions[0]) / (len(files) - 1)
        meta["affine"] = _affine_ras(orientations[0], sorted_positions[0], _pixel_spacing(headers[0]), step)
        meta["uneven_slice_spacing"] = bool(gaps.size and (gaps.max() - gaps.min()) > 0.1 * abs(gaps.mean()))
        meta["orientation_known"] = True
    return volume, meta

