"""Intensity transforms: CT windowing, min-max to [0, 1], alpha removal, grey -> 3 channels.

All take ``[C, *spatial]`` numpy arrays, torch tensors or MetaTensors and give back the same
kind. The paper normalises each image with plain min-max (``(x - min) / (max - min)``);
windowing (clip to an HU range) is an opt-in step before it.

Bad values: NaN/Inf voxels raise :class:`ScanReadError` naming the file (``nonfinite="error"``,
the default) or are replaced (``nonfinite="replace"``: NaN and -Inf -> the smallest finite value,
+Inf -> the largest). A constant image (min = max) becomes all zeros, never NaN.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends, convert_to_dst_type, convert_to_tensor

from .errors import ScanReadError, source_name

# (lowest, highest) HU shown; from the usual window width/level pairs (level - width/2, level + width/2)
WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "lung": (-1350.0, 150.0),  # W 1500, L -600
    "mediastinum": (-160.0, 240.0),  # W 400, L 40
    "bone": (-500.0, 1300.0),  # W 1800, L 400
    "brain": (0.0, 80.0),  # W 80, L 40
}
NONFINITE_POLICIES = ("error", "replace")

WindowSpec = str | tuple[float, float] | list[float] | None


def resolve_window(window: WindowSpec) -> tuple[float, float] | None:
    """A preset name or (low, high) HU pair -> (low, high); None stays None (no windowing)."""
    if window is None:
        return None
    if isinstance(window, str):
        if window.lower() not in WINDOW_PRESETS:
            raise ValueError(f"window={window!r}: unknown preset; expected one of {sorted(WINDOW_PRESETS)} "
                             "or a (low, high) HU pair")
        return WINDOW_PRESETS[window.lower()]
    try:
        low, high = (float(v) for v in window)
    except (TypeError, ValueError):
        raise ValueError(f"window={window!r}: expected a preset name or a (low, high) HU pair") from None
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise ValueError(f"window={window!r}: expected finite low < high")
    return low, high


def _check_policy(nonfinite: str) -> str:
    if nonfinite not in NONFINITE_POLICIES:
        raise ValueError(f"nonfinite={nonfinite!r}: expected one of {NONFINITE_POLICIES}")
    return nonfinite


def value_range(x: torch.Tensor | np.ndarray) -> tuple[float, float]:
    """(min, max) in one pass and without a copy; NaN anywhere makes both NaN."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x) if x.flags.writeable else torch.from_numpy(x.copy())
    if x.dtype == torch.uint16:
        # 12-16 bit scanner data: as int16 the same bits read as the same values when all are
        # < 2**15 (then the min is >= 0), and torch reduces int16 ~4x faster than numpy does uint16
        low, high = _aminmax_in_memory_order(x.view(torch.int16))
        if low >= 0:
            return low, high
    if x.dtype in (torch.uint16, torch.uint32, torch.uint64):  # torch lacks min/max for these
        array = x.numpy()  # numpy reduces in memory order itself
        return float(array.min()), float(array.max())
    if x.dtype == torch.bool:
        x = x.to(torch.uint8)
    return _aminmax_in_memory_order(x)


def _aminmax_in_memory_order(x: torch.Tensor) -> tuple[float, float]:
    # reduce over a view in memory order: torch reductions over transposed strides are ~30x slower
    x = x.permute(*sorted(range(x.ndim), key=lambda d: -abs(x.stride(d))))
    low, high = torch.aminmax(x)
    return float(low), float(high)


def finite_value_range(x: torch.Tensor, source: str) -> tuple[float, float]:
    """(min, max) over finite voxels only (builds a mask: used only when NaN/Inf were found)."""
    finite = x[torch.isfinite(x)]
    if finite.numel() == 0:
        raise ScanReadError(f"{source}: every voxel is NaN or Inf; expected finite intensities")
    return float(finite.min()), float(finite.max())


def pending_rescale(x: Any) -> tuple[float, float] | None:
    """A stored-value scaling not yet applied (``meta["rescale"]``, see ``LoadScan(defer_rescale=True)``)."""
    rescale = x.meta.get("rescale") if isinstance(x, MetaTensor) else None
    return None if rescale is None else (float(rescale[0]), float(rescale[1]))


def intensity_mapping(x: torch.Tensor, *, window: WindowSpec = None, nonfinite: str = "error",
                      source: str | None = None,
                      rescale: tuple[float, float] | None = None,
                      ) -> tuple[Callable[[torch.Tensor], torch.Tensor], float, float]:
    """The elementwise map (float32 in, [0, 1] out, in place) that windows and min-max scales ``x``.

    Computed once from ``x``'s value range so that it can be applied chunk by chunk, or after a
    linear resize (which commutes with an affine map). ``rescale`` = (slope, intercept) turns
    stored values into real ones first (a deferred NIfTI scaling). Returns (map, low, high)
    where low/high are the (rescaled) intensities that go to 0 and 1.
    """
    source = source or source_name(x)
    if isinstance(x, MetaTensor):
        x = x.as_tensor()
    _check_policy(nonfinite)
    bounds = resolve_window(window)
    low, high = value_range(x)
    replace: tuple[float, float] | None = None
    if not (np.isfinite(low) and np.isfinite(high)):
        if nonfinite == "error":
            raise ScanReadError(f"{source}: the image holds NaN or Inf values; expected finite intensities "
                                "(pass nonfinite='replace' to replace them by the finite min/max)")
        low, high = finite_value_range(x, source)
        replace = (low, high)  # in stored units: replaced before the rescale
    if rescale is not None:
        low, high = sorted((rescale[0] * low + rescale[1], rescale[0] * high + rescale[1]))
    if bounds is not None:
        low, high = min(max(low, bounds[0]), bounds[1]), min(max(high, bounds[0]), bounds[1])
    scale = 0.0 if high <= low else 1.0 / (high - low)  # constant image -> zeros, never 0/0

    # rescale then min-max, folded into one multiply-add when nothing is clipped in between
    fold = bounds is None and rescale is not None
    slope, offset = (rescale[0] * scale, (rescale[1] - low) * scale) if fold else (1.0, 0.0)

    def apply(chunk: torch.Tensor) -> torch.Tensor:
        if replace is not None:
            torch.nan_to_num(chunk, nan=replace[0], posinf=replace[1], neginf=replace[0], out=chunk)
        if fold:
            chunk.mul_(slope).add_(offset)
        else:
            if rescale is not None:
                chunk.mul_(rescale[0]).add_(rescale[1])
            if bounds is not None:
                chunk.clamp_(bounds[0], bounds[1])
            chunk.sub_(low).mul_(scale)
        return chunk.clamp_(0.0, 1.0)  # guards float rounding at the ends

    # without clipping or replacement the map is affine, so it commutes with linear interpolation:
    # the resize may then apply it to the (usually much smaller) output instead
    apply.affine_only = bounds is None and replace is None  # type: ignore[attr-defined]
    return apply, low, high


def _without_rescale(out: Any) -> Any:
    """Drop the (now applied) pending-rescale note from a MetaTensor result."""
    if isinstance(out, MetaTensor):
        out.meta.pop("rescale", None)
    return out


def _as_float32_copy(x: torch.Tensor) -> torch.Tensor:
    """A fresh float32 copy (never a view of the input: the maps below work in place)."""
    out = torch.empty(x.shape, dtype=torch.float32)
    out.copy_(x.as_tensor() if hasattr(x, "as_tensor") else x)
    return out


class CTWindow(Transform):
    """Clip intensities to a CT window (preset name or (low, high) HU); float32 out; None = no-op.

    Presets (HU): lung -1350..150, mediastinum -160..240, bone -500..1300, brain 0..80.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, window: WindowSpec = None) -> None:
        self.bounds = resolve_window(window)

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        if self.bounds is None:
            return img
        x = convert_to_tensor(img, track_meta=isinstance(img, MetaTensor))
        out = _as_float32_copy(x)
        rescale = pending_rescale(img)
        if rescale is not None:  # clip real values (HU), not stored ones
            out.mul_(rescale[0]).add_(rescale[1])
        out.clamp_(*self.bounds)
        return _without_rescale(convert_to_dst_type(out, dst=img, dtype=torch.float32)[0])


class MinMaxScale(Transform):
    """Min-max to [0, 1] over the whole image (all channels together); float32 out.

    Constant image -> zeros. ``nonfinite``: "error" (default) or "replace"; see module doc.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, nonfinite: str = "error") -> None:
        self.nonfinite = _check_policy(nonfinite)

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        x = convert_to_tensor(img, track_meta=isinstance(img, MetaTensor))
        mapping, _, _ = intensity_mapping(x, nonfinite=self.nonfinite, source=source_name(img),
                                          rescale=pending_rescale(img))
        out = mapping(_as_float32_copy(x))
        return _without_rescale(convert_to_dst_type(out, dst=img, dtype=torch.float32)[0])


class DropAlpha(Transform):
    """Drop an alpha channel: 4 channels (RGBA) -> 3, 2 channels (grey + alpha) -> 1; else unchanged."""

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        channels = img.shape[0]
        return img[:3] if channels == 4 else img[:1] if channels == 2 else img


class ToThreeChannels(Transform):
    """Channel-first image -> exactly 3 channels: grey repeated, RGB kept, alpha dropped.

    Grey tensors are repeated as an ``expand`` view (no copy: channel stride 0, all three
    channels share one plane's memory); numpy input gets a real copy (numpy broadcast views are
    read-only). ``contiguous=True`` materialises the result (and any view it came in as).
    In-place ops on a view need ``.clone()``/``.contiguous()`` first; ``torch.stack``/collate copy.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, contiguous: bool = False) -> None:
        self.contiguous = contiguous

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        img = DropAlpha()(img)
        channels = img.shape[0]
        if channels not in (1, 3):
            raise ScanReadError(f"{source_name(img)}: {channels} channels; expected 1 (grey), 2 (grey+alpha), "
                                "3 (RGB) or 4 (RGBA)")
        if isinstance(img, np.ndarray):
            return img if channels == 3 else np.repeat(img, 3, axis=0)
        out = img if channels == 3 else img.expand(3, *img.shape[1:])  # MetaTensor keeps meta and affine
        return out.contiguous() if self.contiguous else out


class _Mapped(MapTransform):
    """Dictionary wrapper: apply ``self.transform`` to every key."""

    transform: Transform

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key])
        return d


class CTWindowd(_Mapped):
    """Dictionary version of :class:`CTWindow`."""

    backend = CTWindow.backend

    def __init__(self, keys: KeysCollection, window: WindowSpec = None, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = CTWindow(window)


class MinMaxScaled(_Mapped):
    """Dictionary version of :class:`MinMaxScale`."""

    backend = MinMaxScale.backend

    def __init__(self, keys: KeysCollection, nonfinite: str = "error", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = MinMaxScale(nonfinite)


class DropAlphad(_Mapped):
    """Dictionary version of :class:`DropAlpha`."""

    backend = DropAlpha.backend

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = DropAlpha()


class ToThreeChannelsd(_Mapped):
    """Dictionary version of :class:`ToThreeChannels`."""

    backend = ToThreeChannels.backend

    def __init__(self, keys: KeysCollection, contiguous: bool = False, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = ToThreeChannels(contiguous=contiguous)
