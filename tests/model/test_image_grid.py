"""The image processor owns the grid: it validates it, reads and records it in a model folder (the processor's
``processor_config.json``, or a classifier's ``preprocess.json``), checks configs and scans against it, and
``radfm.load``'s processor preprocesses at it."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from radfm.model.loading import load
from radfm.model.processing import GridMismatchError, RadFMImageProcessor, encode_prompt

DEMO_RECORD = {"loader": "radfm.transforms.preprocess_scan", "size_2d": [64, 64], "size_3d": [64, 64], "max_depth": 8}
SMALL = {"size_2d": [128, 128], "size_3d": [128, 128], "max_depth": 8}
STANDARD = {"size_2d": [512, 512], "size_3d": [256, 256], "max_depth": 64}


@pytest.fixture(scope="module")
def saved_tiny(tmp_path_factory):
    """A saved tiny model folder (weights + processor at the standard grid)."""
    model, processor = load("tiny")
    folder = tmp_path_factory.mktemp("tiny_model")
    model.save_pretrained(folder, processor=processor)
    return folder


@pytest.fixture()
def volume_path(tmp_path):
    path = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((40, 30, 30), dtype=np.float32), np.eye(4)), path)
    return path


def test_grid_is_validated_saved_and_names_both_grids(tmp_path):
    assert RadFMImageProcessor.for_model("tiny").grid == RadFMImageProcessor().grid == STANDARD
    with pytest.raises(ValueError, match="image_grid.*size_2d"):
        RadFMImageProcessor.at_grid({"size_2d": [100, 100]})
    with pytest.raises(ValueError, match="unknown key"):
        RadFMImageProcessor.at_grid({"size": [64, 64]})
    small = RadFMImageProcessor.at_grid(SMALL)
    assert small.save_grid(tmp_path).name == "preprocess.json"  # no processor file: a classifier's models/ folder
    assert RadFMImageProcessor.from_model_dir(tmp_path).grid == RadFMImageProcessor.for_model(tmp_path).grid == SMALL
    with pytest.raises(GridMismatchError, match=r"trained at 2D 128x128.*image_grid is 2D 512x512"):
        small.check_same_grid(STANDARD)
    small.check_same_grid(SMALL)
    small.check_same_grid(None)
    small.check_images([torch.zeros(3, 128, 128, 4), torch.zeros(3, 128, 128, 8)])
    with pytest.raises(GridMismatchError, match=r"x.png: preprocessed to \[3, 512, 512, 4\].*2D 128x128"):
        small.check_images([torch.zeros(3, 512, 512, 4)], names=["x.png"])
    with pytest.raises(GridMismatchError, match="depth 12"):
        small.check_images([torch.zeros(3, 128, 128, 12)])


def test_a_folder_recording_no_grid_is_refused(tmp_path):
    """No silent default grid: a folder without processor_config.json or preprocess.json names both files."""
    with pytest.raises(FileNotFoundError, match=r"processor_config.json is missing \(and no preprocess.json\)"):
        RadFMImageProcessor.from_model_dir(tmp_path)


def test_the_classifier_record_keeps_its_other_options(tmp_path):
    (tmp_path / "preprocess.json").write_text(json.dumps({**DEMO_RECORD, "window": [-100, 300]}))
    image_processor = RadFMImageProcessor.from_model_dir(tmp_path)
    assert image_processor.options == {"size_2d": (64, 64), "size_3d": (64, 64), "max_depth": 8, "window": (-100, 300),
                                       "nonfinite": "error", "axcodes": "RAS", "contiguous": False}
    RadFMImageProcessor.at_grid(SMALL).save_grid(tmp_path)
    recorded = json.loads((tmp_path / "preprocess.json").read_text())
    assert recorded == {**DEMO_RECORD, **SMALL, "window": [-100, 300]}


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
        RadFMImageProcessor.from_model_dir(tmp_path)


def test_unreadable_preprocess_json(tmp_path):
    (tmp_path / "preprocess.json").write_text("{size_2d: 64")
    with pytest.raises(ValueError, match="preprocess.json: not readable JSON"):
        RadFMImageProcessor.from_model_dir(tmp_path)


def test_load_gives_a_processor_at_the_model_grid(saved_tiny, volume_path):
    _, processor = load(saved_tiny)
    assert tuple(processor.image_processor.process_one(volume_path).shape) == (3, 256, 256, 32)  # the standard grid

    processor_file = saved_tiny / "processor_config.json"
    saved = processor_file.read_text()
    path = RadFMImageProcessor.at_grid({k: DEMO_RECORD[k] for k in ("size_2d", "size_3d", "max_depth")}).save_grid(saved_tiny)
    assert path == processor_file
    try:
        model, processor = load(saved_tiny)
        assert processor.image_processor.grid == {"size_2d": [64, 64], "size_3d": [64, 64], "max_depth": 8}
        image = processor.image_processor.process_one(volume_path)
        assert tuple(image.shape) == (3, 64, 64, 8)
        torch.testing.assert_close(processor.image_processor.transforms()(volume_path), image)  # the MONAI Compose
        assert tuple(processor.image_processor.process_one(volume_path, max_depth=16).shape) == (3, 64, 64, 16)
        # the model takes the small grid as is
        ids = encode_prompt(processor.tokenizer, "<image> what modality?", base_vocab_size=model.config.base_vocab_size)
        with torch.no_grad():
            out = model(input_ids=torch.tensor([ids]), images=[[image.as_tensor()]])
        assert out.logits.shape[:2] == (1, len(ids))

        spec = json.loads(processor_file.read_text())
        spec["image_processor"]["typo"] = 1
        processor_file.write_text(json.dumps(spec))
        with pytest.raises(ValueError, match="typo"):
            load(saved_tiny)
    finally:
        processor_file.write_text(saved)


def test_weights_false_builds_the_architecture_only(saved_tiny):
    built, built_processor = load(saved_tiny, weights=False)
    stored, stored_processor = load(saved_tiny)
    assert {n: p.shape for n, p in built.state_dict().items()} == {n: p.shape for n, p in stored.state_dict().items()}
    assert built_processor.tokenizer.get_vocab() == stored_processor.tokenizer.get_vocab()
    assert not torch.equal(built.projection.weight, stored.projection.weight)  # fresh weights, for a CheckpointLoader
