"""Activation checkpointing modes of RadFM: what is kept and what is recomputed in the backward pass.

``"full"``: each ViT block and LLM decoder layer keeps only its input and is run again in the
backward pass. ``"selective"``: the same blocks also keep the outputs of their matrix products and
fused attention (:func:`selective_checkpoint_policy`), so the backward pass recomputes only
elementwise ops (norms, activations, residual adds, rotary): almost no extra FLOPs, a smaller saving.
In both modes the ViT's patch embedding runs in bands of patch rows whose 12288-wide patches and
their LayerNorm are recomputed (its matmul output kept): at 1024 patches per 3D scan those
tensors (3 × 48 MiB in fp32) are the largest activations of the vision side.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.utils.checkpoint

CHECKPOINTING_MODES = ("full", "selective")

# ops whose outputs selective checkpointing keeps: the FLOPs of a transformer block (matrix
# products and fused attention, CPU and CUDA kernels); everything else is recomputed
_SAVED_OPS = frozenset(
    getattr(torch.ops.aten, name).default
    for name in (
        "mm", "addmm", "bmm", "baddbmm",
        "_scaled_dot_product_flash_attention", "_scaled_dot_product_flash_attention_for_cpu",
        "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention",
    )
    if hasattr(torch.ops.aten, name)
)


def selective_checkpoint_policy(
    ctx: Any, op: Any, *args: Any, **kwargs: Any
) -> torch.utils.checkpoint.CheckpointPolicy:
    """Keep matmul and attention outputs, recompute the rest (``create_selective_checkpoint_contexts``)."""
    if op in _SAVED_OPS:
        return torch.utils.checkpoint.CheckpointPolicy.MUST_SAVE
    return torch.utils.checkpoint.CheckpointPolicy.PREFER_RECOMPUTE


def selective_context() -> Any:
    """``context_fn`` for ``torch.utils.checkpoint.checkpoint`` (non-reentrant) applying the policy above."""
    return torch.utils.checkpoint.create_selective_checkpoint_contexts(selective_checkpoint_policy)


def checkpoint_kwargs(mode: str, extra: dict | None = None) -> dict:
    """Keywords for ``torch.utils.checkpoint.checkpoint`` in ``mode`` (``extra`` first, non-reentrant)."""
    if mode not in CHECKPOINTING_MODES:
        raise ValueError(f"activation checkpointing mode must be one of {list(CHECKPOINTING_MODES)}, got {mode!r}")
    kwargs = {"use_reentrant": False, **(extra or {})}
    if mode == "selective":
        kwargs["context_fn"] = selective_context
    return kwargs


def selective_checkpoint(function: Callable, *args: Any) -> Any:
    """``function(*args)`` under selective checkpointing (matmul outputs kept, the rest recomputed)."""
    return torch.utils.checkpoint.checkpoint(function, *args, use_reentrant=False, context_fn=selective_context)


__all__ = ["CHECKPOINTING_MODES", "checkpoint_kwargs", "selective_checkpoint", "selective_checkpoint_policy"]
