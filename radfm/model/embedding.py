"""Token embeddings with images spliced in by indexing (no one-hot matmul).

id < V → the LLM's embedding row; V, V+1 (``<image>``, ``</image>``) → the two learned
``figure_token_weight`` rows; V+2+K → visual token K of that sample (image K // 32, latent K % 32).
"""

from __future__ import annotations

import torch
from torch import nn

from radfm.model.tokenizer import TOKENS_PER_IMAGE


def embed_with_images(
    input_ids: torch.Tensor,
    text_embedding: nn.Module,
    figure_token_weight: torch.Tensor,
    visual_tokens: list[torch.Tensor],
    base_vocab_size: int,
) -> torch.Tensor:
    """``[B, L]`` ids → ``[B, L, hidden]`` embeddings.

    ``visual_tokens[b]`` is ``[S_b * 32, hidden]``: the projected latents of sample b's images in
    prompt order (may be empty). An ``<imageK>`` id beyond the sample's images is an error.
    """
    vocab = base_vocab_size
    text_ids = input_ids.clamp(max=vocab - 1)  # image ids get a placeholder row, overwritten below
    embeds = text_embedding(text_ids)

    figure_mask = (input_ids == vocab) | (input_ids == vocab + 1)
    if figure_mask.any():
        rows = figure_token_weight.to(embeds.dtype)[input_ids[figure_mask] - vocab]
        embeds = embeds.index_put((figure_mask.nonzero(as_tuple=True)), rows)

    visual_mask = input_ids >= vocab + 2
    if visual_mask.any():
        batch_idx, pos_idx = visual_mask.nonzero(as_tuple=True)
        local = input_ids[batch_idx, pos_idx] - (vocab + 2)
        counts = torch.tensor([t.shape[0] for t in visual_tokens], device=input_ids.device)
        over = local >= counts[batch_idx]
        if over.any():
            b = int(batch_idx[over][0])
            k = int(local[over][0])
            raise ValueError(
                f"sample {b}: prompt uses image token <image{k}> (image {k // TOKENS_PER_IMAGE}) but only "
                f"{int(counts[b]) // TOKENS_PER_IMAGE} image(s) were given"
            )
        offsets = torch.cumsum(counts, 0) - counts  # start of each sample in the flat table
        table = torch.cat([t.to(embeds.dtype) for t in visual_tokens], dim=0)
        embeds = embeds.index_put((batch_idx, pos_idx), table[offsets[batch_idx] + local])
    return embeds
