"""MONAI transforms for RadFM preprocessing (no model imports).

Quick use: ``radfm.transforms.preprocess_scan(path) -> MetaTensor [3, H, W, D]`` float32 in [0, 1];
bundles: ``preprocess_pipeline(keys=("image",), ...)`` or the individual transforms below
(array version and dictionary version ending in ``d``). See docs/transforms.md.
"""

from . import formats
from .dicom import DicomSeriesInfo, list_dicom_series
from .errors import ScanReadError, ScanTooLargeError
from .formats import ScanFormat, detect_format, detect_upload
from .guards import DEFAULT_MAX_SCAN_BYTES, scan_size_limit
from .image_reader import RadFMDicomReader
from .intensity import (
    WINDOW_PRESETS,
    CTWindow,
    CTWindowd,
    DropAlpha,
    DropAlphad,
    MinMaxScale,
    MinMaxScaled,
    ToThreeChannels,
    ToThreeChannelsd,
    resolve_window,
)
from .preprocess import describe, preprocess_cli, preprocess_pipeline, preprocess_scan, preprocess_transforms
from .readers import LoadScan, LoadScand, read_scan, scan_format, scan_spatial_dims
from .spatial import (
    OrientToRAS,
    OrientToRASd,
    ResizeToRadFM,
    ResizeToRadFMd,
    ScaleResizeToRadFM,
    ScaleResizeToRadFMd,
    radfm_spatial_size,
    target_depth,
)

__all__ = [
    "DEFAULT_MAX_SCAN_BYTES", "WINDOW_PRESETS", "CTWindow", "CTWindowd", "DicomSeriesInfo", "DropAlpha", "DropAlphad",
    "LoadScan", "LoadScand", "MinMaxScale", "MinMaxScaled", "OrientToRAS", "OrientToRASd", "RadFMDicomReader",
    "ResizeToRadFM", "ResizeToRadFMd", "ScaleResizeToRadFM", "ScaleResizeToRadFMd", "ScanFormat", "ScanReadError",
    "ScanTooLargeError", "detect_format", "detect_upload", "formats",
    "ToThreeChannels", "ToThreeChannelsd",
    "describe", "list_dicom_series", "preprocess_cli", "preprocess_pipeline", "preprocess_scan",
    "preprocess_transforms", "radfm_spatial_size", "read_scan", "resolve_window", "scan_format", "scan_spatial_dims", "scan_size_limit", "target_depth",
]
