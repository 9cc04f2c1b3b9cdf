"""Perceiver resampler: any number of image tokens → exactly 32 latents per image.

``[N, T, dim]`` → ``[N, 32, dim]``. Each layer: latents attend to ``[image tokens ; latents]``
(separately LayerNormed, no biases), then a feed-forward; both residual. Final LayerNorm.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from radfm.model.config import PerceiverConfig


class LatentCrossAttention(nn.Module):
    """Queries from the latents; keys/values from the image tokens and the latents together."""

    def __init__(self, dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.norm_media = nn.LayerNorm(dim)
        self.norm_latents = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, media: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """Latents ``[N, L, dim]`` attend to media and themselves ``[N, T + L, dim]`` -> ``[N, L, dim]``."""
        media = self.norm_media(media)
        latents = self.norm_latents(latents)
        q = rearrange(self.to_q(latents), "n t (h e) -> n h t e", h=self.heads)
        k, v = rearrange(
            self.to_kv(torch.cat([media, latents], dim=1)), "n t (two h e) -> two n h t e", two=2, h=self.heads
        )
        attended = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(rearrange(attended, "n h t e -> n t (h e)"))


class LatentFeedForward(nn.Module):
    """``LayerNorm → Linear(×mult, no bias) → GELU → Linear(no bias)``."""

    def __init__(self, dim: int, mult: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, dim * mult, bias=False)
        self.fc2 = nn.Linear(dim * mult, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, L, dim]`` -> ``[N, L, dim]``."""
        return self.fc2(F.gelu(self.fc1(self.norm(x))))


class PerceiverLayer(nn.Module):
    """One resampler layer: residual cross-attention of the latents, then a residual feed-forward."""

    def __init__(self, dim: int, config: PerceiverConfig) -> None:
        super().__init__()
        self.attention = LatentCrossAttention(dim, config.heads, config.dim_head)
        self.feed_forward = LatentFeedForward(dim, config.ff_mult)

    def forward(self, media: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """Media ``[N, T, dim]``, latents ``[N, L, dim]`` -> updated latents ``[N, L, dim]``."""
        latents = latents + self.attention(media, latents)
        return latents + self.feed_forward(latents)


class PerceiverResampler(nn.Module):
    """``[N, T, dim]`` image tokens → ``[N, num_latents, dim]``."""

    def __init__(self, dim: int, config: PerceiverConfig) -> None:
        super().__init__()
        self.latents = nn.Parameter(torch.randn(config.num_latents, dim))
        self.layers = nn.ModuleList(PerceiverLayer(dim, config) for _ in range(config.depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, media: torch.Tensor) -> torch.Tensor:
        """``[N, T, dim]`` -> ``[N, num_latents, dim]`` (32 latents per image)."""
        latents = self.latents.to(media.dtype).expand(media.shape[0], -1, -1)
        for layer in self.layers:
            latents = layer(media, latents)
        return self.norm(latents)
