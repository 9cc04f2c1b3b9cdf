"""The 3D ViT: position stride rule, token counts and per-size encoding of mixed images."""

from __future__ import annotations

import pytest
import torch

from radfm.model.config import RadFMConfig, VisionConfig
from radfm.model.vision import PositionTables3D, VisionEncoder3D


def test_position_tables_follow_the_stride_rule():
    torch.manual_seed(0)
    config = VisionConfig(dim=6)
    tables = PositionTables3D(config)
    h, w, d = 8, 16, 12
    grid = tables(h, w, d).reshape(h, w, d, 6)
    i, j, k = 3, 5, 7
    expected = torch.cat(
        [
            tables.row.weight[(i + 1) * (16 // h) - 1],
            tables.col.weight[(j + 1) * (16 // w) - 1],
            tables.depth.weight[(k + 1) * (128 // d) - 1],
        ]
    )
    assert torch.equal(grid[i, j, k], expected)


def test_token_count_per_image_size():
    encoder = VisionEncoder3D(VisionConfig(dim=12, depth=1, heads=2, dim_head=8, mlp_dim=16)).eval()
    with torch.no_grad():
        assert encoder(torch.rand(1, 3, 256, 256, 64)).shape == (1, 8 * 8 * 16, 12)
        assert encoder(torch.rand(2, 3, 512, 512, 4)).shape == (2, 16 * 16, 12)


def test_mixed_sizes_are_encoded_like_one_by_one(tiny_model, make_image):
    images = [make_image((512, 512, 4), 0), make_image((64, 96, 8), 1), make_image((512, 512, 4), 2)]
    with torch.no_grad():
        together = tiny_model.encode_images(images)
        alone = torch.cat([tiny_model.encode_images([image]) for image in images])
    assert together.shape == (3, 32, tiny_model.config.hidden_size)
    assert torch.allclose(together, alone, atol=1e-5)


@pytest.mark.parametrize("shape", [(64, 64, 8), (96, 64, 12), (512, 512, 4)])
def test_checkpointed_patch_embedding_in_bands_matches(shape, monkeypatch):
    """Under activation checkpointing the patch embedding runs in bands of patch rows (issue 21)."""
    import radfm.model.vision as vision

    monkeypatch.setattr(vision, "PATCHES_PER_BAND", 5)  # bands of one patch row: 2, 3 and 16 bands
    torch.manual_seed(0)
    embedding = vision.PatchEmbedding3D(RadFMConfig.preset("tiny").vision_config)
    images = torch.rand(2, 3, *shape)
    outputs, grads = [], []
    for checkpointed in (False, True):
        embedding.zero_grad(set_to_none=True)
        out = embedding(images, checkpointed=checkpointed)
        (out * torch.linspace(-1, 1, out.shape[1])[None, :, None]).sum().backward()
        outputs.append(out.detach())
        grads.append({n: p.grad.clone() for n, p in embedding.named_parameters()})
    torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-5, atol=1e-6)
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-4, atol=1e-6, msg=name)
