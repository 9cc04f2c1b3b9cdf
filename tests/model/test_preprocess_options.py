"""A model folder's preprocess.json sets the grid of ``radfm.load``'s preprocessing."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from monai.transforms import Compose

from radfm.engines.grid import save_grid
from radfm.model.loading import load, preprocess_options
from radfm.model.tokenizer import encode_prompt

DEMO_RECORD = {"loader": "radfm.transforms.preprocess_scan", "size_2d": [64, 64], "size_3d": [64, 64], "max_depth": 8}


@pytest.fixture(scope="module")
def saved_tiny(tmp_path_factory):
    """A saved tiny model folder (weights + processor at the standard grid)."""
    model, _, _ = load("tiny")
    folder = tmp_path_factory.mktemp("tiny_model")
    model.save_pretrained(folder)
    return folder


@pytest.fixture()
def volume_path(tmp_path):
    path = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((40, 30, 30), dtype=np.float32), np.eye(4)), path)
    return path


def test_preprocess_options_reads_the_demo_record(tmp_path):
    assert preprocess_options(tmp_path) == {}  # no file: the standard grid
    (tmp_path / "preprocess.json").write_text(json.dumps({**DEMO_RECORD, "window": [-100, 300]}))
    assert preprocess_options(tmp_path) == {"size_2d": (64, 64), "size_3d": (64, 64), "max_depth": 8,
                                            "window": (-100, 300)}


@pytest.mark.parametrize("record, message", [
    ({"size_2d": [64, 64], "resolution": 3}, r"unknown preprocessing option\(s\) \['resolution'\]"),
    ({"loader": "os.system"}, "unknown loader 'os.system'"),
    ({"size_3d": [60, 64]}, r"preprocess.json: size_3d=\[60, 64\].*multiple of 32"),
    ({"max_depth": 10}, r"preprocess.json: max_depth=10"),
    ([64, 64], "expected a JSON object"),
])
def test_bad_preprocess_json_is_a_clear_error(tmp_path, record, message):
    (tmp_path / "preprocess.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match=message):
        preprocess_options(tmp_path)


def test_unreadable_preprocess_json(tmp_path):
    (tmp_path / "preprocess.json").write_text("{size_2d: 64")
    with pytest.raises(ValueError, match="preprocess.json: not readable JSON"):
        preprocess_options(tmp_path)


def test_load_preprocessing_uses_the_model_grid(saved_tiny, volume_path, tmp_path):
    loaded = load(saved_tiny)
    assert isinstance(loaded.preprocessing, Compose)
    assert tuple(loaded.preprocessing(volume_path).shape) == (3, 256, 256, 32)  # saved with the standard grid

    processor_file = saved_tiny / "processor_config.json"
    saved = processor_file.read_text()
    save_grid(saved_tiny, {k: DEMO_RECORD[k] for k in ("size_2d", "size_3d", "max_depth")})
    try:
        loaded = load(saved_tiny)
        model, tokenizer, preprocessing = loaded
        assert {k: loaded.preprocess_options[k] for k in ("size_2d", "size_3d", "max_depth")} == \
            {"size_2d": (64, 64), "size_3d": (64, 64), "max_depth": 8}
        image = preprocessing(volume_path)
        assert tuple(image.shape) == (3, 64, 64, 8)
        torch.testing.assert_close(loaded.preprocess(volume_path), image)  # the same steps, per-scan entry point
        assert tuple(loaded.preprocess(volume_path, max_depth=16).shape) == (3, 64, 64, 16)  # call-time override
        # the model takes the small grid as is
        ids = encode_prompt(tokenizer, "<image> what modality?", base_vocab_size=model.config.base_vocab_size)
        with torch.no_grad():
            out = model(input_ids=torch.tensor([ids]), images=[[image.as_tensor()]])
        assert out.logits.shape[:2] == (1, len(ids))
        windowed = load(saved_tiny, window="lung")
        assert windowed.preprocess_options["window"] == "lung" and windowed.preprocess_options["max_depth"] == 8

        spec = json.loads(processor_file.read_text())
        spec["image_processor"]["typo"] = 1
        processor_file.write_text(json.dumps(spec))
        with pytest.raises(ValueError, match="typo"):
            load(saved_tiny)
    finally:
        processor_file.write_text(saved)


def test_weights_false_builds_the_architecture_only(saved_tiny):
    built = load(saved_tiny, weights=False).model
    stored = load(saved_tiny).model
    assert {n: p.shape for n, p in built.state_dict().items()} == {n: p.shape for n, p in stored.state_dict().items()}
    assert built.tokenizer.get_vocab() == stored.tokenizer.get_vocab()
    assert not torch.equal(built.projection.weight, stored.projection.weight)  # fresh weights, for a CheckpointLoader
