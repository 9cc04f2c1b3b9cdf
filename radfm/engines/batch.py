"""Moving a RadFM training batch to a device.

A batch is a dict: ``input_ids`` LongTensor ``[B, L]``, ``attention_mask`` ``[B, L]``,
``loss_weights`` FloatTensor ``[B, L]`` and ``images``: one list of ``[3, H, W, D]`` tensors
per sample (any number per sample; 2D scans arrive as depth-4 volumes).
"""

from __future__ import annotations

from typing import Any

import torch

REQUIRED_KEYS = ("input_ids", "attention_mask", "loss_weights", "images")


def prepare_radfm_batch(
    batchdata: dict[str, Any], device: str | torch.device | None = None, non_blocking: bool = False, **kwargs: Any
) -> tuple[dict[str, Any], torch.Tensor, tuple, dict]:
    """``(model inputs, loss weights, (), {})`` on ``device`` (MONAI ``prepare_batch`` signature)."""
    missing = [k for k in REQUIRED_KEYS if k not in batchdata]
    if missing:
        raise KeyError(f"training batch lacks {missing}; a RadFM batch needs {list(REQUIRED_KEYS)}")
    to = {"device": device, "non_blocking": non_blocking}
    inputs = {
        "input_ids": batchdata["input_ids"].to(**to),
        "attention_mask": batchdata["attention_mask"].to(**to),
        "images": [[torch.as_tensor(img).to(**to) for img in sample] for sample in batchdata["images"]],
    }
    return inputs, batchdata["loss_weights"].to(**to), (), {}
