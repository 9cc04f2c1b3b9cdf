"""Spatial transforms: the depth rule, 3D orientation, and the resize to RadFM's input grid.

* 2D image ``[C, H, W]`` -> ``[C, 512, 512, 4]``: bilinear resize, then the slice repeated to depth 4.
* 3D volume ``[C, H, W, D]`` -> ``[C, 256, 256, target_depth(D)]``: trilinear resize.
* Images smaller than one 32x32x4 patch (or than the grid) are upsampled the same way.

Volumes up to 16M voxels are converted to float32 and resized with one trilinear interpolate.
Larger ones are resized separably (linear interpolation is a product of 1D interpolations, so
this equals one trilinear ``F.interpolate`` with ``align_corners=False``): first each slab of
slices along the slowest memory axis is converted to float32 and resized in-plane, then one
1D resize runs along that axis. Memory: the stored volume plus ~1/4 of a float32 copy,
instead of the full float32 copy (2x an int16 volume) a one-shot interpolate needs.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
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
CHUNK_VOXELS = 1 << 22  # ~16 MB of float32 per slab: big enough to keep the loops few
SMALL_VOLUME_VOXELS = 1 << 24  # up to 64 MB as float32 the one-shot resize wins on time; above, memory


def target_depth(depth: int) -> int:
    """Depth a volume of ``depth`` slices is resized to: the nearest multiple of 4 (ties round up),
    clamped to [4, 64]. Examples: 1 -> 4, 5 -> 4, 6 -> 8, 30 -> 32, 300 -> 64."""
    depth = int(depth)
    if depth < 1:
        raise ValueError(f"depth={depth}: expected at least one slice")
    nearest = DEPTH_MULTIPLE * int(np.floor(depth / DEPTH_MULTIPLE + 0.5))
    return int(min(max(nearest, MIN_DEPTH), MAX_DEPTH))


def radfm_spatial_size(spatial_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """Output spatial size for an input of spatial shape (H, W) or (H, W, D)."""
    if len(spatial_shape) == 2:
        return (*SIZE_2D, DEPTH_2D)
    if len(spatial_shape) == 3:
        return (*SIZE_3D, target_depth(spatial_shape[2]))
    raise ValueError(f"spatial shape {tuple(spatial_shape)}: expected (H, W) or (H, W, D)")


def _resize_2d(x: torch.Tensor, value_map: Callable[[torch.Tensor], torch.Tensor] | None,
               after: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """[C, H, W] any dtype -> float32 [C, 512, 512, 4]; ``after`` maps the resized plane."""
    plane = torch.empty(x.shape, dtype=torch.float32).copy_(x)
    if value_map is not None:
        plane = value_map(plane)
    if tuple(plane.shape[1:]) != SIZE_2D:
        plane = F.interpolate(plane[None], size=SIZE_2D, mode="bilinear", align_corners=False)[0]
    if after is not None:  # before the depth repetition: 4x fewer values to map
        plane = after(plane)
    return plane[..., None].expand(*plane.shape, DEPTH_2D).contiguous()


def _resize_3d(x: torch.Tensor, size: tuple[int, int, int],
               value_map: Callable[[torch.Tensor], torch.Tensor] | None) -> torch.Tensor:
    """[C, H, W, D] any dtype -> float32 [C, *size]; separable, slab by slab (see module doc)."""
    channels = x.shape[0]
    if x.numel() <= SMALL_VOLUME_VOXELS:  # small: one float32 copy + one trilinear call is faster
        volume = torch.empty(x.shape, dtype=torch.float32).copy_(x)
        if value_map is not None:
            volume = value_map(volume)
        return F.interpolate(volume[None], size=size, mode="trilinear", align_corners=False)[0]
    # visit the spatial axes in memory order (slowest first) so that every slab copy reads
    # contiguous memory: NIfTI volumes are column-major, DICOM stacks row-major
    order = sorted(range(3), key=lambda a: -abs(x.stride(1 + a)))
    view = x.permute(0, *(1 + a for a in order))  # [C, L, P, Q]
    length = view.shape[1]
    plane_size = (size[order[1]], size[order[2]])
    in_plane = int(view.shape[2] * view.shape[3] * channels)
    slab = max(1, CHUNK_VOXELS // max(in_plane, 1))
    resized = torch.empty((channels, length, *plane_size), dtype=torch.float32)
    for start in range(0, length, slab):
        stop = min(start + slab, length)
        block = torch.empty((channels, stop - start, *view.shape[2:]), dtype=torch.float32)
        block.copy_(view[:, start:stop])
        if value_map is not None:
            block = value_map(block)
        if tuple(block.shape[2:]) != plane_size:
            block = F.interpolate(block, size=plane_size, mode="bilinear", align_corners=False)
        resized[:, start:stop] = block
    if length != size[order[0]]:
        flat = resized.view(channels, 1, length, plane_size[0] * plane_size[1])
        # bilinear with an unchanged second axis is exactly a 1D linear resize along the first
        resized = F.interpolate(flat, size=(size[order[0]], flat.shape[-1]), mode="bilinear", align_corners=False)
        resized = resized.view(channels, size[order[0]], *plane_size)
    inverse = [0] + [1 + order.index(a) for a in range(3)]
    return resized.permute(*inverse).contiguous()


def resize_to_radfm(x: torch.Tensor, value_map: Callable[[torch.Tensor], torch.Tensor] | None = None,
                    source: str | None = None) -> torch.Tensor:
    """[C, H, W] -> float32 [C, 512, 512, 4]; [C, H, W, D] -> float32 [C, 256, 256, target_depth(D)].

    ``value_map`` (elementwise, in place on float32) is applied to the full-resolution values
    before interpolation, slab by slab, e.g. windowing and min-max scaling.
    """
    if isinstance(x, MetaTensor):
        x = x.as_tensor()
    if x.ndim not in (3, 4):
        raise ScanReadError(f"{source or '<in-memory image>'}: array of shape {tuple(x.shape)}; "
                            "expected channel-first [C, H, W] or [C, H, W, D]")
    after = value_map if getattr(value_map, "affine_only", False) and x.numel() > _out_numel(x) else None
    before = None if after is not None else value_map
    if x.ndim == 3:
        return _resize_2d(x, before, after)
    else:
        out = _resize_3d(x, radfm_spatial_size(tuple(x.shape[1:])), before)
    return out if after is None else after(out)


def _out_numel(x: torch.Tensor) -> int:
    return int(x.shape[0] * np.prod(radfm_spatial_size(tuple(x.shape[1:]))))


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
    """

    backend = [TransformBackends.TORCH]

    def _value_map(self, x: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor] | None:
        return None

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        x = convert_to_tensor(img, track_meta=isinstance(img, MetaTensor))
        in_spatial = tuple(int(s) for s in x.shape[1:])
        source = source_name(img)
        out = resize_to_radfm(x, self._value_map(x), source=source)
        out_spatial = tuple(int(s) for s in out.shape[1:])
        if not isinstance(img, MetaTensor):
            return convert_to_dst_type(out, dst=img, dtype=torch.float32)[0]
        result = MetaTensor(out, meta=dict(x.meta), applied_operations=list(x.applied_operations))
        result.affine = x.affine
        padded_in = in_spatial + (1,) * (3 - len(in_spatial))
        # 2D: the new depth axis keeps unit steps (the 4 copies sit one slice thickness apart)
        scale = _resize_affine(padded_in, out_spatial if len(in_spatial) == 3 else out_spatial[:2] + (1,))
        self.push_transform(result, orig_size=in_spatial, affine=scale,
                            extra_info={"was_2d": len(in_spatial) == 2, "scale": scale})
        return result

    def inverse(self, data: torch.Tensor) -> torch.Tensor:
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

    def __init__(self, window: Any = None, nonfinite: str = "error") -> None:
        from .intensity import _check_policy, resolve_window

        resolve_window(window)  # fail at construction on a bad window
        self.window = window
        self.nonfinite = _check_policy(nonfinite)

    def _value_map(self, x: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor] | None:
        from .intensity import intensity_mapping

        mapping, _, _ = intensity_mapping(x, window=self.window, nonfinite=self.nonfinite, source=source_name(x))
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

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = ResizeToRadFM()


class ScaleResizeToRadFMd(_MappedInvertible):
    """Dictionary version of :class:`ScaleResizeToRadFM`."""

    backend = ScaleResizeToRadFM.backend

    def __init__(self, keys: KeysCollection, window: Any = None, nonfinite: str = "error",
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = ScaleResizeToRadFM(window=window, nonfinite=nonfinite)


class OrientToRASd(_MappedInvertible):
    """Dictionary version of :class:`OrientToRAS`."""

    backend = OrientToRAS.backend

    def __init__(self, keys: KeysCollection, axcodes: str = "RAS", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = OrientToRAS(axcodes=axcodes)
