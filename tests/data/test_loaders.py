"""``radfm.data.loaders``: image loaders, collate, the trainer's batch, ScanStore, prompt cases."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch


def test_image_loader_for_reads_preprocess_json(tmp_path):
    from PIL import Image

    from radfm.data.loaders import image_loader_for

    png = tmp_path / "a.png"
    Image.fromarray((np.arange(100 * 60).reshape(100, 60) % 256).astype(np.uint8)).save(png)
    (tmp_path / "preprocess.json").write_text(json.dumps({"loader": "radfm.transforms.preprocess_scan",
                                                          "size_2d": [64, 64], "size_3d": [64, 64], "max_depth": 8}))
    image = image_loader_for(tmp_path)(str(png))
    assert image.shape == (3, 64, 64, 4) and float(image.max()) <= 1.0
    assert image_loader_for(None)(str(png)).shape == (3, 512, 512, 4)  # no folder: the paper's grid
    (tmp_path / "preprocess.json").write_text(json.dumps({"loader": "os.system"}))
    with pytest.raises(ValueError, match="loader"):
        image_loader_for(tmp_path)


def test_collate_left_pads_with_zero_weight():
    from radfm.data.loaders import collate_radfm

    a = {"ids": "a", "input_ids": torch.tensor([1, 5, 6]), "loss_weights": torch.tensor([0.0, 1.0, 3.0]), "images": []}
    b = {"ids": "b", "input_ids": torch.tensor([1, 7]), "loss_weights": torch.tensor([0.0, 1.0]), "images": []}
    batch = collate_radfm([a, b])
    assert batch["input_ids"].tolist() == [[1, 5, 6], [0, 1, 7]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [0, 1, 1]]
    assert batch["loss_weights"].tolist() == [[0.0, 1.0, 3.0], [0.0, 0.0, 1.0]]


def test_prepare_batch_moves_the_batch_and_names_missing_keys():
    from radfm.data.loaders import collate_radfm, prepare_radfm_batch

    sample = {"ids": "a", "input_ids": torch.tensor([1, 5]), "loss_weights": torch.tensor([0.0, 1.0]),
              "images": [torch.zeros(3, 8, 8, 4)]}
    inputs, weights, args, kwargs = prepare_radfm_batch(collate_radfm([sample]), device="cpu")
    assert sorted(inputs) == ["attention_mask", "images", "input_ids"] and args == () and kwargs == {}
    assert weights.tolist() == [[0.0, 1.0]] and inputs["images"][0][0].shape == (3, 8, 8, 4)
    with pytest.raises(KeyError, match="loss_weights"):
        prepare_radfm_batch({"input_ids": torch.zeros(1, 2), "attention_mask": torch.zeros(1, 2), "images": [[]]})


def test_prompt_items_resolve_paths_and_each_imaged_preprocesses_every_scan(tmp_path):
    from radfm.data.loaders import EachImaged, collate_cases, prompt_items

    paths = [_png(tmp_path / f"{i}.png") for i in range(2)]
    (tmp_path / "cases.json").write_text(json.dumps([{"prompt": "<image> what?", "images": ["0.png", "1.png"]}]))
    items = prompt_items(str(tmp_path / "cases.json"), base_dir=tmp_path)
    assert items == [{"prompt": "<image> what?", "image_paths": [str(p) for p in paths], "images": [str(p) for p in paths]}]
    item = EachImaged("images", _small_preprocessing())(items[0])
    assert [tuple(t.shape) for t in item["images"]] == [(3, 64, 64, 4)] * 2 and item["image_paths"] == items[0]["image_paths"]
    assert collate_cases([item, item])["prompt"] == ["<image> what?"] * 2
    with pytest.raises(FileNotFoundError, match="case 0: image file not found"):
        prompt_items([{"prompt": "x", "images": ["missing.png"]}], base_dir=tmp_path)
    with pytest.raises(ValueError, match="case 0: expected an object with keys 'prompt' and 'images'"):
        prompt_items([{"prompt": "x"}])


def _png(path, shape=(100, 60)):
    from PIL import Image

    Image.fromarray((np.arange(shape[0] * shape[1]).reshape(shape) % 256).astype(np.uint8)).save(path)
    return path


def _small_preprocessing(size=64):
    from monai.transforms import Compose

    from radfm.transforms import DropAlphad, LoadScand, OrientToRASd, ScaleResizeToRadFMd, ToThreeChannelsd

    return Compose([LoadScand("image", defer_rescale=True), DropAlphad("image"), OrientToRASd("image"),
                    ScaleResizeToRadFMd("image", size_2d=(size, size), size_3d=(size, size), max_depth=8),
                    ToThreeChannelsd("image")])


@pytest.mark.parametrize("kind", ["Dataset", "CacheDataset", "PersistentDataset"])
def test_scan_store_runs_the_bundle_transform_through_a_monai_dataset(kind, tmp_path):
    """ScanStore: the bundle's preprocessing as a MONAI transform; Persistent/CacheDataset avoid recomputing."""
    import functools

    import monai.data

    from radfm.data.loaders import ScanStore

    paths = [str(_png(tmp_path / f"{i}.png")) for i in range(2)]
    from monai.transforms import Transform

    calls = []
    base = _small_preprocessing()

    class Counted(Transform):  # a MONAI Transform (CacheDataset caches up to the first non-Transform)
        def __call__(self, item):
            calls.append(item["image"])
            return base(item)

    counted = Counted()

    dataset = getattr(monai.data, kind)
    if kind == "PersistentDataset":
        dataset = functools.partial(dataset, cache_dir=tmp_path / "cache")
    if kind == "CacheDataset":
        dataset = functools.partial(dataset, progress=False)
    store = ScanStore(paths, counted, dataset)
    first = [store(p) for p in paths]
    assert all(t.shape == (3, 64, 64, 4) and t.dtype == torch.float32 and type(t) is torch.Tensor for t in first)
    again = ScanStore(paths, counted, dataset) if kind == "PersistentDataset" else store  # a new run, same cache
    calls.clear()
    second = [again(p) for p in paths]
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert calls == ([] if kind != "Dataset" else paths)
