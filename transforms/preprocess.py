"""One-call preprocessing (`preprocess_scan`), the bundle pipeline factory, and `radfm preprocess`.

Pipeline (array and dictionary versions are the same steps):
``LoadScan -> DropAlpha -> OrientToRAS -> ScaleResizeToRadFM(window, nonfinite) -> ToThreeChannels``
giving a float32 ``MetaTensor [3, 512, 512, 4]`` (2D) or ``[3, 256, 256, target_depth(D)]`` (3D)
with values in [0, 1] and the source metadata kept. ``size_2d``/``size_3d``/``max_depth`` choose
another grid (a model trained at a smaller resolution records its grid with its processor).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Compose

from radfm.utils.io import atomic_path, check_output_target

from .errors import ScanReadError
from .intensity import DropAlpha, DropAlphad, ToThreeChannels, ToThreeChannelsd, WindowSpec
from .readers import LoadScan, LoadScand
from .spatial import MAX_DEPTH, SIZE_2D, SIZE_3D, OrientToRAS, OrientToRASd, ScaleResizeToRadFM, ScaleResizeToRadFMd


def _array_steps(*, window: WindowSpec, series_uid: str | None, nonfinite: str, axcodes: str,
                 contiguous: bool = False, size_2d: Sequence[int] = SIZE_2D, size_3d: Sequence[int] = SIZE_3D,
                 max_depth: int = MAX_DEPTH, max_scan_bytes: int | None = None) -> list:
    # the resize step is built first: a bad grid fails before any file is read
    resize = ScaleResizeToRadFM(window=window, nonfinite=nonfinite, size_2d=size_2d, size_3d=size_3d,
                                max_depth=max_depth)
    return [
        # the resize applies a NIfTI scaling leanly
        LoadScan(series_uid=series_uid, defer_rescale=True, max_scan_bytes=max_scan_bytes),
        DropAlpha(),
        OrientToRAS(axcodes=axcodes),
        resize,
        ToThreeChannels(contiguous=contiguous),
    ]


def preprocess_transforms(*, window: WindowSpec = None, series_uid: str | None = None, nonfinite: str = "error",
                          axcodes: str = "RAS", contiguous: bool = False, size_2d: Sequence[int] = SIZE_2D,
                          size_3d: Sequence[int] = SIZE_3D, max_depth: int = MAX_DEPTH,
                          max_scan_bytes: int | None = None) -> Compose:
    """Array pipeline: path -> ``MetaTensor [3, H, W, D]`` float32 in [0, 1] (a view unless ``contiguous``).

    Grid options as in :func:`preprocess_scan`.
    Note: ``Compose`` wraps errors as ``RuntimeError("applying transform ...")`` with the
    ``ScanReadError`` as its cause; :func:`preprocess_scan` raises the ``ScanReadError`` itself.
    """
    return Compose(_array_steps(window=window, series_uid=series_uid, nonfinite=nonfinite, axcodes=axcodes,
                                contiguous=contiguous, size_2d=size_2d, size_3d=size_3d, max_depth=max_depth,
                                max_scan_bytes=max_scan_bytes))


def preprocess_pipeline(keys: Sequence[str] | str = ("image",), *, window: WindowSpec = None,
                        series_uid: str | None = None, nonfinite: str = "error", axcodes: str = "RAS",
                        load: bool = True, contiguous: bool = False, size_2d: Sequence[int] = SIZE_2D,
                        size_3d: Sequence[int] = SIZE_3D, max_depth: int = MAX_DEPTH,
                        max_scan_bytes: int | None = None) -> Compose:
    """Dictionary pipeline for bundles: each key holds a path (``load=True``) or a loaded MetaTensor.

    Options: ``window`` None | "lung" | "mediastinum" | "bone" | "brain" | (low, high) HU;
    ``series_uid`` for folders with several DICOM series; ``nonfinite`` "error" | "replace";
    ``axcodes`` orientation of 3D volumes (default "RAS"); ``contiguous`` materialise the
    zero-copy channel/depth repetition (see :func:`preprocess_scan`); ``size_2d``, ``size_3d``,
    ``max_depth`` the grid, ``max_scan_bytes`` the decoded-size limit (see :func:`preprocess_scan`).
    """
    keys = [keys] if isinstance(keys, str) else list(keys)
    resize = ScaleResizeToRadFMd(keys, window=window, nonfinite=nonfinite, size_2d=size_2d, size_3d=size_3d,
                                 max_depth=max_depth)
    steps = [LoadScand(keys, series_uid=series_uid, defer_rescale=True, max_scan_bytes=max_scan_bytes)] if load else []
    steps += [
        DropAlphad(keys),
        OrientToRASd(keys, axcodes=axcodes),
        resize,
        ToThreeChannelsd(keys, contiguous=contiguous),
    ]
    return Compose(steps)


def preprocess_scan(path: str | os.PathLike, *, window: WindowSpec = None, series_uid: str | None = None,
                    nonfinite: str = "error", axcodes: str = "RAS", contiguous: bool = False,
                    size_2d: Sequence[int] = SIZE_2D, size_3d: Sequence[int] = SIZE_3D,
                    max_depth: int = MAX_DEPTH, max_scan_bytes: int | None = None) -> MetaTensor:
    """A scan file or DICOM folder -> float32 ``MetaTensor [3, H, W, D]`` in [0, 1], as RadFM expects.

    2D -> [3, *size_2d, 4] (default [3, 512, 512, 4]); 3D -> [3, *size_3d, target_depth(D, max_depth)]
    (default [3, 256, 256, D'], D' <= 64). Sizes must be multiples of 32 and ``max_depth`` a
    multiple of 4, >= 4 (``ValueError`` otherwise). Raises ``ScanReadError`` naming
    the file on unreadable, unsupported or invalid input. See docs/transforms.md for options.

    Hostile files: a detached data file outside the header's folder (NRRD ``data file``,
    MetaImage ``ElementDataFile``) is refused, and so is a file whose decoded data would exceed
    ``max_scan_bytes`` (``ScanTooLargeError``; None: 2 GiB, or the limit of an enclosing
    ``radfm.transforms.scan_size_limit`` block), checked from the header before decompressing.

    Views: the grey -> 3 channel and 2D -> depth 4 repetitions are ``expand`` views of one
    float32 ``[1, H, W, D]`` / ``[C, H, W, 1]`` result (stride 0 along those axes), not copies.
    Reading, ``torch.stack``/collate, ``.to(device)`` and the model work as usual; in-place ops
    (``out.mul_``, ``out[0] = ...``) need ``.clone()``/``.contiguous()`` first; ``torch.save``
    stores only the base (a smaller cache). ``contiguous=True`` returns a materialised tensor.
    """
    image: Any = path
    steps = _array_steps(window=window, series_uid=series_uid, nonfinite=nonfinite, axcodes=axcodes,
                         contiguous=contiguous, size_2d=size_2d, size_3d=size_3d, max_depth=max_depth,
                         max_scan_bytes=max_scan_bytes)
    for step in steps:
        image = step(image)  # run directly, not via Compose: bad input surfaces as ScanReadError
    if image.dtype != torch.float32 or image.ndim != 4 or image.shape[0] != 3:  # a broken step, not bad input
        raise RuntimeError(f"{path}: preprocessing produced {image.dtype} {tuple(image.shape)}")
    return image


def describe(image: MetaTensor) -> str:
    """Human-readable summary of a preprocessed image: shape, dtype, range and source metadata."""
    meta = image.meta
    lines = [
        f"source:          {meta.get('filename_or_obj')}",
        f"format:          {meta.get('source_format')}  modality: {meta.get('modality') or 'not stated'}",
        f"original shape:  {meta.get('original_shape')} [C, *spatial] dtype {meta.get('original_dtype')}",
        f"original spacing:{tuple(round(s, 4) for s in meta.get('spacing', ()))} mm",
        f"model input:     shape {tuple(image.shape)} [C, H, W, D], dtype {image.dtype}",
        f"value range:     [{float(image.min()):.4f}, {float(image.max()):.4f}], mean {float(image.mean()):.4f}",
        f"orientation:     {_axcodes(image)}",
    ]
    if meta.get("series_uid"):
        lines.append(f"series:          {meta['series_uid']}")
    return "\n".join(lines)


def _axcodes(image: MetaTensor) -> str:
    if image.meta.get("spatial_dims") == 2:
        return "2D image: rows and columns as stored"
    if image.meta.get("orientation_known") is False:
        return "as stored (the file has no geometry)"
    import nibabel as nib

    return "".join(nib.orientations.aff2axcodes(np.asarray(image.affine)))


def save_middle_slice_png(image: MetaTensor | torch.Tensor, path: str | os.PathLike) -> Path:
    """Write the middle depth slice of ``[3, H, W, D]`` in [0, 1] as an 8-bit RGB PNG (atomically)."""
    from PIL import Image

    path = Path(path)
    tensor = image.as_tensor() if isinstance(image, MetaTensor) else image
    middle = tensor[..., tensor.shape[-1] // 2]  # [3, H, W]
    pixels = (middle.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    with atomic_path(path) as temp:  # the temp name keeps ".png", so PIL knows the format
        Image.fromarray(pixels, mode="RGB").save(temp)
    return path


def preprocess_cli(path: str, window: Any = None, series_uid: str | None = None, nonfinite: str = "error",
                   axcodes: str = "RAS", png: str | None = None, size_2d: Any = SIZE_2D, size_3d: Any = SIZE_3D,
                   max_depth: int = MAX_DEPTH, max_scan_mb: int | None = None) -> None:
    """Preprocess one scan and print what RadFM receives (shape, dtype, range, metadata).

    Args:
        path: a NIfTI/DICOM/NRRD/MHA/PNG/JPEG/.npy file or a folder holding a DICOM series.
        window: CT window: lung, mediastinum, bone, brain or "[low,high]" in HU (default: none).
        series_uid: SeriesInstanceUID to read when the folder holds several series.
        nonfinite: "error" (default) or "replace" NaN/Inf voxels.
        axcodes: orientation for 3D volumes (default RAS).
        png: write the middle slice of the model input to this PNG file.
        size_2d: grid of 2D images as "[H,W]", multiples of 32 (default 512,512).
        size_3d: in-plane grid of 3D volumes as "[H,W]", multiples of 32 (default 256,256).
        max_depth: most slices of a 3D input, a multiple of 4 (default 64).
        max_scan_mb: refuse files whose header claims more decoded data than this (MiB; default 2048).
    """
    try:
        if png:
            check_output_target(png)  # a symlink or special file at --png: refused before any work
        image = preprocess_scan(path, window=window, series_uid=series_uid, nonfinite=nonfinite, axcodes=axcodes,
                                size_2d=_cli_size(size_2d, "size_2d"), size_3d=_cli_size(size_3d, "size_3d"),
                                max_depth=max_depth,
                                max_scan_bytes=None if max_scan_mb is None else int(max_scan_mb) * 1024**2)
    except (ScanReadError, ValueError, OSError) as error:
        raise SystemExit(f"radfm preprocess: {error}") from None
    print(describe(image))
    if png:
        print(f"middle slice:    {save_middle_slice_png(image, png)}")


def _cli_size(value: Any, name: str) -> Any:
    """A CLI size: fire gives "[64,64]" as a list/tuple, but "64,64" or "64x64" as a string."""
    if isinstance(value, str):
        parts = [p for p in value.replace("x", ",").strip("[]() ").split(",") if p.strip()]
        try:
            return tuple(int(p) for p in parts)
        except ValueError:
            raise SystemExit(f"radfm preprocess: --{name}={value!r}: expected two integers, e.g. 64,64") from None
    return value
