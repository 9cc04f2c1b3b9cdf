"""Classification finetunes: the RadFM vision encoder + mean pooling + a linear head.

As in the paper's task-specific finetunes, the 3D ViT (from a RadFM checkpoint, or random)
initialises 2D/3D classifiers. The bundle ``bundles/radfm_classification`` trains it with
``radfm.engines.loss.classification_loss`` and scores it with ``radfm.metrics.ignite_metrics.MacroAUCF1``.
"""

from __future__ import annotations

import copy
import os
from typing import Any

import torch
from torch import nn


class RadFMClassifier(nn.Module):
    """``[B, 3, H, W, D]`` → logits ``[B, num_classes]`` (mean over the ViT's patch tokens)."""

    def __init__(self, vision_encoder: nn.Module, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        if num_classes < 2 and num_classes != 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.vision_encoder = vision_encoder
        dim = vision_encoder.config.dim
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        tokens = self.vision_encoder(images)  # [B, T, dim]
        return self.head(self.dropout(self.norm(tokens.mean(dim=1))))

    def __prepare_scriptable__(self) -> RadFMClassifier:
        """``torch.jit.script`` hook (what ``monai.bundle ckpt_export`` runs by default): a copy whose
        encoder is traced (the ViT's shape checks and einops patching are Python), the head scripted.

        The trace records the grid sizes as ``aten::size`` operations, so the exported module takes
        other batch sizes and grids too (tested against eager).
        """
        if isinstance(self.vision_encoder, torch.jit.ScriptModule):
            return self
        config = self.vision_encoder.config
        example = torch.rand(1, config.channels, 2 * config.patch_size, 2 * config.patch_size,
                             2 * config.frame_patch_size, device=self.head.weight.device, dtype=self.head.weight.dtype)
        scriptable = copy.copy(self)
        scriptable._modules = dict(self._modules)
        encoder = copy.deepcopy(self.vision_encoder).eval()
        with torch.no_grad():
            scriptable._modules["vision_encoder"] = torch.jit.trace(encoder, example, check_trace=False)
        return scriptable


def load_classifier(
    num_classes: int,
    *,
    radfm_dir: str | os.PathLike | None = None,
    preset: str = "tiny",
    vision_overrides: dict[str, Any] | None = None,
    seed: int = 0,
) -> RadFMClassifier:
    """Classifier whose encoder comes from ``radfm_dir`` (a RadFM model folder) or is random."""
    from radfm.model.config import RadFMConfig, VisionConfig
    from radfm.model.vision import VisionEncoder3D

    torch.manual_seed(seed)
    if radfm_dir is not None:
        from radfm.model.loading import load

        encoder = copy.deepcopy(load(radfm_dir, device="cpu", dtype="float32").model.vision_encoder)
    else:
        values = RadFMConfig.preset(preset).vision_config.sizes()
        values.update(vision_overrides or {})
        encoder = VisionEncoder3D(VisionConfig(**values))
    return RadFMClassifier(encoder, num_classes)
