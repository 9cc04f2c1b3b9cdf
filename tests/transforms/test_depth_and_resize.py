"""The depth rule and the resize to RadFM's grid (separable resize == one trilinear interpolate)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.data import MetaTensor

from radfm.transforms import ResizeToRadFM, ResizeToRadFMd, radfm_spatial_size, spatial, target_depth


@pytest.mark.parametrize("depth, expected", [
    (1, 4), (2, 4), (3, 4), (4, 4), (5, 4), (6, 8), (7, 8), (9, 8), (10, 12), (30, 32), (62, 64), (64, 64),
    (65, 64), (300, 64),
])
def test_target_depth(depth, expected):
    assert target_depth(depth) == expected
    assert target_depth(depth) % 4 == 0


def test_target_depth_rejects_empty():
    with pytest.raises(ValueError, match="depth=0"):
        target_depth(0)


def test_spatial_size_rule():
    assert radfm_spatial_size((1955, 1841)) == (512, 512, 4)
    assert radfm_spatial_size((512, 512, 300)) == (256, 256, 64)
    assert radfm_spatial_size((16, 16, 5)) == (256, 256, 4)


@pytest.mark.parametrize("layout", ["C", "F"])
@pytest.mark.parametrize("fraction, plane", [(1 << 20, 256), (1, 32)])  # one slice a chunk; 11 slices a chunk
def test_separable_resize_equals_trilinear(monkeypatch, layout, fraction, plane):
    monkeypatch.setattr(spatial, "CHUNK_VOXELS", 500)  # force many chunks
    monkeypatch.setattr(spatial, "CHUNK_INPUT_FRACTION", fraction)  # chunks up to 1/fraction of the input
    rng = np.random.default_rng(0)
    volume = rng.integers(-1000, 2000, size=(1, 37, 29, 23)).astype(np.int16)
    if layout == "F":
        volume = np.asfortranarray(volume)
    x = torch.from_numpy(volume)
    ours = spatial.resize_to_radfm(x, size_3d=(plane, plane))
    reference = F.interpolate(x[None].float(), size=(plane, plane, 24), mode="trilinear", align_corners=False)[0]
    assert ours.shape == (1, plane, plane, 24) and ours.dtype == torch.float32
    torch.testing.assert_close(ours, reference, atol=1e-3, rtol=1e-5)


@pytest.mark.parametrize("kind", ["numpy", "torch", "meta"])
def test_resize_input_kinds(kind):
    image = np.random.default_rng(1).random((1, 40, 30)).astype(np.float32)
    data = {"numpy": image, "torch": torch.from_numpy(image), "meta": MetaTensor(torch.from_numpy(image))}[kind]
    out = ResizeToRadFM()(data)
    assert tuple(out.shape) == (1, 512, 512, 4)
    assert isinstance(out, {"numpy": np.ndarray, "torch": torch.Tensor, "meta": MetaTensor}[kind])
    out_t = torch.as_tensor(np.asarray(out))
    assert torch.equal(out_t[..., 0], out_t[..., 3])  # the slice repeated to depth 4


def test_resize_is_invertible_and_updates_affine():
    volume = MetaTensor(torch.rand(1, 64, 48, 10), affine=torch.diag(torch.tensor([2.0, 2.0, 5.0, 1.0])))
    out = ResizeToRadFMd(keys="image")({"image": volume})
    resized = out["image"]
    assert tuple(resized.shape) == (1, 256, 256, 12)
    spacing = np.linalg.norm(np.asarray(resized.affine)[:3, :3], axis=0)
    np.testing.assert_allclose(spacing, [2.0 * 64 / 256, 2.0 * 48 / 256, 5.0 * 10 / 12], rtol=1e-6)
    transform = ResizeToRadFMd(keys="image")
    restored = transform.inverse(transform({"image": volume}))["image"]
    assert tuple(restored.shape) == (1, 64, 48, 10)
    torch.testing.assert_close(restored.affine, volume.affine)


def test_images_smaller_than_a_patch_are_upsampled():
    tiny = torch.arange(9, dtype=torch.float32).reshape(1, 3, 3)
    out = ResizeToRadFM()(tiny)
    assert tuple(out.shape) == (1, 512, 512, 4)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 8.0
