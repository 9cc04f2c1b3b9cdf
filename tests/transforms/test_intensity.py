"""Windowing, min-max, alpha and channel handling over numpy, torch and MetaTensor inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from radfm.transforms import (
    WINDOW_PRESETS,
    CTWindow,
    CTWindowd,
    DropAlpha,
    MinMaxScale,
    MinMaxScaled,
    ScanReadError,
    ToThreeChannels,
    resolve_window,
)
from radfm.transforms.spatial import ResizeToRadFM, ScaleResizeToRadFM

KINDS = ["numpy", "torch", "meta"]


def as_kind(array: np.ndarray, kind: str, filename: str = "scan.nii.gz"):
    if kind == "numpy":
        return array
    tensor = torch.from_numpy(array)
    return tensor if kind == "torch" else MetaTensor(tensor, meta={"filename_or_obj": filename})


def to_numpy(x) -> np.ndarray:
    return np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x)


@pytest.mark.parametrize("kind", KINDS)
def test_min_max_to_unit_range(kind):
    array = np.array([[[-1000, 0], [500, 3000]]], dtype=np.int16)
    out = MinMaxScale()(as_kind(array, kind))
    assert to_numpy(out).dtype == np.float32
    np.testing.assert_allclose(to_numpy(out), (array + 1000) / 4000.0, rtol=1e-6)
    assert type(out) is type(as_kind(array, kind))


@pytest.mark.parametrize("kind", KINDS)
def test_constant_image_gives_zeros(kind):
    out = MinMaxScale()(as_kind(np.full((1, 4, 4), 7, dtype=np.int16), kind))
    assert np.all(to_numpy(out) == 0.0)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_is_an_error_naming_the_file(kind, bad):
    array = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    array[0, 1, 1] = bad
    with pytest.raises(ScanReadError, match="NaN or Inf") as info:
        MinMaxScale()(as_kind(array, kind))
    if kind == "meta":
        assert "scan.nii.gz" in str(info.value)


def test_nonfinite_replace_policy():
    array = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    array[0, 0, 0], array[0, 0, 1], array[0, 3, 3] = np.nan, -np.inf, np.inf
    out = to_numpy(MinMaxScale(nonfinite="replace")(array))
    assert np.isfinite(out).all() and out.min() == 0.0 and out.max() == 1.0
    assert out[0, 0, 0] == 0.0 and out[0, 0, 1] == 0.0 and out[0, 3, 3] == 1.0
    with pytest.raises(ScanReadError, match="every voxel"):
        MinMaxScale(nonfinite="replace")(np.full((1, 2, 2), np.nan, dtype=np.float32))
    with pytest.raises(ValueError, match="nonfinite"):
        MinMaxScale(nonfinite="ignore")


@pytest.mark.parametrize("kind", KINDS)
def test_ct_window_presets_and_range(kind):
    array = np.array([[[-2000, -1350, -600], [0, 150, 3000]]], dtype=np.int16)
    out = to_numpy(CTWindow("lung")(as_kind(array, kind)))
    np.testing.assert_array_equal(out, np.clip(array, -1350, 150))
    assert resolve_window("Brain") == (0.0, 80.0)
    assert resolve_window((-100, 300)) == (-100.0, 300.0)
    assert set(WINDOW_PRESETS) == {"lung", "mediastinum", "bone", "brain"}
    assert CTWindow(None)(array) is array  # off by default


@pytest.mark.parametrize("window", ["liver", (10, 5), (0, np.nan), "abc", (1, 2, 3)])
def test_bad_window(window):
    with pytest.raises(ValueError, match="window="):
        resolve_window(window)


def test_dictionary_versions():
    data = {"image": np.array([[[0, 100], [200, 400]]], dtype=np.int16), "label": "keep"}
    out = MinMaxScaled("image")(CTWindowd("image", window=(0, 200))(data))
    np.testing.assert_allclose(to_numpy(out["image"]), [[[0, 0.5], [1, 1]]])
    assert out["label"] == "keep"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("channels, expected_first", [(1, 0), (2, 0), (3, 1), (4, 1)])
def test_three_channels(kind, channels, expected_first):
    array = np.stack([np.full((2, 2), c, dtype=np.float32) for c in range(channels)])
    out = to_numpy(ToThreeChannels()(as_kind(array, kind)))
    assert out.shape == (3, 2, 2)
    if channels in (1, 2):  # grey (+alpha): grey repeated
        assert np.all(out == 0)
    else:  # RGB kept, alpha dropped
        np.testing.assert_array_equal(out[:, 0, 0], [0, 1, 2])
    assert to_numpy(DropAlpha()(array)).shape[0] == {1: 1, 2: 1, 3: 3, 4: 3}[channels]


def test_five_channels_is_an_error():
    with pytest.raises(ScanReadError, match="5 channels"):
        ToThreeChannels()(np.zeros((5, 2, 2), dtype=np.float32))


@pytest.mark.parametrize("window", [None, "mediastinum"])
def test_fused_scale_resize_equals_composition(window):
    volume = MetaTensor(torch.randint(-1500, 2500, (1, 40, 36, 18), dtype=torch.int16))
    fused = ScaleResizeToRadFM(window=window)(volume)
    composed = ResizeToRadFM()(MinMaxScale()(CTWindow(window)(volume)))
    torch.testing.assert_close(fused.as_tensor(), composed.as_tensor(), atol=1e-5, rtol=1e-5)
    assert float(fused.min()) >= 0.0 and float(fused.max()) <= 1.0
