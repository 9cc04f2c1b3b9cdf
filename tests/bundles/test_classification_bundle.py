"""radfm_classification/train.json: 2D multi-class from a random encoder, 3D multi-label from a RadFM checkpoint."""

from __future__ import annotations

import json
import math

import torch

from .conftest import CLASSIFICATION_BUNDLE, SMALL_GRID, run_bundle

CONFIG = CLASSIFICATION_BUNDLE / "configs" / "train.json"
META = CLASSIFICATION_BUNDLE / "configs" / "metadata.json"


def _items(phantom_data, tmp_path, dims, label):
    cases = [c for c in phantom_data["cases"] if c["dims"] == dims]
    items = [{"image": str(phantom_data["dir"] / c["image"]), "label": label(c)} for c in cases]
    path = tmp_path / f"items_{dims}d.json"
    path.write_text(json.dumps(items))
    return path, items


def _metrics(workflow):
    return workflow.parser.get_parsed_content("validate#evaluator").state.metrics


def test_multiclass_2d_random_encoder(phantom_data, tmp_path):
    items, rows = _items(phantom_data, tmp_path, 2, lambda c: ["X-ray", "ultrasound"].index(c["modality"]))
    assert {r["label"] for r in rows} == {0, 1}
    workflow = run_bundle(CONFIG, META, bundle_root=str(tmp_path), train_items=str(items), val_items=str(items),
                          num_classes=2, multi_label=False, image_grid=SMALL_GRID, ckpt_dir=str(tmp_path / "models"), epochs=2,
                          batch_size=4, learning_rate=1e-3)
    metrics = _metrics(workflow)
    assert 0.0 <= metrics["val_macro_auc"] <= 1.0 and 0.0 <= metrics["val_macro_f1"] <= 1.0
    # the best model is saved where MONAI looks for it, with its grid beside it
    state = torch.load(tmp_path / "models" / "model.pt", weights_only=True)
    assert state["head.weight"].shape[0] == 2
    assert json.loads((tmp_path / "models" / "preprocess.json").read_text())["size_2d"] == [64, 64]


def test_multilabel_3d_from_radfm_checkpoint(phantom_data, tmp_path):
    from radfm.engines.build import load_model

    radfm_dir = tmp_path / "radfm"
    source = load_model("tiny", seed=3)
    source.save_pretrained(radfm_dir)
    items, rows = _items(phantom_data, tmp_path, 3, lambda c: [["mass", "cyst"].index(d) for d in c["diseases"]])
    workflow = run_bundle(CONFIG, META, bundle_root=str(tmp_path), train_items=str(items), val_items=str(items),
                          num_classes=2, multi_label=True, radfm_dir=str(radfm_dir), image_grid=SMALL_GRID, ckpt_dir=str(tmp_path / "models"),
                          epochs=1, batch_size=4, learning_rate=0.0)
    network = workflow.parser.get_parsed_content("network")
    # lr 0: the encoder must still be exactly the checkpoint's
    for name, value in source.vision_encoder.state_dict().items():
        assert torch.equal(value, network.vision_encoder.state_dict()[name]), name
    metrics = _metrics(workflow)
    assert math.isnan(metrics["val_macro_auc"]) or 0.0 <= metrics["val_macro_auc"] <= 1.0
    assert 0.0 <= metrics["val_macro_f1"] <= 1.0
