"""Zero-copy channel/depth repetition: expanded views, equal to the materialised result, usable everywhere."""

from __future__ import annotations

import io

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor, list_data_collate

from radfm.transforms import (
    MinMaxScale,
    ResizeToRadFM,
    ScaleResizeToRadFM,
    ToThreeChannels,
    preprocess_pipeline,
    preprocess_scan,
    read_scan,
)
from radfm.transforms.intensity import value_range


def test_grey_2d_output_is_an_expanded_view_equal_to_the_materialised_one(ct_small):
    view = preprocess_scan(ct_small)
    dense = preprocess_scan(ct_small, contiguous=True)
    assert view.stride()[0] == 0 and view.stride()[3] == 0  # channels and depth share one plane
    assert not view.is_contiguous() and dense.is_contiguous()
    assert view.untyped_storage().nbytes() == 512 * 512 * 4  # one float32 plane behind [3, 512, 512, 4]
    assert torch.equal(view.as_tensor(), dense.as_tensor())
    assert view.meta["filename_or_obj"] == dense.meta["filename_or_obj"] == str(ct_small)
    torch.testing.assert_close(view.affine, dense.affine)


def test_grey_3d_output_shares_one_channel(ct_series_dir):
    view = preprocess_scan(ct_series_dir)
    assert view.stride()[0] == 0 and view.stride()[3] == 1
    assert torch.equal(view.as_tensor(), preprocess_scan(ct_series_dir, contiguous=True).as_tensor())
    assert nib.orientations.aff2axcodes(np.asarray(view.affine)) == ("R", "A", "S")


def test_rgb_image_keeps_distinct_channels(tmp_path):
    from PIL import Image

    pixels = np.zeros((40, 30, 3), dtype=np.uint8)
    pixels[..., 0], pixels[..., 1], pixels[..., 2] = 200, 100, 0
    Image.fromarray(pixels, mode="RGB").save(tmp_path / "rgb.png")
    out = preprocess_scan(tmp_path / "rgb.png")
    assert out.stride()[0] != 0 and out.stride()[3] == 0  # real channels, depth still a view
    means = [float(out[c].mean()) for c in range(3)]
    assert means[0] == pytest.approx(1.0) and means[1] == pytest.approx(0.5, abs=0.01) and means[2] == 0.0
    assert torch.equal(out.as_tensor(), preprocess_scan(tmp_path / "rgb.png", contiguous=True).as_tensor())


def test_in_place_needs_a_clone_and_save_stores_the_base(ct_small):
    out = preprocess_scan(ct_small)
    with pytest.raises(RuntimeError):  # torch refuses to write into overlapping memory
        out.mul_(2)
    doubled = out.clone().mul_(2)
    assert doubled.is_contiguous() and float(doubled.max()) > 1.0
    view_bytes, dense_bytes = io.BytesIO(), io.BytesIO()
    torch.save(out.as_tensor(), view_bytes)
    torch.save(out.as_tensor().contiguous(), dense_bytes)
    assert len(view_bytes.getvalue()) < len(dense_bytes.getvalue()) / 10
    loaded = torch.load(io.BytesIO(view_bytes.getvalue()), weights_only=True)
    assert loaded.stride() == out.stride() and torch.equal(loaded, out.as_tensor())


def test_to_three_channels_views_and_contiguous_option():
    grey = MetaTensor(torch.rand(1, 4, 5, 6), meta={"filename_or_obj": "g.nii"})
    view = ToThreeChannels()(grey)
    assert isinstance(view, MetaTensor) and view.stride()[0] == 0 and view.meta["filename_or_obj"] == "g.nii"
    dense = ToThreeChannels(contiguous=True)(grey)
    assert dense.is_contiguous() and torch.equal(dense.as_tensor(), view.as_tensor())
    assert ToThreeChannels()(np.ones((1, 2, 2), dtype=np.float32)).flags.owndata  # numpy: a real copy


def test_deferred_nifti_scaling_matches_the_scaled_read(mni_t1):
    stored = read_scan(mni_t1, defer_rescale=True)
    assert stored.dtype == torch.uint8 and stored.meta["rescale"][0] == pytest.approx(1 / 255)
    scaled = read_scan(mni_t1)  # scaled on read: float32, never nibabel's float64
    assert scaled.dtype == torch.float32 and "rescale" not in scaled.meta
    torch.testing.assert_close(scaled.as_tensor(), stored.as_tensor().float() * stored.meta["rescale"][0])
    out = preprocess_scan(mni_t1, window=(0.1, 0.9))
    assert "rescale" not in out.meta
    assert float(out.max()) == pytest.approx(1.0, abs=1e-6) and float(out.min()) == 0.0


def test_deferred_monochrome1_inversion_matches_the_inverted_read(chest_radiograph):
    stored = read_scan(chest_radiograph, defer_rescale=True)  # as stored: bright is low
    inverted = read_scan(chest_radiograph)
    low, high = (int(v) for v in value_range(inverted))
    assert stored.dtype == inverted.dtype == torch.uint16
    assert stored.meta["rescale"] == (-1.0, float(low + high))
    assert "rescale" not in inverted.meta
    torch.testing.assert_close(inverted.as_tensor().float(), (low + high) - stored.as_tensor().float())
    for step in (MinMaxScale(), ResizeToRadFM(), ScaleResizeToRadFM()):  # every consumer applies it
        torch.testing.assert_close(step(stored).as_tensor(), step(inverted).as_tensor(), atol=2e-3, rtol=1e-4)
        assert "rescale" not in step(stored).meta


@pytest.mark.parametrize("high", [4095, 32767, 32768, 65535])
def test_value_range_of_uint16_on_both_sides_of_2_to_the_15(high):
    values = np.array([[7, high], [300, 12]], dtype=np.uint16)
    for x in (values, torch.from_numpy(values), torch.from_numpy(values).T):
        assert value_range(x) == (7.0, float(high))


class _Scans(torch.utils.data.Dataset):
    def __init__(self, paths):
        self.paths, self.pipeline = paths, preprocess_pipeline(keys="image")

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        return self.pipeline({"image": str(self.paths[index])})


@pytest.mark.parametrize("collate", [list_data_collate, None])
def test_views_survive_a_dataloader_worker(ct_small, mr_small, collate):
    loader = torch.utils.data.DataLoader(_Scans([ct_small, mr_small]), batch_size=2, num_workers=1,
                                         collate_fn=collate)
    batch = next(iter(loader))["image"]
    assert tuple(batch.shape) == (2, 3, 512, 512, 4) and batch.is_contiguous()
    assert isinstance(batch, MetaTensor) and str(ct_small) in str(batch.meta["filename_or_obj"])
    expected = torch.stack([preprocess_scan(ct_small).as_tensor(), preprocess_scan(mr_small).as_tensor()])
    assert torch.equal(batch.as_tensor(), expected)
    if collate is list_data_collate:  # MONAI's collate batches the affines too
        assert tuple(batch.affine.shape) == (2, 4, 4)
