"""Spatial transforms: the depth rule, 3D orientation, and the resize to RadFM's input grid.

* 2D image ``[C, H, W]`` -> ``[C, 512, 512, 4]``: bilinear resize, then the slice repeated to depth 4.
* 3D volume ``[C, H, W, D]`` -> ``[C, 256, 256, target_depth(D)]``: trilinear resize.
* Images smaller than one 32x32x4 patch (or than the grid) are upsampled the same way.
* The grid is configurable (``size_2d``, ``size_3d``, ``max_depth`` keywords; defaults are the
  paper's 512² x 4 / 256² x D' / 64), e.g. for a small model trained at 64² x 4 / 64² x D' <= 8.

2D: the slice is repeated to depth 4 as an ``expand`` view (stride 0), not a copy.
Resize (2D and 3D alike) is separable, since linear interpolation is a product of 1D ones, so it
equals one bilinear/trilinear ``F.interpolate`` with ``align_corners=False``: each output slice
along the slowest memory axis blends the two stored slices it needs (converted to float32 a few
at a time), then that chunk is resized in-plane. Memory: the stored volume + the float32 output
+ a few chunks (512 KB, or 1/16 of the stored input when larger), never a full-size float32 copy
of the input.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection, NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import InvertibleTransform, MapTransform, Orientation
from monai.utils import TransformBackends, convert_to_dst_type, convert_to_tensor

from .errors import ScanReadError, source_name

SIZE_2D = (512, 512)
SIZE_3D = (256, 256)
DEPTH_2D = 4
DEPTH_MULTIPLE, MIN_DEPTH, MAX_DEPTH = 4, 4, 64
PATCH_SIZE = 32  # the vision encoder's in-plane patch size: grid sizes must be multiples of it
CHUNK_VOXELS = 1 << 17  # at least 512 KB of float32 per chunk: small next to any output, still few loops
# ... and up to 1/16 of the stored input's bytes: a large CT is resized in a handful of chunks, so few
# parallel ops (each OpenMP barrier is slow when the cores are shared), for a peak far below 3x the input
CHUNK_INPUT_FRACTION = 16
UPSCALE_WARNING_FACTOR = 8  # in-plane enlargement beyond this is logged (a 1x1 PNG -> 512² says so)
_log = logging.getLogger("radfm.transforms")


def check_plane_size(size: Sequence[int], name: str = "size") -> tuple[int, int]:
    """``(H, W)`` as ints, each a positive multiple of the 32-voxel patch size (else ``ValueError``)."""
    if isinstance(size, (str, bytes)) or not isinstance(size, Sequence) or len(size) != 2:
        raise ValueError(f"{name}={size!r}: expected two sizes (H, W), each a multiple of {PATCH_SIZE}")
    try:
        plane = (int(size[0]), int(size[1]))
    except (TypeError, ValueError):
        raise ValueError(f"{name}={size!r}: expected two integer sizes (H, W)") from None
    if any(s <= 0 or s % PATCH_SIZE or s != v for s, v in zip(plane, size)):
        raise ValueError(f"{name}={list(size)}: each size must be a positive multiple of {PATCH_SIZE} (the patch size)")
    return plane


def check_max_depth(max_depth: int) -> int:
    """``max_depth`` as an int: a multiple of 4 (the depth patch size), at least 4 (else ``ValueError``)."""
    if isinstance(max_depth, bool) or not isinstance(max_depth, (int, np.integer)):
        raise ValueError(f"max_depth={max_depth!r}: expected an integer multiple of {DEPTH_MULTIPLE}, >= {MIN_DEPTH}")
    if max_depth < MIN_DEPTH or max_depth % DEPTH_MULTIPLE:
        raise ValueError(f"max_depth={max_depth}: expected a multiple of {DEPTH_MULTIPLE}, >= {MIN_DEPTH}")
    return int(max_depth)


def check_grid(size_2d: Sequence[int] = SIZE_2D, size_3d: Sequence[int] = SIZE_3D,
               max_depth: int = MAX_DEPTH) -> tuple[tuple[int, int], tuple[int, int], int]:
    """Validated ``(size_2d, size_3d, max_depth)``: sizes multiples of 32, max_depth a multiple of 4 >= 4."""
    return check_plane_size(size_2d, "size_2d"), check_plane_size(size_3d, "size_3d"), check_max_depth(max_depth)


def target_depth(depth: int, max_depth: int = MAX_DEPTH) -> int:
    """Depth a volume of ``depth`` slices is resized to: the nearest multiple of 4 (ties round up),
    clamped to [4, max_depth]. Examples (max_depth 64): 1 -> 4, 5 -> 4, 6 -> 8, 30 -> 32, 300 -> 64."""
    max_depth = check_max_depth(max_depth)
    depth = int(depth)
    if depth < 1:
        raise ValueError(f"depth={depth}: expected at least one slice")
    nearest = DEPTH_MULTIPLE * int(np.floor(depth / DEPTH_MULTIPLE + 0.5))
    return int(min(max(nearest, MIN_DEPTH), max_depth))


def radfm_spatial_size(spatial_shape: tuple[int, ...], *, size_2d: Sequence[int] = SIZE_2D,
                       size_3d: Sequence[int] = SIZE_3D, max_depth: int = MAX_DEPTH) -> tuple[int, int, int]:
    """Output spatial size for an input of spatial shape (H, W) -> (*size_2d, 4) or (H, W, D) ->
    (*size_3d, target_depth(D, max_depth))."""
    size_2d, size_3d, max_depth = check_grid(size_2d, size_3d, max_depth)
    if len(spatial_shape) == 2:
        return (*size_2d, DEPTH_2D)
    if len(spatial_shape) == 3:
        return (*size_3d, target_depth(spatial_shape[2], max_depth))
    raise ValueError(f"spatial shape {tuple(spatial_shape)}: expected (H, W) or (H, W, D)")


def _linear_taps(n_in: int, n_out: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """1D linear resize ``n_in -> n_out`` (align_corners=False) as (index0, index1, weight1) per output.

    The same source coordinates as ``F.interpolate``: ``(j + 0.5) * n_in / n_out - 0.5``, clamped at 0.
    """
    if n_in == n_out:
        index = torch.arange(n_out)
        return index, index, torch.zeros(n_out)
    scale = torch.tensor(n_in / n_out, dtype=torch.float32)
    source = ((torch.arange(n_out, dtype=torch.float32) + 0.5) * scale - 0.5).clamp_(min=0)
    index0 = source.to(torch.int64).clamp_(max=n_in - 1)
    index1 = (index0 + 1).clamp_(max=n_in - 1)
    return index0, index1, (source - index0).clamp_(0, 1)


def _resize_separable(x: torch.Tensor, size: tuple[int, ...],
                      value_map: Callable[[torch.Tensor], torch.Tensor] | None,
                      out_map: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """[C, *spatial] any dtype -> contiguous float32 [C, *size] (2 or 3 spatial axes), lean (module doc).

    Linear interpolation is separable: the slowest-in-memory axis is resized by blending the two
    stored slices each output slice needs (converted to float32 a few at a time), then each
    blended chunk is resized in-plane with ``F.interpolate``. Only the output and small chunks
    are ever float32; the stored input is read, never copied whole. ``value_map`` is applied to
    each chunk before interpolation, ``out_map`` (affine maps only) to each resized chunk while
    it is still in cache, before it is scattered into the output.
    """
    channels, spatial_dims = x.shape[0], x.ndim - 1
    # visit the spatial axes in memory order (slowest first) so that every gathered slice reads
    # contiguous memory: NIfTI volumes are column-major, DICOM stacks row-major
    order = sorted(range(spatial_dims), key=lambda a: -abs(x.stride(1 + a)))
    view = x.permute(0, *(1 + a for a in order))  # [C, L, *plane] as stored
    out = torch.empty((channels, *size), dtype=torch.float32)
    out_view = out.permute(0, *(1 + a for a in order))  # [C, L', *plane'], writes land in `out`
    plane_in, plane_out = tuple(view.shape[2:]), tuple(out_view.shape[2:])
    mode = "bilinear" if len(plane_in) == 2 else "linear"
    index0, index1, weight = _linear_taps(view.shape[1], out_view.shape[1])
    per_slice = channels * max(int(np.prod(plane_in)), int(np.prod(plane_out)))
    chunk_voxels = max(CHUNK_VOXELS, x.numel() * x.element_size() // (4 * CHUNK_INPUT_FRACTION))
    step = max(1, chunk_voxels // max(per_slice, 1))
    for start in range(0, out_view.shape[1], step):
        stop = min(start + step, out_view.shape[1])
        chunk = _float_slices(view, index0[start:stop], value_map)  # [C, k, *plane_in]
        w = weight[start:stop]
        if bool((w > 0).any()):  # blend with the next stored slice: out = a + w (b - a)
            chunk.lerp_(_float_slices(view, index1[start:stop], value_map),
                        w.view(1, -1, *([1] * len(plane_in))))
        if plane_in != plane_out:
            chunk = F.interpolate(chunk, size=plane_out, mode=mode, align_corners=False)
        if out_map is not None:
            chunk = out_map(chunk)
        out_view[:, start:stop] = chunk
        del chunk  # free before the next chunk is allocated
    return out


def _float_slices(view: torch.Tensor, index: torch.Tensor,
                  value_map: Callable[[torch.Tensor], torch.Tensor] | None) -> torch.Tensor:
    """Stored slices ``view[:, index]`` -> a fresh float32 [C, k, *plane] (value map applied)."""
    chunk = torch.empty((view.shape[0], len(index), *view.shape[2:]), dtype=torch.float32)
    if view.dtype in (torch.uint16, torch.uint32):  # torch converts these "shell" dtypes slowly: numpy casts
        np.copyto(chunk.numpy(), view.numpy()[:, index.numpy()], casting="unsafe")
    else:
        chunk.copy_(view.index_select(1, index))  # the gathered stored-dtype chunk is <= this float32 one
    return chunk if value_map is None else value_map(chunk)


def resize_to_radfm(x: torch.Tensor, value_map: Callable[[torch.Tensor], torch.Tensor] | None = None,
                    source: str | None = None, *, size_2d: Sequence[int] = SIZE_2D,
                    size_3d: Sequence[int] = SIZE_3D, max_depth: int = MAX_DEPTH) -> torch.Tensor:
    """[C, H, W] -> float32 [C, 512, 512, 4]; [C, H, W, D] -> float32 [C, 256, 256, target_depth(D)].

    The grid is ``size_2d`` x 4 / ``size_3d`` x ``target_depth(D, max_depth)`` (defaults above).

    ``value_map`` (elementwise, in place on float32) is applied to the full-resolution values
    before interpolation, chunk by chunk, e.g. windowing and min-max scaling; an affine-only map
    is applied to the resized chunks instead when the output is the smaller side. 2D: the result is ``expand``-ed to depth 4, a
    view of one [C, 512, 512, 1] plane (stride 0 along depth; clone before writing into it).
    """
    if isinstance(x, MetaTensor):
        x = x.as_tensor()
    if x.ndim not in (3, 4):
        raise ScanReadError(f"{source or '<in-memory image>'}: array of shape {tuple(x.shape)}; "
                            "expected channel-first [C, H, W] or [C, H, W, D]")
    size = radfm_spatial_size(tuple(x.shape[1:]), size_2d=size_2d, size_3d=size_3d, max_depth=max_depth)
    plane_size = size[:2] if x.ndim == 3 else size
    out_numel = x.shape[0] * int(np.prod(plane_size))
    # an affine map commutes with linear interpolation: apply it on the smaller side of the resize
    after = value_map if getattr(value_map, "affine_only", False) and x.numel() > out_numel else None
    out = _resize_separable(x, plane_size, None if after is not None else value_map, out_map=after)
    if x.ndim == 3:  # the slice repeated to depth 4 as a view: no copies of the plane
        out = out[..., None].expand(*out.shape, DEPTH_2D)
    return out


def _resize_affine(in_size: tuple[int, ...], out_size: tuple[int, ...]) -> np.ndarray:
    """4x4 map from output voxel indices to input voxel indices (align_corners=False)."""
    affine = np.eye(4)
    for axis, (n_in, n_out) in enumerate(zip(in_size, out_size)):
        scale = n_in / n_out
        affine[axis, axis] = scale
        affine[axis, 3] = 0.5 * (scale - 1.0)
    return affine


class ResizeToRadFM(InvertibleTransform):
    """Resize to RadFM's grid: 2D -> [C, 512, 512, 4] (slice repeated), 3D -> [C, 256, 256, D'].

    Input any dtype; output float32 (values are interpolated, not rescaled). The affine is
    updated; :meth:`inverse` resizes back to the input grid (2D: the first of the 4 slices).
    ``size_2d``/``size_3d``/``max_depth`` choose another grid (multiples of 32; of 4, >= 4).
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, size_2d: Sequence[int] = SIZE_2D, size_3d: Sequence[int] = SIZE_3D,
                 max_depth: int = MAX_DEPTH) -> None:
        self.size_2d, self.size_3d, self.max_depth = check_grid(size_2d, size_3d, max_depth)

    def _value_map(self, x: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor] | None:
        from .intensity import pending_rescale

        rescale = pending_rescale(x)
        if rescale is None:
            return None

        def apply(chunk: torch.Tensor) -> torch.Tensor:  # a deferred NIfTI scaling: stored -> real values
            return chunk.mul_(rescale[0]).add_(rescale[1])

        apply.affine_only = True  # type: ignore[attr-defined]
        return apply

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        x = convert_to_tensor(img, track_meta=isinstance(img, MetaTensor))
        in_spatial = tuple(int(s) for s in x.shape[1:])
        source = source_name(img)
        out = resize_to_radfm(x, self._value_map(x), source=source, size_2d=self.size_2d, size_3d=self.size_3d,
                              max_depth=self.max_depth)
        out_spatial = tuple(int(s) for s in out.shape[1:])
        if any(o > UPSCALE_WARNING_FACTOR * i for i, o in zip(in_spatial[:2], out_spatial[:2])):
            _log.warning("%s: a %s image was upscaled to %s (more than %dx in-plane); the model sees mostly "
                         "interpolation", source or "image", "x".join(map(str, in_spatial)),
                         "x".join(map(str, out_spatial)), UPSCALE_WARNING_FACTOR)
        if not isinstance(img, MetaTensor):
            return convert_to_dst_type(out, dst=img, dtype=torch.float32)[0]
        meta = {k: v for k, v in x.meta.items() if k != "rescale"}  # the value map applied it
        result = MetaTensor(out, meta=meta, applied_operations=list(x.applied_operations))
        result.affine = x.affine
        padded_in = in_spatial + (1,) * (3 - len(in_spatial))
        # 2D: the new depth axis keeps unit steps (the 4 copies sit one slice thickness apart)
        scale = _resize_affine(padded_in, out_spatial if len(in_spatial) == 3 else out_spatial[:2] + (1,))
        self.push_transform(result, orig_size=in_spatial, affine=scale,
                            extra_info={"was_2d": len(in_spatial) == 2, "scale": scale})
        return result

    def inverse(self, data: torch.Tensor) -> torch.Tensor:
        """``[C, H', W', D']`` back to the recorded input size (linear resampling; values, not the original voxels)."""
        transform = self.pop_transform(data)
        orig_size = tuple(int(s) for s in transform["orig_size"])
        extra = transform["extra_info"]
        x = data.as_tensor() if isinstance(data, MetaTensor) else data
        if extra["was_2d"]:
            out = F.interpolate(x[..., 0][None].float(), size=orig_size, mode="bilinear", align_corners=False)[0]
        else:
            out = F.interpolate(x[None].float(), size=orig_size, mode="trilinear", align_corners=False)[0]
        if isinstance(data, MetaTensor):
            result = MetaTensor(out, meta=dict(data.meta), applied_operations=list(data.applied_operations))
            scale = np.asarray(extra["scale"], dtype=np.float64)
            result.affine = data.affine @ torch.as_tensor(np.linalg.inv(scale))
            return result
        return out


class ScaleResizeToRadFM(ResizeToRadFM):
    """Window (optional) + min-max to [0, 1] + resize to RadFM's grid, in one memory-lean pass.

    Equal (to float rounding) to ``CTWindow -> MinMaxScale -> ResizeToRadFM`` but never holds a
    full-size float32 copy: min/max come from one reduction over the stored data and the
    scaling is applied slab by slab before interpolation. Options as in :func:`intensity_mapping`.
    """

    def __init__(self, window: Any = None, nonfinite: str = "error", size_2d: Sequence[int] = SIZE_2D,
                 size_3d: Sequence[int] = SIZE_3D, max_depth: int = MAX_DEPTH) -> None:
        from .intensity import _check_policy, resolve_window

        super().__init__(size_2d=size_2d, size_3d=size_3d, max_depth=max_depth)
        resolve_window(window)  # fail at construction on a bad window
        self.window = window
        self.nonfinite = _check_policy(nonfinite)

    def _value_map(self, x: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor] | None:
        from .intensity import intensity_mapping, pending_rescale

        mapping, _, _ = intensity_mapping(x, window=self.window, nonfinite=self.nonfinite, source=source_name(x),
                                          rescale=pending_rescale(x))
        return mapping


class OrientToRAS(InvertibleTransform):
    """Reorient 3D volumes so that array axes run to Right, Anterior, Superior (MONAI ``Orientation``).

    2D images keep their rows and columns. Volumes whose file has no geometry
    (``meta["orientation_known"] is False``: .npy, multi-frame DICOM without positions) are kept
    as stored. ``axcodes`` can name another convention (e.g. "LPS").
    """

    backend = Orientation.backend

    def __init__(self, axcodes: str = "RAS") -> None:
        self.axcodes = axcodes
        # explicit labels: RAS+ world axes (also silences MONAI's default-changed warning)
        self.orientation = Orientation(axcodes=axcodes, labels=(("L", "R"), ("P", "A"), ("I", "S")))

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        orient = (isinstance(img, MetaTensor) and img.ndim == 4
                  and img.meta.get("orientation_known", True) is not False)
        if orient:
            return self.orientation(img)
        if isinstance(img, MetaTensor):
            self.push_transform(img, extra_info={"skipped": True})
        return img

    def inverse(self, data: torch.Tensor) -> torch.Tensor:
        """Undo the reorientation recorded on a ``MetaTensor`` (a plain tensor is returned as is)."""
        if not isinstance(data, MetaTensor) or not data.applied_operations:
            return data
        if data.applied_operations[-1].get("class") == "Orientation":
            return self.orientation.inverse(data)
        self.pop_transform(data)
        return data


class _MappedInvertible(MapTransform, InvertibleTransform):
    """Dictionary wrapper for the invertible array transforms above."""

    transform: InvertibleTransform

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key])
        return d

    def inverse(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transform.inverse(d[key])
        return d


class ResizeToRadFMd(_MappedInvertible):
    """Dictionary version of :class:`ResizeToRadFM`."""

    backend = ResizeToRadFM.backend

    def __init__(self, keys: KeysCollection, size_2d: Sequence[int] = SIZE_2D, size_3d: Sequence[int] = SIZE_3D,
                 max_depth: int = MAX_DEPTH, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = ResizeToRadFM(size_2d=size_2d, size_3d=size_3d, max_depth=max_depth)


class ScaleResizeToRadFMd(_MappedInvertible):
    """Dictionary version of :class:`ScaleResizeToRadFM`."""

    backend = ScaleResizeToRadFM.backend

    def __init__(self, keys: KeysCollection, window: Any = None, nonfinite: str = "error",
                 size_2d: Sequence[int] = SIZE_2D, size_3d: Sequence[int] = SIZE_3D, max_depth: int = MAX_DEPTH,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = ScaleResizeToRadFM(window=window, nonfinite=nonfinite, size_2d=size_2d, size_3d=size_3d,
                                            max_depth=max_depth)


class OrientToRASd(_MappedInvertible):
    """Dictionary version of :class:`OrientToRAS`."""

    backend = OrientToRAS.backend

    def __init__(self, keys: KeysCollection, axcodes: str = "RAS", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = OrientToRAS(axcodes=axcodes)
