"""The 3D ViT image encoder (published RadFM layout, computed with SDPA).

Input one image ``[3, H, W, D]`` (batched ``[N, 3, H, W, D]``), H and W multiples of 32, D a
multiple of 4; output ``[N, (H/32)(W/32)(D/4), dim]`` patch tokens (no CLS, no final norm).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from einops import rearrange
from torch import nn

from radfm.model.config import VisionConfig
from radfm.model.recompute import selective_checkpoint

PATCHES_PER_BAND = 256  # patch embedding under checkpointing: patches per recomputed band

PREPROCESS_HINT = "use radfm.transforms.preprocess_scan (2D -> 3x512x512x4, 3D -> 3x256x256xD')"


def check_image_shape(shape: Sequence[int], config: VisionConfig, *, where: str = "image") -> None:
    """Raise ``ValueError`` naming the shape and the rule if an image cannot be encoded."""
    shape = tuple(int(s) for s in shape)
    p, pf = config.patch_size, config.frame_patch_size
    rows, cols, deps = config.pos_table
    if len(shape) != 4 or shape[0] != config.channels:
        raise ValueError(f"{where} has shape {list(shape)}; expected [{config.channels}, H, W, D]. {PREPROCESS_HINT}")
    _, h, w, d = shape
    problems = []
    if h % p or w % p:
        problems.append(f"H and W must be multiples of {p}")
    if d % pf:
        problems.append(f"depth D must be a multiple of {pf}")
    if h > p * rows or w > p * cols or d > pf * deps:
        problems.append(f"H, W must be at most {p * rows} and D at most {pf * deps}")
    if min(h, w, d) <= 0:
        problems.append("every side must be positive")
    if problems:
        raise ValueError(f"{where} has shape {list(shape)} (C, H, W, D): {'; '.join(problems)}. {PREPROCESS_HINT}")


class PatchEmbedding3D(nn.Module):
    """Cut ``[N, C, H, W, D]`` into 32×32×4 patches → LayerNorm → Linear → LayerNorm."""

    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        self.patch_size = config.patch_size
        self.frame_patch_size = config.frame_patch_size
        self.input_norm = nn.LayerNorm(config.patch_dim)
        self.projection = nn.Linear(config.patch_dim, config.dim)
        self.output_norm = nn.LayerNorm(config.dim)

    def forward(self, images: torch.Tensor, checkpointed: bool = False) -> torch.Tensor:
        """``[N, C, H, W, D]`` -> ``[N, (H/p)(W/p)(D/pf), dim]`` patch embeddings.

        ``checkpointed``: run in bands of patch rows (about 256 patches each) under selective
        checkpointing, so the 12288-wide patches and their LayerNorm are never held for the
        whole image (recomputed band by band in the backward pass; the matmul output is kept).
        """
        if not checkpointed:
            return self._embed(images)
        rows = images.shape[2] // self.patch_size
        per_row = (images.shape[3] // self.patch_size) * (images.shape[4] // self.frame_patch_size)
        band = self.patch_size * max(1, PATCHES_PER_BAND // per_row)  # tokens are ordered h first
        bands = [images[:, :, top : top + band] for top in range(0, rows * self.patch_size, band)]
        return torch.cat([selective_checkpoint(self._embed, pixels) for pixels in bands], dim=1)

    def _embed(self, images: torch.Tensor) -> torch.Tensor:
        # published flattening order inside a patch: rows, columns, depth, then channel
        patches = rearrange(
            images,
            "n c (h p1) (w p2) (d pf) -> n (h w d) (p1 p2 pf c)",
            p1=self.patch_size,
            p2=self.patch_size,
            pf=self.frame_patch_size,
        )
        return self.output_norm(self.projection(self.input_norm(patches)))


class PositionTables3D(nn.Module):
    """Three learned tables (rows, columns, depth), each ``dim/3`` wide, read with the stride rule.

    Token (i, j, k) of an h×w×d grid takes ``row[(i+1)·(R//h) − 1] ⊕ col[(j+1)·(C//w) − 1] ⊕
    dep[(k+1)·(Dp//d) − 1]``, so one set of weights serves 512², 256² and any depth.
    """

    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        width = config.dim // 3
        rows, cols, deps = config.pos_table
        self.row = nn.Embedding(rows, width)
        self.col = nn.Embedding(cols, width)
        self.depth = nn.Embedding(deps, width)

    @staticmethod
    def _indices(count: int, table_size: int, device: torch.device) -> torch.Tensor:
        return (torch.arange(count, device=device) + 1) * (table_size // count) - 1

    def forward(self, h: int, w: int, d: int) -> torch.Tensor:
        """``[h·w·d, dim]`` positions, d fastest."""
        device = self.row.weight.device
        row = self.row(self._indices(h, self.row.num_embeddings, device))
        col = self.col(self._indices(w, self.col.num_embeddings, device))
        dep = self.depth(self._indices(d, self.depth.num_embeddings, device))
        grid = torch.cat(
            [
                row[:, None, None, :].expand(h, w, d, -1),
                col[None, :, None, :].expand(h, w, d, -1),
                dep[None, None, :, :].expand(h, w, d, -1),
            ],
            dim=-1,
        )
        return grid.reshape(h * w * d, -1)


class SelfAttention(nn.Module):
    """Multi-head self-attention: qkv without bias, output projection with bias."""

    def __init__(self, dim: int, heads: int, dim_head: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)
        self.out = nn.Linear(heads * dim_head, dim)
        self.out_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, T, dim]`` -> ``[N, T, dim]`` (multi-head self-attention through SDPA)."""
        q, k, v = rearrange(self.qkv(x), "n t (three h e) -> three n h t e", three=3, h=self.heads)
        attended = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.out_dropout(self.out(rearrange(attended, "n h t e -> n t (h e)")))


class FeedForward(nn.Module):
    """``Linear → GELU → Dropout → Linear → Dropout``."""

    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, T, dim]`` -> ``[N, T, dim]``."""
        return self.dropout(self.fc2(self.dropout(F.gelu(self.fc1(x)))))


class ViTBlock(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        self.attention_norm = nn.LayerNorm(config.dim)
        self.attention = SelfAttention(config.dim, config.heads, config.dim_head, config.dropout)
        self.mlp_norm = nn.LayerNorm(config.dim)
        self.mlp = FeedForward(config.dim, config.mlp_dim, config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, T, dim]`` -> ``[N, T, dim]`` (residual attention, then residual MLP)."""
        x = x + self.attention(self.attention_norm(x))
        return x + self.mlp(self.mlp_norm(x))


class VisionEncoder3D(nn.Module):
    """3D ViT: ``[N, 3, H, W, D]`` → ``[N, (H/32)(W/32)(D/4), dim]``."""

    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        self.config = config
        self.patch_embedding = PatchEmbedding3D(config)
        self.position_embedding = PositionTables3D(config)
        self.embedding_dropout = nn.Dropout(config.emb_dropout)
        self.blocks = nn.ModuleList(ViTBlock(config) for _ in range(config.depth))
        self.gradient_checkpointing = False

    def forward(self, images: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """``[N, 3, H, W, D]``, or a list of N same-shaped ``[3, H, W, D]`` -> ``[N, T, dim]`` tokens.

        T = (H/32)(W/32)(D/4). A list is never stacked into one copy: each image goes through the
        patch embedding on its own (under checkpointing only views of it are kept), the blocks run
        on the batch.
        """
        shapes = {tuple(images.shape[1:])} if isinstance(images, torch.Tensor) else {tuple(i.shape) for i in images}
        if len(shapes) != 1:
            raise ValueError(f"image batch: the images must share one shape, got {sorted(shapes)}")
        shape = shapes.pop()
        check_image_shape(shape, self.config, where="image batch")
        _, h, w, d = shape
        grid = (h // self.config.patch_size, w // self.config.patch_size, d // self.config.frame_patch_size)
        checkpointing = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        if isinstance(images, torch.Tensor):
            dtype, tokens = images.dtype, self.patch_embedding(images, checkpointed=checkpointing)
        else:
            dtype = images[0].dtype
            tokens = torch.cat([self.patch_embedding(i.unsqueeze(0), checkpointed=checkpointing) for i in images])
        tokens = tokens + self.position_embedding(*grid).to(dtype)
        tokens = self.embedding_dropout(tokens)
        checkpoint = None
        if checkpointing:
            # the function transformers' activation_checkpointing_enable set (full or selective),
            # else plain non-reentrant checkpointing
            checkpoint = getattr(self, "_gradient_checkpointing_func", None) or functools.partial(
                torch.utils.checkpoint.checkpoint, use_reentrant=False
            )
        for block in self.blocks:
            tokens = checkpoint(block, tokens) if checkpoint is not None else block(tokens)
        return tokens
