"""Datasets, collate functions and loaders for RadFM training, closed-set validation and inference.

A manifest (``radfm.data.manifest``) becomes tokenised, weighted sequences
(``radfm.data.sequences.SequenceBuilder``) plus preprocessed images
(``radfm.transforms.preprocess_scan`` unless another ``image_loader`` is given; the bundles pass
their ``preprocessing`` as a MONAI ``transform`` instead, run through the MONAI dataset chosen by
``scan_dataset``: see :class:`ScanStore`).

A training batch is a dict: ``input_ids`` LongTensor ``[B, L]``, ``attention_mask`` ``[B, L]``,
``loss_weights`` FloatTensor ``[B, L]`` and ``images``: one list of ``[3, H, W, D]`` tensors per
sample (any number per sample; 2D scans arrive as depth-4 volumes). :func:`prepare_radfm_batch`
moves one to a device for the trainer.

Inference (``inference.json``): :func:`prompt_items` (the cases as dataset items) and
:class:`EachImaged` (the bundle's per-scan ``preprocessing`` on every scan of a case).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from radfm.data.dataset import ManifestDataset
from radfm.data.resumable_sampler import ResumableSampler

ImageLoader = Callable[[str], torch.Tensor]
"""``path -> [3, H, W, D]`` float tensor (a scan preprocessed for the model)."""

REQUIRED_KEYS = ("input_ids", "attention_mask", "loss_weights", "images")


def default_image_loader(**options: Any) -> ImageLoader:
    """``path -> [3, H, W, D]`` float tensor with the standard RadFM preprocessing."""
    from radfm.transforms import preprocess_scan

    def load(path: str) -> torch.Tensor:
        return torch.as_tensor(preprocess_scan(path, **options)).float()

    return load


def image_loader_for(model_dir: str | os.PathLike | None) -> ImageLoader:
    """The preprocessing a model was trained with: ``preprocess_scan`` with the options its processor
    records (``RadFMImageProcessor.from_model_dir``; the demo model records a smaller grid); without a
    model folder, the standard one."""
    if model_dir is None:
        return default_image_loader()
    from radfm.model.processing import RadFMImageProcessor

    return default_image_loader(**RadFMImageProcessor.from_model_dir(model_dir).options)


def plain_image(image: Any) -> torch.Tensor:
    """A preprocessed scan as a plain float32 tensor (a ``MetaTensor``'s data without its metadata)."""
    data = image.as_tensor() if hasattr(image, "as_tensor") else image
    return torch.as_tensor(data, dtype=torch.float32)


class ScanStore:
    """Preprocessed scans by path, through a MONAI dataset of ``{key: path}`` items and a MONAI ``transform``.

    ``dataset`` chooses MONAI's caching (a dataset class or a ``functools.partial`` of one, e.g. the
    config component ``{"_target_": "PersistentDataset", "_mode_": "callable", "cache_dir": ...}``):
    ``monai.data.Dataset`` (default: no cache), ``CacheDataset`` (in memory) or
    ``PersistentDataset`` (on disk, kept between epochs and runs). Calling the store with a path
    returns its ``[3, H, W, D]`` float tensor; a path the store was not built with is preprocessed
    directly.
    """

    def __init__(self, paths: Sequence[str], transform: Callable, dataset: Callable | None = None,
                 key: str = "image") -> None:
        from monai.data import Dataset

        unique = list(dict.fromkeys(str(p) for p in paths))
        self.index = {path: i for i, path in enumerate(unique)}
        self.transform = transform
        self.key = key
        self.dataset = (dataset or Dataset)(data=[{key: path} for path in unique], transform=transform)

    def __call__(self, path: str) -> torch.Tensor:
        path = str(path)
        if path in self.index:
            item = self.dataset[self.index[path]]
        else:
            item = self.transform({self.key: path})
        return plain_image(item[self.key])


def transform_loader(transform: Callable, key: str = "image") -> ImageLoader:
    """``path -> [3, H, W, D]`` from a MONAI dictionary transform on ``{key: path}`` (no caching)."""

    def load(path: str) -> torch.Tensor:
        return plain_image(transform({key: str(path)})[key])

    return load


def _load_samples(manifest: str | Path | Sequence, split: str | None):
    from radfm.data.manifest import load_manifest

    samples = load_manifest(manifest) if isinstance(manifest, (str, Path)) else list(manifest)
    if split is not None:
        samples = [s for s in samples if s.split in (None, split)]
    if not samples:
        raise ValueError(f"no samples in {manifest!s:.200} for split {split!r}")
    return samples


class RadFMTrainDataset(ManifestDataset):
    """Manifest samples as ``{"ids", "input_ids", "loss_weights", "attention_mask", "images"}``.

    A :class:`radfm.data.dataset.ManifestDataset` (sequences from ``SequenceBuilder``, images
    through ``image_loader``) in the trainer's batch format. ``split`` keeps the samples of that
    split and those without one. ``cache_images`` keeps preprocessed images in memory
    (phantoms; small datasets).
    """

    def __init__(
        self,
        manifest: str | Path | Sequence,
        tokenizer: Any,
        base_vocab_size: int,
        *,
        split: str | None = "train",
        max_length: int = 2048,
        image_loader: ImageLoader | None = None,
        cache_images: bool = False,
        term_weighting: bool = True,
        transform: Callable | None = None,
        scan_dataset: Callable | None = None,
    ) -> None:
        from radfm.data.sequences import SequenceBuilder

        builder = SequenceBuilder(tokenizer, base_vocab_size, max_length=max_length,
                                  matcher=None if term_weighting else False)
        samples = _load_samples(manifest, split)
        if transform is not None:
            image_loader = ScanStore([im.path for s in samples for im in s.images], transform, scan_dataset)
        super().__init__(samples, builder, preprocess=image_loader or default_image_loader())
        self.memory_cache: dict[str, torch.Tensor] | None = {} if cache_images else None

    def load_image(self, path: str) -> torch.Tensor:
        if self.memory_cache is None:
            return super().load_image(path)
        if path not in self.memory_cache:
            self.memory_cache[path] = super().load_image(path)
        return self.memory_cache[path]

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = super().__getitem__(index)
        keys = ("input_ids", "loss_weights", "attention_mask", "images")
        return {"ids": item["id"], **{key: item[key] for key in keys}}


def collate_radfm(samples: Sequence[dict[str, Any]], pad_token_id: int = 0) -> dict[str, Any]:
    """Left-pad to the longest sequence: ``input_ids``/``attention_mask``/``loss_weights`` ``[B, L]``.

    Padding carries weight 0 and mask 0; ``images`` stays a list of per-sample lists.
    """
    if not samples:
        raise ValueError("cannot collate an empty batch")
    length = max(int(s["input_ids"].shape[0]) for s in samples)
    batch = len(samples)
    input_ids = torch.full((batch, length), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros(batch, length, dtype=torch.long)
    loss_weights = torch.zeros(batch, length, dtype=torch.float32)
    for row, s in enumerate(samples):
        n = int(s["input_ids"].shape[0])
        input_ids[row, length - n :] = s["input_ids"]
        attention_mask[row, length - n :] = 1
        loss_weights[row, length - n :] = s["loss_weights"]
    return {
        "ids": [s["ids"] for s in samples],
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "loss_weights": loss_weights,
        "images": [list(s["images"]) for s in samples],
    }


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


def make_train_loader(
    dataset: torch.utils.data.Dataset,
    batch_size: int = 1,
    *,
    seed: int = 0,
    shuffle: bool = True,
    num_workers: int = 0,
    batching: str = "mixed",
    batch_size_3d: int = 1,
) -> torch.utils.data.DataLoader:
    """A loader whose order depends only on ``seed`` and the epoch (exact resume, DDP sharding).

    ``batching``: ``"mixed"`` batches of ``batch_size`` samples whatever their scans
    (``ResumableSampler``); ``"modality"`` the paper's batches, never mixing 2D and 3D:
    ``batch_size`` 2D samples or ``batch_size_3d`` 3D samples (``ModalityBatchSampler``; a
    sample with any 3D scan is 3D, one without scans 2D). The trainer's
    ``ResumeFromCheckpoint`` sets the epoch on either sampler (:func:`train_sampler`).
    The loader gets its own generator so that starting an epoch does not draw from the
    global RNG (which a resumed run restores).
    """
    generator = torch.Generator().manual_seed(seed)
    if batching == "modality":
        from radfm.data.sampler import ModalityBatchSampler, sample_dims

        samples = getattr(dataset, "samples", None)
        if samples is None:
            raise ValueError("batching='modality' needs a dataset with .samples (manifest samples)")
        dims = [sample_dims(s) for s in samples]
        batch_sampler = ModalityBatchSampler(dims, batch_size_2d=batch_size, batch_size_3d=batch_size_3d,
                                             seed=seed, shuffle=shuffle)
        return torch.utils.data.DataLoader(dataset, batch_sampler=batch_sampler, collate_fn=collate_radfm,
                                           num_workers=num_workers, generator=generator)
    if batching != "mixed":
        raise ValueError(f"batching must be 'mixed' or 'modality', got {batching!r}")
    sampler = ResumableSampler(dataset, shuffle=shuffle, seed=seed)
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        collate_fn=collate_radfm,
        num_workers=num_workers,
        generator=generator,
    )


def train_sampler(loader: torch.utils.data.DataLoader) -> Any:
    """The loader's resumable sampler: its ``ModalityBatchSampler`` or its ``ResumableSampler``."""
    from radfm.data.sampler import ModalityBatchSampler

    return loader.batch_sampler if isinstance(loader.batch_sampler, ModalityBatchSampler) else loader.sampler


class ClosedSetDataset(torch.utils.data.Dataset):
    """Validation cases with a closed answer set: ``{"ids", "task", "prompt", "images", "image_paths", "reference", "choices"}``.

    Samples whose ``extra["closed_set"]`` is missing default to yes/no for inductive tasks
    and are skipped otherwise. ``transform`` / ``scan_dataset``: as in :class:`RadFMTrainDataset`.
    """

    def __init__(
        self,
        manifest: str | Path | Sequence,
        *,
        split: str | None = "val",
        image_loader: ImageLoader | None = None,
        tasks: Sequence[str] | None = None,
        limit: int | None = None,
        transform: Callable | None = None,
        scan_dataset: Callable | None = None,
    ) -> None:
        cases = []
        for sample in _load_samples(manifest, split):
            if sample.is_interleaved or (tasks is not None and sample.task not in tasks):
                continue
            choices = sample.extra.get("closed_set")
            if choices is None and sample.task in ("modality_inductive", "diagnosis_inductive"):
                choices = ["yes", "no"]
            if choices:
                cases.append((sample, list(choices)))
        self.cases = cases[:limit] if limit else cases
        if transform is not None:
            image_loader = ScanStore([ref.path for s, _ in self.cases for ref in s.images], transform, scan_dataset)
        self.image_loader = image_loader or default_image_loader()

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample, choices = self.cases[index]
        return {
            "ids": sample.id,
            "task": sample.task,
            "prompt": sample.instruction,
            "images": [self.image_loader(ref.path) for ref in sample.images],
            "image_paths": [ref.path for ref in sample.images],
            "reference": sample.response,
            "choices": choices,
        }


def collate_cases(cases: Sequence[dict[str, Any]]) -> dict[str, list]:
    """Validation cases as lists per key (no tensors to stack)."""
    return {key: [case[key] for case in cases] for key in cases[0]}


def prompt_items(cases: Sequence[dict[str, Any]] | str | os.PathLike | None,
                 base_dir: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """``{"prompt", "images"}`` cases (a list, or a JSON file holding one) → dataset items.

    Each item: ``prompt``, ``image_paths`` (absolute; relative ones resolved against ``base_dir``)
    and ``images`` (the same paths; the preprocessing replaces them by tensors). Missing files and
    malformed cases raise naming the case.
    """
    if isinstance(cases, (str, os.PathLike)):
        cases = json.loads(Path(cases).read_text(encoding="utf-8"))
    base = Path(os.fspath(base_dir)) if base_dir is not None else Path.cwd()
    items = []
    for index, case in enumerate(cases or []):
        if not isinstance(case, dict) or "prompt" not in case or "images" not in case:
            raise ValueError(f"case {index}: expected an object with keys 'prompt' and 'images', got {case!r:.200}")
        paths = [str(p if Path(p).is_absolute() else base / p) for p in case["images"]]
        for path in paths:
            if not Path(path).exists():
                raise FileNotFoundError(f"case {index}: image file not found: {path}")
        items.append({"prompt": case["prompt"], "image_paths": paths, "images": list(paths)})
    return items


class EachImaged:
    """Apply a dictionary ``transform`` on ``{"image": path}`` to every path in ``item[key]`` (a list).

    Lets one bundle ``preprocessing`` (a ``Compose`` of dictionary transforms on ``image``) serve
    cases with any number of scans.
    """

    def __init__(self, keys: str, transform: Any, image_key: str = "image") -> None:
        self.key, self.transform, self.image_key = keys, transform, image_key

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        d = dict(data)
        d[self.key] = [plain_image(self.transform({self.image_key: p})[self.image_key]) for p in d[self.key]]
        return d
