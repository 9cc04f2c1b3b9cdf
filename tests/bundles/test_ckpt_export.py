"""``python -m monai.bundle ckpt_export`` on radfm_classification: a traced TorchScript that matches eager.

A tiny 2D classifier is trained for one epoch with the bundle's own train.json (its
best model, ``models/model.pt``, is what users export), exported in a subprocess exactly as docs/README.md
says, reloaded with ``torch.jit.load`` and compared with the eager model on fresh inputs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch

from .conftest import CLASSIFICATION_BUNDLE, SMALL_GRID, run_bundle

CONFIG = CLASSIFICATION_BUNDLE / "configs" / "train.json"
META = CLASSIFICATION_BUNDLE / "configs" / "metadata.json"
NUM_CLASSES = 2


def _train_tiny_checkpoint(phantom_data, tmp_path):
    """One epoch of the bundle on the 2D phantoms → ``models/model.pt`` (the best validation AUC)."""
    cases = [c for c in phantom_data["cases"] if c["dims"] == 2]
    items = [{"image": str(phantom_data["dir"] / c["image"]), "label": ["X-ray", "ultrasound"].index(c["modality"])}
             for c in cases]
    items_path = tmp_path / "items_2d.json"
    items_path.write_text(json.dumps(items))
    run_bundle(CONFIG, META, bundle_root=str(tmp_path), train_items=str(items_path), val_items=str(items_path),
               num_classes=NUM_CLASSES, multi_label=False, image_grid=SMALL_GRID, epochs=1, batch_size=4,
               learning_rate=1e-2, ckpt_dir=str(tmp_path / "models"))
    checkpoint = tmp_path / "models" / "model.pt"
    assert checkpoint.is_file()
    return checkpoint


def test_ckpt_export_traced_matches_eager(phantom_data, tmp_path):
    from radfm.engines.classification import load_classifier

    checkpoint = _train_tiny_checkpoint(phantom_data, tmp_path)
    exported = tmp_path / "models" / "model.ts"
    command = [sys.executable, "-m", "monai.bundle", "ckpt_export", "network_def",
               "--config_file", str(CONFIG), "--meta_file", str(META), "--bundle_root", str(tmp_path),
               "--ckpt_file", str(checkpoint), "--filepath", str(exported),
               "--use_trace", "True", "--input_shape", "[1,3,64,64,4]", "--num_classes", str(NUM_CLASSES)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert exported.is_file()

    extra = {"metadata.json": "", "train.json": ""}
    traced = torch.jit.load(str(exported), map_location="cpu", _extra_files=extra).eval()
    assert json.loads(extra["metadata.json"])["version"] == json.loads(META.read_text())["version"]
    assert "network_def" in json.loads(extra["train.json"])

    # eager reference: the bundle's classifier with the trained weights (not the export's own copy)
    eager = load_classifier(NUM_CLASSES, preset="tiny", seed=0)
    untrained = {k: v.clone() for k, v in eager.state_dict().items()}
    eager.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    eager.eval()

    generator = torch.Generator().manual_seed(1)
    image_2d = torch.rand(1, 3, 64, 64, 4, generator=generator)  # same shape as the trace, new values
    with torch.no_grad():
        expected = eager(image_2d)
        got = traced(image_2d)
        assert got.shape == (1, NUM_CLASSES)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)

        # the export really carries the trained weights, not the seed-0 initialisation
        fresh = load_classifier(NUM_CLASSES, preset="tiny", seed=0).eval()
        fresh.load_state_dict(untrained)
        assert (fresh(image_2d) - expected).abs().max() > 1e-4

        # the trace records the grid sizes (aten::size), so one file serves other batch sizes and grids;
        # docs/README.md states this — check it on a batch of 2 on a larger 2D grid and on a 3D volume
        for shape in [(2, 3, 96, 64, 4), (1, 3, 64, 64, 8)]:
            images = torch.rand(*shape, generator=generator)
            torch.testing.assert_close(traced(images), eager(images), atol=1e-5, rtol=0)
