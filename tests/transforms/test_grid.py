"""A configurable grid (size_2d, size_3d, max_depth): shapes, depth clamp, inverses, errors, bundle JSON."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from PIL import Image

from radfm.cli import main as radfm_main
from radfm.transforms import (
    ResizeToRadFM,
    ScaleResizeToRadFM,
    ScaleResizeToRadFMd,
    preprocess_pipeline,
    preprocess_scan,
    preprocess_transforms,
    radfm_spatial_size,
    target_depth,
)

SMALL = dict(size_2d=(64, 96), size_3d=(64, 32), max_depth=8)


@pytest.fixture()
def png_2d(tmp_path):
    """A 80x100 grey PNG with a bright block in the top-left corner."""
    pixels = np.zeros((80, 100), np.uint8)
    pixels[:20, :25] = 255
    path = tmp_path / "xray.png"
    Image.fromarray(pixels, mode="L").save(path)
    return path


@pytest.fixture()
def nifti_3d(tmp_path):
    """A 40x30x30 int16 RAS volume with a ramp along the slices."""
    data = np.broadcast_to(np.arange(30, dtype=np.int16) * 10, (40, 30, 30)).copy()
    path = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.0, 2.0, 1.0])), path)
    return path


def test_target_depth_clamps_at_max_depth():
    assert [target_depth(d, max_depth=8) for d in (1, 5, 6, 9, 10, 30, 300)] == [4, 4, 8, 8, 8, 8, 8]
    assert target_depth(30, max_depth=32) == 32 and target_depth(300, max_depth=128) == 128
    assert target_depth(300) == 64  # the paper's default is unchanged


def test_spatial_size_with_custom_grid():
    assert radfm_spatial_size((1955, 1841), **SMALL) == (64, 96, 4)
    assert radfm_spatial_size((512, 512, 30), **SMALL) == (64, 32, 8)
    assert radfm_spatial_size((16, 16, 5), **SMALL) == (64, 32, 4)
    assert radfm_spatial_size((16, 16, 5)) == (256, 256, 4)


def test_preprocess_scan_2d_custom_grid(png_2d):
    image = preprocess_scan(png_2d, **SMALL)
    assert tuple(image.shape) == (3, 64, 96, 4) and image.dtype == torch.float32
    assert float(image.min()) == 0.0 and float(image.max()) == 1.0
    # the bright corner stays top-left: rows and columns of a 2D image are kept
    assert float(image[0, :10, :20, 0].mean()) > 0.9 and float(image[0, 40:, 50:, 0].max()) < 0.05


def test_preprocess_scan_3d_custom_grid_and_depth_clamp(nifti_3d):
    image = preprocess_scan(nifti_3d, **SMALL)
    assert tuple(image.shape) == (3, 64, 32, 8)
    slice_means = image[0].mean(dim=(0, 1))
    assert bool((slice_means[1:] > slice_means[:-1]).all())  # the ramp along depth survives the resize
    assert tuple(preprocess_scan(nifti_3d, size_3d=(32, 32)).shape) == (3, 32, 32, 32)  # default max_depth 64
    assert tuple(preprocess_scan(nifti_3d).shape) == (3, 256, 256, 32)  # default grid unchanged


def test_array_and_dictionary_pipelines_use_the_grid(png_2d, nifti_3d):
    assert tuple(preprocess_transforms(**SMALL)(str(nifti_3d)).shape) == (3, 64, 32, 8)
    out = preprocess_pipeline(("a", "b"), **SMALL)({"a": str(png_2d), "b": str(nifti_3d)})
    assert tuple(out["a"].shape) == (3, 64, 96, 4) and tuple(out["b"].shape) == (3, 64, 32, 8)


@pytest.mark.parametrize("spatial, size", [((20, 24, 30), (64, 32, 8)), ((20, 24), (64, 96, 4))])
def test_inverse_with_custom_grid(spatial, size):
    x = MetaTensor(torch.rand(1, *spatial), affine=torch.diag(torch.tensor([0.7, 0.8, 2.5, 1.0], dtype=torch.float64)))
    transform = ResizeToRadFM(**SMALL)
    out = transform(x)
    assert tuple(out.shape) == (1, *size)
    # the output affine maps output voxels to the same world extent
    first_out_centre = out.affine[:3, :3] @ torch.full((3,), 0.0, dtype=torch.float64) + out.affine[:3, 3]
    assert torch.allclose(first_out_centre[:len(spatial)],
                          torch.tensor([0.5 * (n / m - 1) * s for n, m, s in zip(spatial, size, (0.7, 0.8, 2.5))],
                                       dtype=torch.float64)[:len(spatial)])
    back = transform.inverse(out)
    assert tuple(back.shape) == (1, *spatial)
    assert torch.allclose(back.affine, x.affine, atol=1e-6)
    assert not back.applied_operations


@pytest.mark.parametrize("options, message", [
    (dict(size_2d=(50, 64)), r"size_2d=\[50, 64\].*multiple of 32"),
    (dict(size_3d=(64,)), r"size_3d=\(64,\).*two sizes"),
    (dict(size_3d=(0, 64)), r"size_3d.*positive multiple of 32"),
    (dict(size_2d="64"), r"size_2d='64'"),
    (dict(max_depth=6), r"max_depth=6.*multiple of 4"),
    (dict(max_depth=0), r"max_depth=0.*>= 4"),
    (dict(max_depth=8.0), r"max_depth=8.0.*integer"),
])
def test_bad_grid_is_a_clear_error(options, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        ResizeToRadFM(**options)
    with pytest.raises(ValueError, match=message):
        ScaleResizeToRadFMd("image", **options)
    with pytest.raises(ValueError, match=message):  # before the (missing) file is read
        preprocess_scan(tmp_path / "missing.nii.gz", **options)
    with pytest.raises(ValueError, match=message):
        radfm_spatial_size((10, 10, 10), **options)


def test_bad_max_depth_in_target_depth():
    with pytest.raises(ValueError, match="max_depth=10"):
        target_depth(30, max_depth=10)


def test_bundle_json_with_custom_grid(png_2d, nifti_3d):
    from monai.bundle import ConfigParser

    parser = ConfigParser({
        "grid": {"size_2d": [64, 96], "size_3d": [64, 32], "max_depth": 8},
        "preprocessing": {
            "_target_": "radfm.transforms.preprocess_pipeline", "keys": ["image"],
            "size_2d": "@grid#size_2d", "size_3d": "@grid#size_3d", "max_depth": "@grid#max_depth",
        },
        "resize": {"_target_": "radfm.transforms.ScaleResizeToRadFMd", "keys": "image", "size_3d": [32, 32],
                   "max_depth": 4},
    })
    pipeline = parser.get_parsed_content("preprocessing")
    assert tuple(pipeline({"image": str(png_2d)})["image"].shape) == (3, 64, 96, 4)
    assert tuple(pipeline({"image": str(nifti_3d)})["image"].shape) == (3, 64, 32, 8)
    resize = parser.get_parsed_content("resize")
    volume = MetaTensor(torch.rand(1, 20, 24, 30))
    assert tuple(resize({"image": volume})["image"].shape) == (1, 32, 32, 4)


def test_scale_resize_keeps_window_with_custom_grid():
    x = MetaTensor(torch.linspace(-2000, 2000, 20 * 24 * 30).reshape(1, 20, 24, 30))
    out = ScaleResizeToRadFM(window="lung", **SMALL)(x)
    assert tuple(out.shape) == (1, 64, 32, 8) and 0.0 <= float(out.min()) and float(out.max()) <= 1.0


def test_preprocess_cli_with_grid(nifti_3d, capsys):
    radfm_main(["preprocess", str(nifti_3d), "--size_3d", "[64,32]", "--max_depth", "8"])
    assert "shape (3, 64, 32, 8)" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="max_depth=6"):
        radfm_main(["preprocess", str(nifti_3d), "--max_depth", "6"])
