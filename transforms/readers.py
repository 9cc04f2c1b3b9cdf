"""Load any scan a radiologist has on disk as a channel-first MetaTensor in its stored dtype.

Formats: NIfTI (.nii/.nii.gz, MONAI ``NibabelReader``), DICOM file (incl. multi-frame) or a
folder holding a DICOM series (pydicom, see ``dicom.py``), NRRD (``NrrdReader``), MetaImage
.mha/.mhd (``ITKReader``), PNG/JPEG (``PILReader``), .npy (``NumpyReader``, no pickles).

Output: ``MetaTensor [C, H, W]`` for 2D images (rows, columns as stored) or
``[C, H, W, D]`` for volumes, dtype as stored (int16 CT stays int16: the float32 copy is
made later, chunk by chunk, by the resize). A volume with one slice is returned as 2D.
Metadata: ``filename_or_obj``, ``original_shape``, ``original_dtype``, ``spacing``,
``original_affine``, ``spatial_dims``, ``modality`` (when the file says), ``orientation_known``,
``source_format`` and, for DICOM, ``series_uid`` and ``photometric_interpretation``.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends

from . import formats
from .dicom import apply_rescale, read_dicom_file, read_dicom_series
from .errors import ScanReadError
from .guards import ALLOWED_PIL_FORMATS, read_metaimage_header, read_nrrd_bounded, read_nrrd_header
from .volumes import split_volume

try:  # ISA-L's gzip: optional, a faster inflate of .nii.gz (nibabel's zlib read otherwise)
    from isal import igzip as _igzip
except ImportError:  # pragma: no cover - isal ships wheels for the usual platforms
    _igzip = None


# PIL modes that PILReader cannot hand over as plain grey/RGB(A) arrays
_PIL_CONVERT = {"P": "RGBA", "PA": "RGBA", "CMYK": "RGB", "YCbCr": "RGB", "LAB": "RGB", "HSV": "RGB", "1": "L"}


def scan_format(path: str | os.PathLike) -> str:
    """The reader a path needs: nifti, dicom, dicom_series, nrrd, itk, image or numpy.

    ``formats.detect_format(path).reader`` (content first, then name; see :mod:`radfm.transforms.formats`).
    """
    return formats.detect_format(path).reader


def _depth_dims(shape: Sequence[int], depth_axis: int) -> int:
    """2 or 3 from a header's array shape: 3 when the axis ``depth_axis`` exists and is longer than 1."""
    return 3 if len(shape) > depth_axis and int(shape[depth_axis]) > 1 else 2


def scan_spatial_dims(path: str | os.PathLike) -> int:
    """2 or 3: the spatial dimensions :func:`read_scan` gives for ``path``, from its header only.

    Same format detection as :func:`scan_format` (``ScanReadError`` for missing or unsupported
    files); no pixels are read. A volume with one slice counts as 2D, as ``read_scan`` returns it.
    A DICOM series folder counts as 3D (reading every header to find one-slice series would cost
    what the sampler saves); a DICOM file is 3D when it holds several frames.
    """
    fmt = scan_format(path)
    path_text, volume = split_volume(path)
    try:
        if formats.by_reader(fmt).dims == (2,):
            return 2
        if fmt == "dicom_series":
            return 3
        if fmt == "dicom":
            import pydicom

            from .guards import check_dicom_inflation

            check_dicom_inflation(path_text)  # pydicom inflates a deflated file whole, even for a header
            header = pydicom.dcmread(path_text, stop_before_pixels=True, specific_tags=["NumberOfFrames"])
            return 3 if int(header.get("NumberOfFrames", 1) or 1) > 1 else 2
        if fmt == "nifti":
            import nibabel as nib

            shape = nib.load(path_text).shape  # the header only: the data stays a proxy
            return _depth_dims(shape[:3] if volume is not None else shape, 2)
        if fmt == "nrrd":  # the guard's parse (pynrrd's parser, checked)
            return _depth_dims([int(s) for s in read_nrrd_header(path_text)[0].get("sizes", [])], 2)
        if fmt == "numpy":
            with open(path_text, "rb") as handle:
                version = np.lib.format.read_magic(handle)
                shape = (np.lib.format.read_array_header_1_0(handle) if version == (1, 0)
                         else np.lib.format.read_array_header_2_0(handle))[0]
            return _depth_dims(shape, len(shape) - 1) if len(shape) >= 3 else 2  # [H, W, D] or [C, H, W, D]
        # MetaImage: DimSize from the guard's strict parse
        return _depth_dims([int(v) for v in read_metaimage_header(path_text)["DimSize"].split()], 2)
    except ScanReadError:
        raise
    except Exception as error:
        raise ScanReadError(f"{path_text}: cannot read the {fmt} header ({type(error).__name__}: {error}); "
                            f"expected a valid {fmt} file") from None


def _monai_read(reader: Any, path: str) -> tuple[np.ndarray, dict[str, Any]]:
    image = reader.read(path)
    array, meta = reader.get_data(image)
    return np.asanyarray(array), dict(meta)


def _read_pil(path: str) -> tuple[np.ndarray, dict[str, Any]]:
    from monai.data import PILReader

    def convert(image):  # palette/CMYK/bilevel -> grey or RGB(A) so that channels mean colours
        return image.convert(_PIL_CONVERT[image.mode]) if image.mode in _PIL_CONVERT else image

    # only the PNG/JPEG decoders: Pillow would otherwise open any format it knows by its content
    reader = PILReader(converter=convert, reverse_indexing=False, formats=list(ALLOWED_PIL_FORMATS))
    array, meta = _monai_read(reader, path)
    array = array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0)  # [C, rows, cols]
    return array, {"affine": np.eye(4), "orientation_known": False}


def _read_numpy(path: str) -> tuple[np.ndarray, dict[str, Any]]:
    from monai.data import NumpyReader

    array, _ = _monai_read(NumpyReader(allow_pickle=False), path)
    if array.ndim in (2, 3):
        array = array[None]  # [H, W] image or [H, W, D] volume
    elif not (array.ndim == 4 and array.shape[0] in (1, 3)):
        raise ScanReadError(f"{path}: .npy array of shape {tuple(array.shape)}; expected [H, W], [H, W, D] "
                            "or channel-first [C, H, W, D] with C = 1 or 3")
    return array, {"affine": np.eye(4), "orientation_known": False}


def _inflate_gzip_block(proxy: Any) -> np.ndarray | None:
    """The stored data block of a gzip-compressed NIfTI, inflated with ISA-L (``isal``), else None.

    ISA-L inflates about twice as fast as zlib, and inflating is most of the time it takes to
    read a .nii.gz. Same bytes as nibabel's own read: ``offset`` skipped, exactly
    ``prod(shape) * itemsize`` read straight into the array. None (nibabel reads it) when isal
    is not installed or the proxy is not a plain array proxy of a .gz file.
    """
    from nibabel.arrayproxy import ArrayProxy

    if _igzip is None or type(proxy) is not ArrayProxy:  # subclasses may read differently: leave them to nibabel
        return None
    path, shape, dtype = getattr(proxy, "file_like", None), tuple(proxy.shape), np.dtype(proxy.dtype)
    if not isinstance(path, str) or not path.lower().endswith(".gz"):
        return None
    flat = np.empty(int(np.prod(shape, dtype=np.int64)), dtype=dtype)
    buffer, filled = memoryview(flat).cast("B"), 0
    with _igzip.open(path, "rb") as handle:
        handle.seek(int(proxy.offset))
        while filled < len(buffer):
            count = handle.readinto(buffer[filled:])
            if not count:
                raise ScanReadError(f"{path}: the data block ends after {filled} of {len(buffer)} bytes "
                                    "(a truncated file?)")
            filled += count
    return flat.reshape(shape, order=proxy.order)


def _nifti_image(path: str, header: Any) -> Any:
    """The nibabel image of ``path`` on the header the guard parsed (no second parse of the file).

    Built as ``nibabel.load`` builds it (``from_file_map``): an array proxy over the file with a
    copy of the header, the affine from the header.
    """
    import nibabel as nib

    klass = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
    proxy = klass.ImageArrayProxy(path, header.copy(), mmap=True)
    return klass(proxy, header.get_best_affine(), header)


def _unscaled_nibabel_reader(header: Any = None) -> Any:
    """MONAI ``NibabelReader`` that returns the stored integers and keeps scl_slope/scl_inter aside.

    nibabel applies the NIfTI scaling itself in float64 (8x a uint8 volume); we apply it leanly
    (:func:`apply_rescale`) or defer it to the resize (``defer_rescale``). With ``header`` (the
    guard's parse, :func:`radfm.transforms.guards.check_nifti`) the file's header is not parsed again.
    """
    from monai.data import NibabelReader
    from monai.data.utils import correct_nifti_header_if_necessary

    class UnscaledNibabelReader(NibabelReader):
        rescale: tuple[float, float] = (1.0, 0.0)

        def read(self, data, **kwargs):
            if header is None:
                return super().read(data, **kwargs)
            self.filenames = (data,)
            return correct_nifti_header_if_necessary(_nifti_image(str(data), header))

        def _get_array_data(self, img, filename=None):
            proxy = img.dataobj
            slope, inter = float(getattr(proxy, "slope", 1.0)), float(getattr(proxy, "inter", 0.0))
            stored = _inflate_gzip_block(proxy)  # the stored values, as get_unscaled() gives them
            if not hasattr(proxy, "get_unscaled") or not (np.isfinite(slope) and np.isfinite(inter)) \
                    or (slope, inter) == (1.0, 0.0) or slope == 0:
                return np.asanyarray(proxy) if stored is None else stored
            self.rescale = (slope, inter)
            return np.asanyarray(proxy.get_unscaled()) if stored is None else stored

    return UnscaledNibabelReader()


def _read_spatial(reader: Any, path: str, defer_rescale: bool = False,
                  volume: int | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """NIfTI / NRRD / MHA: spatial axes first, extra axes after; returns [C=1, x, y(, z)] (``volume``: that
    volume of a 4D image)."""
    array, meta = _monai_read(reader, path)
    extra: dict[str, Any] = {}
    slope, inter = getattr(reader, "rescale", (1.0, 0.0))
    if (slope, inter) != (1.0, 0.0):
        lossless = slope == 1 and float(inter).is_integer() and array.dtype.kind in "iu"
        if defer_rescale and not lossless:  # keep the stored integers; the resize applies the scaling
            extra["rescale"] = (slope, inter)
        else:
            array = apply_rescale(array, slope, inter)
    shape = tuple(array.shape)
    if volume is not None:  # `path[t]`: volume t of a 4D image
        if array.ndim != 4 or not 0 <= volume < shape[3]:
            held = f"{shape[3]} volumes (0 to {shape[3] - 1})" if array.ndim == 4 else "no volumes to pick"
            raise ScanReadError(f"{path}[{volume}]: image of shape {shape} has {held}; expected [t] with t in that range")
        array = array[..., volume]
    while array.ndim > 3 and array.shape[-1] == 1:  # (x, y, z, 1): a 3D volume stored as 4D
        array = array[..., 0]
    if array.ndim > 3:
        pick = (f"pick one with a [t] suffix on the path or the upload's file name, t from 0 to {shape[3] - 1} "
                f"({os.path.basename(path)}[0]; radfm generate --volume N)" if array.ndim == 4
                else "split it and pass one volume")
        raise ScanReadError(f"{path}: {array.ndim}D image of shape {shape} (a time series or multi-volume "
                            f"file?); expected one 2D image or 3D volume; {pick}")
    affine = np.asarray(meta.get("affine", np.eye(4)), dtype=np.float64)
    if affine.shape != (4, 4):  # 2D headers give a 3x3 affine: add the missing depth axis
        full = np.eye(4)
        full[:2, :2], full[:2, 3] = affine[:2, :2], affine[:2, 2]
        affine = full
    return array[None], {"affine": affine, "orientation_known": True, **extra}


def _bounded_nrrd_reader(max_scan_bytes: int | None, checked: Any = None) -> Any:
    """MONAI ``NrrdReader`` whose gzip/bzip2 bodies are inflated only as far as the header says
    (``checked``: the guard's parse of the header, read on from instead of parsing it again)."""
    from monai.data import NrrdReader
    from monai.data.image_reader import NrrdImage

    class BoundedNrrdReader(NrrdReader):
        def read(self, data, **kwargs):
            if self.index_order != "F":
                raise ValueError("BoundedNrrdReader reads in Fortran index order only")
            return NrrdImage(*read_nrrd_bounded(str(data), max_scan_bytes, checked=checked))

    return BoundedNrrdReader()


def _metaimage_reader() -> Any:
    """MONAI ``ITKReader`` tied to ITK's MetaImage IO (no other ITK reader picks a .mha/.mhd by its content)."""
    import itk
    from monai.data import ITKReader

    return ITKReader(imageio=itk.MetaImageIO.New())


# the readers of the registry (radfm.transforms.formats):
# read(path, series_uid=, defer_rescale=, max_scan_bytes=, checked=); ``checked`` is the format guard's
# HeaderCheck (its parsed header), which the NIfTI and NRRD readers read on from instead of parsing again
def read_nifti(path: str, *, series_uid: str | None = None, defer_rescale: bool = False,
               max_scan_bytes: int | None = None, checked: Any = None,
               volume: int | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """NIfTI (.nii/.nii.gz) -> ([1, x, y(, z)] as stored, meta); the float scaling kept aside with ``defer_rescale``;
    ``volume``: that volume of a 4D file (the ``[t]`` path suffix)."""
    return _read_spatial(_unscaled_nibabel_reader(None if checked is None else checked.header), path,
                         defer_rescale=defer_rescale, volume=volume)


def read_nrrd(path: str, *, series_uid: str | None = None, defer_rescale: bool = False,
              max_scan_bytes: int | None = None, checked: Any = None) -> tuple[np.ndarray, dict[str, Any]]:
    """NRRD (.nrrd/.nhdr) -> ([1, x, y(, z)], meta); the data are read on from the guard's parse of the header."""
    return _read_spatial(_bounded_nrrd_reader(max_scan_bytes, checked), path, defer_rescale=defer_rescale)


def read_metaimage(path: str, *, series_uid: str | None = None, defer_rescale: bool = False,
                   max_scan_bytes: int | None = None, checked: Any = None) -> tuple[np.ndarray, dict[str, Any]]:
    """MetaImage (.mha/.mhd) through ITK's MetaImageIO -> ([1, x, y(, z)], meta)."""
    return _read_spatial(_metaimage_reader(), path, defer_rescale=defer_rescale)


def read_picture(path: str, *, series_uid: str | None = None, defer_rescale: bool = False,
                 max_scan_bytes: int | None = None, checked: Any = None) -> tuple[np.ndarray, dict[str, Any]]:
    """PNG/JPEG -> ([C, rows, cols], meta)."""
    return _read_pil(path)


def read_numpy(path: str, *, series_uid: str | None = None, defer_rescale: bool = False,
               max_scan_bytes: int | None = None, checked: Any = None) -> tuple[np.ndarray, dict[str, Any]]:
    """``.npy`` (no pickles) -> ([C, H, W(, D)], meta)."""
    return _read_numpy(path)


def read_dicom(path: str, *, series_uid: str | None = None, defer_rescale: bool = False,
               max_scan_bytes: int | None = None, checked: Any = None) -> tuple[np.ndarray, dict[str, Any]]:
    """One DICOM file (also multi-frame) -> ([C, rows, cols(, frames)], meta)."""
    return read_dicom_file(path, defer_rescale=defer_rescale, max_scan_bytes=max_scan_bytes)


def read_dicom_folder(path: str, *, series_uid: str | None = None, defer_rescale: bool = False,
                      max_scan_bytes: int | None = None, checked: Any = None) -> tuple[np.ndarray, dict[str, Any]]:
    """A folder holding one DICOM series (or ``series_uid`` naming one) -> ([C, rows, cols, slices], meta)."""
    return read_dicom_series(path, series_uid=series_uid, max_scan_bytes=max_scan_bytes)


# the read function of each reader family of the registry (radfm.transforms.formats.ScanFormat.reader)
READERS: dict[str, Any] = {"nifti": read_nifti, "nrrd": read_nrrd, "itk": read_metaimage, "image": read_picture,
                           "numpy": read_numpy, "dicom": read_dicom, "dicom_series": read_dicom_folder}


def read_scan_array(path: str | os.PathLike, series_uid: str | None = None,
                    defer_rescale: bool = False, *, max_scan_bytes: int | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Read ``path`` -> (array [C, *spatial] as stored, metadata); errors are ``ScanReadError``.

    The format comes from :func:`radfm.transforms.formats.detect_format`, its guard and reader
    from the same registry entry. Before any library reads the file, the guard refuses
    detached data files outside the header's folder (NRRD ``data file``, MetaImage
    ``ElementDataFile``) and images whose header claims more than ``max_scan_bytes`` of decoded
    data (default 2 GiB, or the limit set with ``scan_size_limit``): ``ScanTooLargeError``.

    ``defer_rescale``: a NIfTI scl_slope/scl_inter that would need floats (or a DICOM MONOCHROME1
    inversion) is not applied but returned as ``meta["rescale"] = (slope, intercept)``, for :class:`ResizeToRadFM` /
    :class:`ScaleResizeToRadFM` (and ``CTWindow``/``MinMaxScale``) to apply leanly.
    """
    path_text, volume = split_volume(path)  # `scan.nii.gz[t]`: volume t of a 4D NIfTI
    # format + guard: one header parse, which the reader reads on from (the DICOM readers run their
    # guard per file as they read); inside formats.inspected_scans() an earlier inspection is reused
    inspected = formats.inspect_scan(path_text, max_scan_bytes)
    fmt = inspected.format.reader
    if volume is not None and fmt != "nifti":
        raise ScanReadError(f"{path}: a [t] suffix picks one volume of a 4D NIfTI; this is a {fmt} scan")
    picked = {} if volume is None else {"volume": volume}
    try:
        array, meta = READERS[fmt](path_text, series_uid=series_uid, defer_rescale=defer_rescale,
                                   max_scan_bytes=max_scan_bytes, checked=inspected.checked, **picked)
    except ScanReadError:
        raise
    except Exception as error:  # corrupt or truncated files: say which file and what was expected
        raise ScanReadError(f"{path_text}: cannot read as {fmt} ({type(error).__name__}: {error}); "
                            f"expected a valid {fmt} file") from None
    meta.setdefault("filename_or_obj", path_text)
    meta.setdefault("source_format", fmt)
    meta.setdefault("modality", None)
    return array, meta


def _native_for_torch(array: np.ndarray) -> np.ndarray:
    """Byte order and dtypes torch can hold without copying where possible."""
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    if array.dtype in (np.float16, np.float64, np.int8, np.int16, np.int32, np.int64, np.uint8,
                       np.float32, np.uint16, np.uint32):
        return array
    raise ScanReadError(f"unsupported pixel type {array.dtype}")


def to_meta_tensor(array: np.ndarray, meta: dict[str, Any]) -> MetaTensor:
    """[C, *spatial] array + reader metadata -> MetaTensor; a single-slice volume becomes 2D."""
    source = meta.get("filename_or_obj", "<in-memory image>")
    original_shape = tuple(int(s) for s in array.shape)
    if array.ndim == 4 and array.shape[-1] == 1:
        array = array[..., 0]  # one slice: a 2D image, keeps rows/columns
    if array.ndim not in (3, 4):
        raise ScanReadError(f"{source}: array of shape {original_shape}; expected a 2D image or 3D volume")
    if min(array.shape[1:]) < 1:
        raise ScanReadError(f"{source}: empty image of shape {original_shape}")
    array = _native_for_torch(array)
    affine = np.asarray(meta.get("affine", np.eye(4)), dtype=np.float64)
    spatial_dims = array.ndim - 1
    kept = {
        "filename_or_obj": source,
        "original_shape": original_shape,
        "original_dtype": str(array.dtype),
        "original_affine": affine.copy(),
        "spacing": tuple(float(v) for v in np.linalg.norm(affine[:3, :spatial_dims], axis=0)),
        "spatial_dims": spatial_dims,
    }
    for key in ("modality", "series_uid", "photometric_interpretation", "source_format", "orientation_known",
                "uneven_slice_spacing", "number_of_files", "rescale"):
        if meta.get(key) is not None:
            kept[key] = meta[key]
    if not array.flags.writeable:  # memory-mapped read-only arrays: torch wants writable memory
        array = np.array(array)
    return MetaTensor(torch.as_tensor(array), affine=torch.as_tensor(affine), meta=kept)


def read_scan(path: str | os.PathLike, series_uid: str | None = None, defer_rescale: bool = False, *,
              max_scan_bytes: int | None = None) -> MetaTensor:
    """Read a scan -> ``MetaTensor [C, H, W]`` (2D) or ``[C, H, W, D]`` (3D) in its stored dtype
    (``defer_rescale``, ``max_scan_bytes``: see :func:`read_scan_array`)."""
    array, meta = read_scan_array(path, series_uid=series_uid, defer_rescale=defer_rescale,
                                  max_scan_bytes=max_scan_bytes)
    return to_meta_tensor(array, meta)


class LoadScan(Transform):
    """Array transform: path (file or DICOM folder) -> ``MetaTensor [C, H, W(, D)]`` as stored.

    Args:
        series_uid: SeriesInstanceUID to read when a folder holds several series.
        defer_rescale: leave a float NIfTI scaling or a DICOM MONOCHROME1 inversion to the
            resize (``meta["rescale"]``): the stored uint8/int16/uint16 stays as is instead of a
            float32 copy or an inverting pass. Only for pipelines that
            resize with ``ResizeToRadFM``/``ScaleResizeToRadFM`` (as ``preprocess_scan`` does).
        max_scan_bytes: refuse files whose decoded data would exceed this many bytes
            (``ScanTooLargeError``); None: 2 GiB or the limit set with ``scan_size_limit``.
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, series_uid: str | None = None, defer_rescale: bool = False,
                 max_scan_bytes: int | None = None) -> None:
        self.series_uid = series_uid
        self.defer_rescale = defer_rescale
        self.max_scan_bytes = max_scan_bytes

    def __call__(self, path: str | os.PathLike) -> MetaTensor:
        return read_scan(path, series_uid=self.series_uid, defer_rescale=self.defer_rescale,
                         max_scan_bytes=self.max_scan_bytes)


class LoadScand(MapTransform):
    """Dictionary version of :class:`LoadScan`: replaces each path under ``keys`` by its MetaTensor."""

    backend = LoadScan.backend

    def __init__(self, keys: KeysCollection, series_uid: str | None = None, defer_rescale: bool = False,
                 allow_missing_keys: bool = False, max_scan_bytes: int | None = None) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadScan(series_uid=series_uid, defer_rescale=defer_rescale, max_scan_bytes=max_scan_bytes)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.loader(d[key])
        return d


__all__: Sequence[str] = ["LoadScan", "LoadScand", "read_scan", "read_scan_array", "scan_format", "scan_spatial_dims",
                          "to_meta_tensor"]
