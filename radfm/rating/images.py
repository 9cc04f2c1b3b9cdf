"""Read a scan from the study folder and render one slice as PNG for the browser.

Rendering happens on the server so the page needs no imaging library. Volumes are read
once and kept in a small LRU cache; slices are windowed (CT presets in Hounsfield units or
an automatic 0.5–99.5 percentile window) and encoded with Pillow.

Supported: NIfTI (``.nii``/``.nii.gz``), DICOM files and DICOM series folders, NRRD,
``.npy`` arrays, and ordinary images (PNG, JPEG, BMP, TIFF).

Hostile files are refused before any library reads them, with the checks of
:mod:`radfm.transforms.guards`: an NRRD ``data file`` outside the scan's folder, and any file
whose header claims more decoded bytes than ``max_scan_bytes`` (default 2 GiB; a DICOM folder
counts all its slices). Window presets are those of the preprocessing
(:data:`radfm.transforms.intensity.WINDOW_PRESETS`).
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PICTURE_FORMATS = ("PNG", "JPEG", "BMP", "TIFF")  # the Pillow decoders the viewer uses (by content, not name)


def window_presets() -> dict[str, tuple[float, float]]:
    """The CT presets of the preprocessing (one set for the model input and the viewer), imported on first use:
    ``radfm.transforms`` pulls in MONAI and torch, which the app should not wait for at start-up."""
    from radfm.transforms.intensity import WINDOW_PRESETS

    return WINDOW_PRESETS


def _guards():
    from radfm.transforms import guards  # lazily, as window_presets()

    return guards


class ScanDisplayError(ValueError):
    """A scan cannot be read or shown; the message names the file."""


@dataclass
class DisplayVolume:
    """A scan ready for slicing.

    ``data``: [D, H, W] grey values (HU for CT) or [1, H, W, 3] uint8 for colour 2D images;
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


def _from_nifti(path: Path) -> np.ndarray:
    import nibabel as nib

    image = nib.as_closest_canonical(nib.load(str(path)))  # RAS+: axial slices along axis 2
    data = np.asarray(image.dataobj, dtype=np.float32)
    if data.ndim == 4:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim != 3:
        raise ScanDisplayError(f"{path}: expected a 2D or 3D NIfTI image, got shape {data.shape}")
    # [x, y, z] -> [z, y, x], then anterior at the top and patient right on the left (radiological)
    return np.ascontiguousarray(data.transpose(2, 1, 0)[:, ::-1, ::-1])


def _dicom_frames(dataset) -> np.ndarray:
    """Pixel data of one DICOM dataset as [frames, rows, cols] in modality units (HU for CT)."""
    from pydicom.pixels import apply_modality_lut

    pixels = dataset.pixel_array
    if getattr(dataset, "PhotometricInterpretation", "") in ("RGB", "YBR_FULL", "YBR_FULL_422"):
        raise ScanDisplayError("colour DICOM")  # handled by the caller as an RGB 2D image
    values = apply_modality_lut(pixels, dataset).astype(np.float32)
    if getattr(dataset, "PhotometricInterpretation", "") == "MONOCHROME1":
        values = values.max() - values  # show as MONOCHROME2: bright = dense
    return values[None] if values.ndim == 2 else values


def _from_dicom_file(path: Path) -> np.ndarray | DisplayVolume:
    import pydicom

    dataset = pydicom.dcmread(str(path))
    if getattr(dataset, "PhotometricInterpretation", "") in ("RGB", "YBR_FULL", "YBR_FULL_422"):
        from pydicom.pixels import convert_color_space

        rgb = dataset.pixel_array
        if dataset.PhotometricInterpretation != "RGB":
            rgb = convert_color_space(rgb, dataset.PhotometricInterpretation, "RGB")
        rgb = np.asarray(rgb, dtype=np.uint8)
        return DisplayVolume(rgb[None] if rgb.ndim == 3 else rgb[:1], (0.0, 255.0), rgb=True)
    return _dicom_frames(dataset)


def _from_dicom_folder(folder: Path, max_scan_bytes: int | None = None) -> np.ndarray:
    """A DICOM series folder: the largest series, slices sorted along the slice normal."""
    import pydicom

    by_series: dict[str, list] = {}
    claimed: dict[str, int] = {}
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        _guards().check_dicom_inflation(file, max_scan_bytes)
        try:
            header = pydicom.dcmread(str(file), stop_before_pixels=True)
        except Exception:  # noqa: BLE001 - non-DICOM files in a series folder are ignored
            continue
        uid = str(getattr(header, "SeriesInstanceUID", ""))
        claimed[uid] = claimed.get(uid, 0) + _guards().dicom_pixel_bytes(header)
        _guards().check_claimed_size(folder, claimed[uid], f"series {uid or '?'} (by its slices' headers)", max_scan_bytes)
        try:
            dataset = pydicom.dcmread(str(file))
        except Exception:  # noqa: BLE001
            continue
        if "PixelData" in dataset:
            by_series.setdefault(uid, []).append(dataset)
    if not by_series:
        raise ScanDisplayError(f"{folder}: no DICOM images with pixel data in this folder")
    series = max(by_series.values(), key=len)

    def position(dataset) -> float:
        ipp, iop = getattr(dataset, "ImagePositionPatient", None), getattr(dataset, "ImageOrientationPatient", None)
        if ipp is not None and iop is not None:
            normal = np.cross(np.asarray(iop[:3], float), np.asarray(iop[3:], float))
            return float(np.dot(normal, np.asarray(ipp, float)))
        return float(getattr(dataset, "InstanceNumber", 0) or 0)

    series.sort(key=position)
    frames = [_dicom_frames(d) for d in series]
    shapes = {f.shape[1:] for f in frames}
    if len(shapes) > 1:
        raise ScanDisplayError(f"{folder}: slices of different sizes {sorted(shapes)} in one series")
    return np.concatenate(frames, axis=0)


def _from_picture(path: Path, max_scan_bytes: int | None = None) -> np.ndarray | DisplayVolume:
    from PIL import Image

    _guards().check_picture(path, max_scan_bytes, formats=PICTURE_FORMATS)
    with Image.open(path, formats=list(PICTURE_FORMATS)) as picture:
        if picture.mode in ("RGB", "RGBA", "P", "CMYK", "YCbCr", "LA"):
            rgb = np.asarray(picture.convert("RGB"), dtype=np.uint8)
            return DisplayVolume(rgb[None], (0.0, 255.0), rgb=True)
        return np.asarray(picture, dtype=np.float32)[None]


def _from_nrrd(path: Path, max_scan_bytes: int | None = None) -> np.ndarray:
    data, _ = _guards().read_nrrd_bounded(path, max_scan_bytes)  # detached data stays in the folder; bounded inflation
    data = np.asarray(data, dtype=np.float32)
    if data.ndim == 2:
        data = data[:, :, None]
    return np.ascontiguousarray(data.transpose(2, 1, 0))


def _from_npy(path: Path, max_scan_bytes: int | None = None) -> np.ndarray:
    _guards().check_numpy(path, max_scan_bytes)
    data = np.load(path, allow_pickle=False).astype(np.float32)  # never unpickle
    if data.ndim == 2:
        return data[None]
    if data.ndim == 3:
        return np.ascontiguousarray(data.transpose(2, 0, 1))  # stored [H, W, D] like the model input
    raise ScanDisplayError(f"{path}: expected a 2D or 3D array, got shape {data.shape}")


def load_display_volume(path: str | Path, max_scan_bytes: int | None = None) -> DisplayVolume:
    """Read any supported scan for display; raises ScanDisplayError naming the file.

    ``max_scan_bytes``: decoded size allowed by the file's header (None: 2 GiB, see ``radfm.transforms.guards``).
    """
    path = Path(path)
    name = path.name.lower()
    try:
        if path.is_dir():
            result = _from_dicom_folder(path, max_scan_bytes)
        elif name.endswith((".nii", ".nii.gz")):
            _guards().check_nifti(path, max_scan_bytes)
            result = _from_nifti(path)
        elif name.endswith((".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")):
            result = _from_picture(path, max_scan_bytes)
        elif name.endswith((".nrrd", ".nhdr")):
            result = _from_nrrd(path, max_scan_bytes)
        elif name.endswith(".npy"):
            result = _from_npy(path, max_scan_bytes)
        else:  # .dcm or no extension: try DICOM
            _guards().check_dicom(path, max_scan_bytes)
            result = _from_dicom_file(path)
    except ScanDisplayError:
        raise
    except ValueError as error:
        from radfm.transforms.errors import ScanReadError

        if not isinstance(error, ScanReadError):
            raise ScanDisplayError(f"{path}: cannot read scan ({type(error).__name__}: {error})") from error
        raise ScanDisplayError(str(error)) from None  # refused by a guard: the message already names the file
    except Exception as error:
        raise ScanDisplayError(f"{path}: cannot read scan ({type(error).__name__}: {error})") from error
    if isinstance(result, DisplayVolume):
        return result
    if result.size == 0:
        raise ScanDisplayError(f"{path}: empty image")
    return DisplayVolume(result, _percentile_window(result))


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
