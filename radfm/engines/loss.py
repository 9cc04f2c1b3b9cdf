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


def loss_positions(loss_weights: torch.Tensor) -> torch.Tensor:
    """``[B, L]`` bool: the positions whose logits the loss reads (position ``t`` predicts token ``t+1``).

    True where the next token's weight is non-zero. Pass it to a transformers causal LM as
    ``logits_to_keep`` and the LM head (``hidden × V``) runs on these rows only: image tokens,
    instruction tokens and padding never need the vocabulary projection.
    """
    keep = torch.zeros(loss_weights.shape, dtype=torch.bool, device=loss_weights.device)
    keep[:, :-1] = loss_weights[:, 1:] != 0
    return keep


def weighted_token_ce_sums(
    logits: torch.Tensor, input_ids: torch.Tensor, loss_weights: torch.Tensor, *, selected: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(Σ w·CE, Σ w)`` of the shifted next-token cross-entropy.

    logits: ``[B, L, V]`` (every position), or with ``selected=True`` ``[N, V]``: only the ``N``
    positions of :func:`loss_positions` in row-major order, as ``logits_to_keep=loss_positions(w)``
    returns them (positions of weight 0 contribute nothing, so the sums are the same).
    input_ids, loss_weights: ``[B, L]``. Labels at or beyond the LM head width ``V`` (image tokens) must have weight 0; they
    are clamped so that CE stays finite. Returned separately so that callers can normalise across
    devices or accumulation steps.
    """
    expected_dims = 2 if selected else 3
    if (
        logits.dim() != expected_dims
        or (not selected and input_ids.shape != logits.shape[:2])
        or loss_weights.shape != input_ids.shape
        or input_ids.dim() != 2
    ):
        raise ValueError(
            f"expected logits {'[N, V]' if selected else '[B, L, V]'} and input_ids/loss_weights [B, L]; "
            f"got {tuple(logits.shape)}, {tuple(input_ids.shape)}, {tuple(loss_weights.shape)}"
        )
    vocab = logits.shape[-1]
    labels = input_ids[:, 1:]
    weights = loss_weights[:, 1:].to(torch.float32)
    if bool(((labels >= vocab) & (weights != 0)).any()):
        raise ValueError(f"tokens with id >= {vocab} (image tokens) cannot carry a loss weight")
    if selected:
        keep = weights != 0
        if logits.shape[0] != int(keep.sum()):
            raise ValueError(
                f"logits [N, V] hold {logits.shape[0]} positions but {int(keep.sum())} tokens carry a loss weight; "
                "compute them with logits_to_keep=loss_positions(loss_weights)"
            )
        labels, weights, scores = labels[keep], weights[keep], logits
    else:
        labels, weights, scores = labels.reshape(-1), weights.reshape(-1), logits[:, :-1].reshape(-1, vocab)
    labels = labels.clamp(max=vocab - 1)
    # CE in float32 even under bf16 autocast: the log-softmax over V is where precision matters
    ce = F.cross_entropy(scores.float(), labels, reduction="none")
    return (ce * weights).sum(), weights.sum()


def weighted_next_token_loss(
    logits: torch.Tensor, input_ids: torch.Tensor, loss_weights: torch.Tensor, *, selected: bool = False
) -> torch.Tensor:
    """Σ w·CE / Σ w (scalar); 0 with no gradient signal when every weight is 0 (``selected``: as above)."""
    weighted_sum, weight_total = weighted_token_ce_sums(logits, input_ids, loss_weights, selected=selected)
    return weighted_sum / weight_total.clamp(min=1e-8)


def classification_loss(multi_label: bool) -> nn.Module:
    """Cross-entropy (multi-class) or binary cross-entropy on logits (multi-label)."""
    return nn.BCEWithLogitsLoss() if multi_label else nn.CrossEntropyLoss()
