"""``radfm.data.classification_dataset``: labelled items for the classification bundle."""

from __future__ import annotations

import json

import pytest
import torch


def _constant_loader(path: str) -> torch.Tensor:
    return torch.zeros(3, 8, 8, 4)


def test_labels_become_an_index_or_a_multi_hot_vector(tmp_path):
    from radfm.data.classification_dataset import ClassificationDataset

    (tmp_path / "items.json").write_text(json.dumps([{"image": "a.png", "label": 2}, {"image": "b.png", "label": 0}]))
    single = ClassificationDataset(str(tmp_path / "items.json"), 3, image_loader=_constant_loader)
    assert len(single) == 2 and single[0]["label"].item() == 2 and single[0]["image"].shape == (3, 8, 8, 4)
    multi = ClassificationDataset([{"image": "a.png", "label": [0, 2]}], 3, multi_label=True,
                                  image_loader=_constant_loader, base_dir=tmp_path)
    assert multi[0]["label"].tolist() == [1.0, 0.0, 1.0]


def test_bad_items_are_named():
    from radfm.data.classification_dataset import ClassificationDataset

    with pytest.raises(ValueError, match="classification item 0: needs 'image' and 'label'"):
        ClassificationDataset([{"image": "a.png"}], 2, image_loader=_constant_loader)
    with pytest.raises(ValueError, match="item 0: multi-class label must be an int in 0..1"):
        ClassificationDataset([{"image": "a.png", "label": 5}], 2, image_loader=_constant_loader)[0]
    with pytest.raises(ValueError, match="item 0: label 4 outside 0..2"):
        ClassificationDataset([{"image": "a.png", "label": [4]}], 3, multi_label=True, image_loader=_constant_loader)[0]


def test_classification_items_resolve_against_the_json_folder(tmp_path):
    from radfm.data.classification_dataset import classification_items

    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "items.json").write_text(json.dumps([{"image": "a.png"}]))
    assert classification_items(str(tmp_path / "items.json")) == [{"image": str(tmp_path / "a.png")}]
    with pytest.raises(FileNotFoundError, match="item 0: image file not found"):
        classification_items([{"image": "missing.png"}], base_dir=tmp_path)
