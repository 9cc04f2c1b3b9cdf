"""The 3D ViT: position stride rule, token counts and per-size encoding of mixed images."""

from __future__ import annotations

import torch

from radfm.model.config import VisionConfig
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
