"""Read a scan from the study folder and render one slice as PNG for the browser.

Rendering happens on the server so the page needs no imaging library. Volumes are read
once and kept in a small LRU cache; slices are windowed (CT presets in Hounsfield units or
an automatic 0.5–99.5 percentile window) and encoded with Pillow.

Reading is the model's: :func:`radfm.transforms.read_scan` (the same readers, hostile-file
guards and ``max_scan_bytes`` limit, default 2 GiB; a DICOM folder with several series is
refused with the list of their SeriesInstanceUIDs unless ``series_uid`` names one), then
``DropAlpha`` and ``OrientToRAS``, the first steps of the preprocessing. So the viewer shows the
volume the model reads, in modality units (HU for CT; not rescaled to [0, 1]) at its original
resolution. Formats: those of ``radfm.transforms`` (NIfTI, DICOM file or series folder, NRRD,
MetaImage, PNG/JPEG, ``.npy``). Window presets are those of the preprocessing
(:data:`radfm.transforms.intensity.WINDOW_PRESETS`).

Display order: volumes with a known orientation (RAS+ after ``OrientToRAS``) are shown as axial
slices, slice 0 the most inferior, anterior at the top and the patient's right on the viewer's
left (radiological convention); 2D images and volumes without geometry (``.npy``, multi-frame
DICOM without positions) keep their stored rows and columns, slices along the last axis.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


def window_presets() -> dict[str, tuple[float, float]]:
    """The CT presets of the preprocessing (one set for the model input and the viewer), imported on first use:
    ``radfm.transforms`` pulls in MONAI and torch, which the app should not wait for at start-up."""
    from radfm.transforms.intensity import WINDOW_PRESETS

    return WINDOW_PRESETS


class ScanDisplayError(ValueError):
    """A scan cannot be read or shown; the message names the file."""


@dataclass
class DisplayVolume:
    """A scan ready for slicing.

    ``data``: [D, H, W] grey values (HU for CT) or [D, H, W, 3] uint8 for colour images;
    slice ``k`` is shown with row 0 at the top. ``auto_window``: (low, high) percentiles.
    """

    data: np.ndarray
    auto_window: tuple[float, float]
    rgb: bool = False

    @property
    def depth(self) -> int:
        return int(self.data.shape[0])


def _percentile_window(data: np.ndarray) -> tuple[float, float]:
    sample = data.reshape(-1)
    if sample.size > 2_000_000:  # a strided subsample is plenty for percentiles
        sample = sample[:: sample.size // 2_000_000 + 1]
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return 0.0, 1.0
    low, high = np.percentile(sample, [0.5, 99.5])
    if high <= low:
        low, high = float(sample.min()), float(sample.max())
    return float(low), float(high) if high > low else float(low) + 1.0


def display_order(array: np.ndarray, oriented: bool) -> np.ndarray:
    """Channel-first ``[C, H, W]`` or ``[C, X, Y, Z]`` (as the model reads it) -> ``[C, D, rows, cols]`` to show.

    ``oriented``: the volume is in RAS+ order (after ``OrientToRAS``): slices along Z, anterior at
    the top, patient's right on the left. Otherwise (2D, or no geometry): stored rows and columns.
    A view where possible; the caller copies.
    """
    if array.ndim == 3:
        return array[:, None]
    if array.ndim != 4:
        raise ValueError(f"expected a channel-first 2D image or 3D volume, got shape {tuple(array.shape)}")
    if oriented:
        return array.transpose(0, 3, 2, 1)[:, :, ::-1, ::-1]
    return array.transpose(0, 3, 1, 2)


def model_read(path: str | Path, *, series_uid: str | None = None, max_scan_bytes: int | None = None) -> Any:
    """The scan as the model reads it before resizing: ``read_scan`` -> ``DropAlpha`` -> ``OrientToRAS``.

    A ``MetaTensor`` [C, H, W] or [C, X, Y, Z] in modality units; ``ScanReadError`` naming the file.
    """
    from radfm.transforms import DropAlpha, OrientToRAS, read_scan

    image = read_scan(path, series_uid=series_uid, max_scan_bytes=max_scan_bytes)
    return OrientToRAS()(DropAlpha()(image))


def _to_display(image: Any, path: Path) -> DisplayVolume:
    array = image.detach().cpu().numpy() if hasattr(image, "detach") else np.asarray(image)
    meta = getattr(image, "meta", {}) or {}
    oriented = array.ndim == 4 and meta.get("orientation_known", True) is not False
    planes = display_order(array, oriented)  # [C, D, rows, cols]
    if planes.shape[0] == 3:  # colour picture or colour DICOM: shown as RGB, values as stored
        rgb = np.clip(np.moveaxis(planes, 0, -1), 0, 255).astype(np.uint8)
        return DisplayVolume(np.ascontiguousarray(rgb), (0.0, 255.0), rgb=True)
    if planes.shape[0] != 1:
        raise ScanDisplayError(f"{path}: {planes.shape[0]} channels; expected a grey or RGB image")
    grey = np.ascontiguousarray(planes[0], dtype=np.float32)
    if grey.size == 0:
        raise ScanDisplayError(f"{path}: empty image")
    return DisplayVolume(grey, _percentile_window(grey))


def load_display_volume(path: str | Path, max_scan_bytes: int | None = None, *,
                        series_uid: str | None = None) -> DisplayVolume:
    """Read a scan as the model reads it (:func:`model_read`) for display; raises ScanDisplayError naming the file.

    ``max_scan_bytes``: decoded size allowed by the file's header (None: 2 GiB, see ``radfm.transforms.guards``);
    ``series_uid``: the series to show from a DICOM folder holding several (otherwise such a folder is refused).
    """
    from radfm.transforms.errors import ScanReadError

    path = Path(path)
    try:
        image = model_read(path, series_uid=series_uid, max_scan_bytes=max_scan_bytes)
        return _to_display(image, path)
    except ScanDisplayError:
        raise
    except ScanReadError as error:
        raise ScanDisplayError(str(error)) from None  # the reader's message names the file (and the series)
    except Exception as error:
        raise ScanDisplayError(f"{path}: cannot read scan ({type(error).__name__}: {error})") from error


class VolumeCache:
    """A thread-safe LRU cache of display volumes keyed by path and modification time."""

    def __init__(self, max_items: int = 6, max_scan_bytes: int | None = None) -> None:
        self.max_items = max_items
        self.max_scan_bytes = max_scan_bytes
        self._items: OrderedDict[tuple[str, float], DisplayVolume] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: Path) -> DisplayVolume:
        key = (str(path), path.stat().st_mtime)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        volume = load_display_volume(path, self.max_scan_bytes)  # outside the lock: reading can take seconds
        with self._lock:
            self._items[key] = volume
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)
        return volume


def resolve_window(volume: DisplayVolume, window: str | None) -> tuple[float, float]:
    """(low, high) for a preset name, ``"auto"``/None, or ``"LOW,HIGH"``."""
    if window in (None, "", "auto"):
        return volume.auto_window
    presets = window_presets()
    if window in presets:
        return presets[window]
    try:
        low, high = (float(v) for v in str(window).split(","))
    except ValueError:
        raise ValueError(f"window: expected auto, {', '.join(presets)} or 'LOW,HIGH', got {window!r}") from None
    if high <= low:
        raise ValueError(f"window: high must exceed low, got {window!r}")
    return low, high


def render_slice_png(volume: DisplayVolume, index: int, window: str | None = None) -> bytes:
    """Slice ``index`` (0-based along depth) as PNG bytes, windowed to 8 bits."""
    from PIL import Image

    if not 0 <= index < volume.depth:
        raise IndexError(f"slice {index} out of range 0..{volume.depth - 1}")
    plane = volume.data[index]
    if volume.rgb:
        picture = Image.fromarray(np.ascontiguousarray(plane, dtype=np.uint8))
    else:
        low, high = resolve_window(volume, window)
        scaled = (np.nan_to_num(plane.astype(np.float32), nan=low) - low) / (high - low)
        picture = Image.fromarray((np.clip(scaled, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", compress_level=3)  # fast: slices are re-rendered on scroll
    return buffer.getvalue()
