"""Classification finetunes: the RadFM vision encoder + mean pooling + a linear head.

As in the paper's task-specific finetunes, the 3D ViT (from a RadFM checkpoint, or random)
initialises 2D/3D classifiers; the metrics are macro AUC and macro F1. ``multi_label=False``:
one class per image, cross-entropy, softmax scores. ``multi_label=True``: any subset of the
classes, binary cross-entropy, sigmoid scores thresholded at 0.5 for F1.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.metrics import Metric
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
    """Classifier whose encoder comes from ``radfm_dir`` (a ``save_pretrained`` folder) or is random."""
    from radfm.model.config import RadFMConfig, VisionConfig
    from radfm.model.vision import VisionEncoder3D

    torch.manual_seed(seed)
    if radfm_dir is not None:
        from radfm.model.radfm import RadFM

        encoder = copy.deepcopy(RadFM.from_pretrained(radfm_dir).vision_encoder)
    else:
        values = RadFMConfig.preset(preset).to_dict()["vision"]
        values.update(vision_overrides or {})
        encoder = VisionEncoder3D(VisionConfig(**values))
    return RadFMClassifier(encoder, num_classes)


class ClassificationDataset(torch.utils.data.Dataset):
    """Items ``{"image": path, "label": int | list[int]}`` → ``{"image": [3,H,W,D], "label": ...}``.

    Multi-class labels become a class index (LongTensor); multi-label ones a 0/1 float vector
    of length ``num_classes``. All images of one dataset must preprocess to the same shape
    (use one bundle run per dimensionality: 2D or 3D). ``transform`` (a MONAI dictionary
    transform on ``{"image": path}``, the bundle's preprocessing) takes precedence over
    ``image_loader``; ``scan_dataset`` as in :class:`radfm.engines.data.ScanStore`.
    """

    def __init__(self, items: str | os.PathLike | Sequence[dict], num_classes: int, *, multi_label: bool = False,
                 image_loader: Any = None, base_dir: str | os.PathLike | None = None, cache: bool = True,
                 transform: Any = None, scan_dataset: Any = None) -> None:
        from radfm.engines.data import ScanStore, default_image_loader

        if isinstance(items, (str, os.PathLike)):
            path = Path(items)
            base_dir = base_dir if base_dir is not None else path.parent
            items = json.loads(path.read_text(encoding="utf-8"))
        self.items = list(items)
        for index, item in enumerate(self.items):
            if "image" not in item or "label" not in item:
                raise ValueError(f"classification item {index}: needs 'image' and 'label', got {sorted(item)}")
        self.num_classes = num_classes
        self.multi_label = multi_label
        self.base_dir = Path(base_dir) if base_dir is not None else Path.cwd()
        if transform is not None:  # the bundle's preprocessing, through MONAI's (Persistent|Cache)Dataset
            image_loader = ScanStore([str(self._path(i)) for i in range(len(self.items))], transform, scan_dataset)
        self.image_loader = image_loader or default_image_loader()
        self.cache: dict[int, torch.Tensor] | None = {} if cache else None

    def _path(self, index: int) -> Path:
        path = Path(self.items[index]["image"])
        return path if path.is_absolute() else self.base_dir / path

    def __len__(self) -> int:
        return len(self.items)

    def _label(self, index: int) -> torch.Tensor:
        label = self.items[index]["label"]
        if self.multi_label:
            vector = torch.zeros(self.num_classes)
            positives = [label] if isinstance(label, int) else list(label)
            for c in positives:
                if not 0 <= int(c) < self.num_classes:
                    raise ValueError(f"item {index}: label {c} outside 0..{self.num_classes - 1}")
                vector[int(c)] = 1.0
            return vector
        if not isinstance(label, int) or not 0 <= label < self.num_classes:
            raise ValueError(f"item {index}: multi-class label must be an int in 0..{self.num_classes - 1}, got {label!r}")
        return torch.tensor(label)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if self.cache is not None and index in self.cache:
            image = self.cache[index]
        else:
            image = self.image_loader(str(self._path(index)))
            if self.cache is not None:
                self.cache[index] = image
        return {"image": image, "label": self._label(index)}


def classification_loss(multi_label: bool) -> nn.Module:
    """Cross-entropy (multi-class) or binary cross-entropy on logits (multi-label)."""
    return nn.BCEWithLogitsLoss() if multi_label else nn.CrossEntropyLoss()


def scores(logits: torch.Tensor, multi_label: bool) -> torch.Tensor:
    """Class probabilities ``[B, C]``: sigmoid (multi-label) or softmax (multi-class)."""
    return torch.sigmoid(logits) if multi_label else torch.softmax(logits, dim=-1)


def macro_auc_f1(labels: np.ndarray, probabilities: np.ndarray, multi_label: bool) -> tuple[float, float]:
    """(macro AUC, macro F1). Multi-class: ``radfm.metrics.classification``; multi-label: per class."""
    if multi_label:
        from sklearn.metrics import f1_score, roc_auc_score

        present = [c for c in range(labels.shape[1]) if 0 < labels[:, c].sum() < len(labels)]
        auc = float(roc_auc_score(labels[:, present], probabilities[:, present], average="macro")) if present else float("nan")
        f1 = float(f1_score(labels, (probabilities > 0.5).astype(int), average="macro", zero_division=0))
        return auc, f1
    from radfm.metrics.classification import macro_auc, macro_f1

    try:
        auc = macro_auc(labels, probabilities)
    except ValueError:  # a class missing from the validation labels
        auc = float("nan")
    return auc, macro_f1(labels, probabilities)


class MacroAUCF1(Metric):
    """Ignite metric over a whole validation epoch: ``"auc"`` or ``"f1"`` (macro)."""

    def __init__(self, kind: str = "auc", multi_label: bool = False) -> None:
        if kind not in ("auc", "f1"):
            raise ValueError(f"kind must be 'auc' or 'f1', got {kind!r}")
        self.kind = kind
        self.multi_label = multi_label
        super().__init__(output_transform=lambda out: (out["pred"], out["label"]))

    def reset(self) -> None:
        self._probabilities: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []

    def update(self, output: tuple[torch.Tensor, torch.Tensor]) -> None:
        logits, labels = output
        self._probabilities.append(scores(logits.detach().float(), self.multi_label).cpu().numpy())
        self._labels.append(labels.detach().cpu().numpy())

    def compute(self) -> float:
        auc, f1 = macro_auc_f1(np.concatenate(self._labels), np.concatenate(self._probabilities), self.multi_label)
        return auc if self.kind == "auc" else f1


def classification_items(items: str | os.PathLike | Sequence[dict], base_dir: str | os.PathLike | None = None
                         ) -> list[dict[str, str]]:
    """``[{"image": absolute path}]`` from a JSON list of ``{"image": path, ...}`` (paths relative to the JSON file).

    The data of ``inference.json``; a missing file raises naming the item.
    """
    if isinstance(items, (str, os.PathLike)):
        path = Path(items)
        base_dir = base_dir if base_dir is not None else path.parent
        items = json.loads(path.read_text(encoding="utf-8"))
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    out = []
    for index, item in enumerate(items):
        if not isinstance(item, dict) or "image" not in item:
            raise ValueError(f"item {index}: expected an object with key 'image', got {item!r:.200}")
        image = Path(item["image"]) if Path(item["image"]).is_absolute() else base / item["image"]
        if not image.exists():
            raise FileNotFoundError(f"item {index}: image file not found: {image}")
        out.append({"image": str(image)})
    return out
