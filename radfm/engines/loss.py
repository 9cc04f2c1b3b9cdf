"""The paper's weighted next-token loss (eq. 2-4): Σ w·CE / Σ w over shifted tokens.

Token ``t`` is predicted from positions ``< t``: logits at ``t-1`` are scored against the
label at ``t`` with the weight of ``t``. Image tokens, instruction tokens and padding carry
weight 0; response text 1; medical terms 3 (the weights come from the data pipeline).

:func:`classification_loss` is the loss of the classification finetunes
(``bundles/radfm_classification``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def weighted_token_ce_sums(
    logits: torch.Tensor, input_ids: torch.Tensor, loss_weights: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(Σ w·CE, Σ w)`` of the shifted next-token cross-entropy.

    logits: ``[B, L, V]``; input_ids, loss_weights: ``[B, L]``. Labels at or beyond the LM
    head width ``V`` (image tokens) must have weight 0; they are clamped so that CE stays finite.
    Returned separately so that callers can normalise across devices or accumulation steps.
    """
    if logits.dim() != 3 or input_ids.shape != logits.shape[:2] or loss_weights.shape != input_ids.shape:
        raise ValueError(
            f"expected logits [B, L, V] and input_ids/loss_weights [B, L]; got {tuple(logits.shape)}, "
            f"{tuple(input_ids.shape)}, {tuple(loss_weights.shape)}"
        )
    vocab = logits.shape[-1]
    labels = input_ids[:, 1:]
    weights = loss_weights[:, 1:].to(torch.float32)
    if bool(((labels >= vocab) & (weights != 0)).any()):
        raise ValueError(f"tokens with id >= {vocab} (image tokens) cannot carry a loss weight")
    labels = labels.clamp(max=vocab - 1)
    # CE in float32 even under bf16 autocast: the log-softmax over V is where precision matters
    ce = F.cross_entropy(
        logits[:, :-1].reshape(-1, vocab).float(), labels.reshape(-1), reduction="none"
    ).view_as(weights)
    return (ce * weights).sum(), weights.sum()


def weighted_next_token_loss(
    logits: torch.Tensor, input_ids: torch.Tensor, loss_weights: torch.Tensor
) -> torch.Tensor:
    """Σ w·CE / Σ w (scalar); 0 with no gradient signal when every weight is 0."""
    weighted_sum, weight_total = weighted_token_ce_sums(logits, input_ids, loss_weights)
    return weighted_sum / weight_total.clamp(min=1e-8)


def classification_loss(multi_label: bool) -> nn.Module:
    """Cross-entropy (multi-class) or binary cross-entropy on logits (multi-label)."""
    return nn.BCEWithLogitsLoss() if multi_label else nn.CrossEntropyLoss()
