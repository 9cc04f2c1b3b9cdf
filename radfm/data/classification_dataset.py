"""Classification data: ``{"image": path, "label": ...}`` items for ``bundles/radfm_classification``.

``multi_label=False``: one class per image (a class index). ``multi_label=True``: any subset
of the classes (a 0/1 vector).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch


class ClassificationDataset(torch.utils.data.Dataset):
    """Items ``{"image": path, "label": int | list[int]}`` → ``{"image": [3,H,W,D], "label": ...}``.

    Multi-class labels become a class index (LongTensor); multi-label ones a 0/1 float vector
    of length ``num_classes``. All images of one dataset must preprocess to the same shape
    (use one bundle run per dimensionality: 2D or 3D). ``transform`` (a MONAI dictionary
    transform on ``{"image": path}``, the bundle's preprocessing) takes precedence over
    ``image_loader``; ``scan_dataset`` as in :class:`radfm.data.loaders.ScanStore`.
    """

    def __init__(self, items: str | os.PathLike | Sequence[dict], num_classes: int, *, multi_label: bool = False,
                 image_loader: Any = None, base_dir: str | os.PathLike | None = None, cache: bool = True,
                 transform: Any = None, scan_dataset: Any = None) -> None:
        from radfm.data.loaders import ScanStore, default_image_loader

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
