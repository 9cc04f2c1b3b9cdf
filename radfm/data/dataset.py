"""A torch ``Dataset`` over a manifest: preprocessing (optionally cached) and sequence building."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset

from radfm.data.manifest import Sample, load_manifest
from radfm.data.sampler import sample_dims
from radfm.data.sequences import SequenceBuilder
from radfm.utils.io import atomic_path


def _default_preprocess(path: str, **options):
    from radfm.transforms import preprocess_scan

    return preprocess_scan(path, **options)


class ManifestDataset(Dataset):
    """Samples of a manifest as model inputs.

    Item ``i`` is a dict: ``id``, ``input_ids``, ``labels``, ``loss_weights``,
    ``attention_mask`` (1-D tensors, see ``radfm.data.sequences``), ``images`` (list of
    ``[3, H, W, D]`` float tensors, one per image block kept), ``dataset``, ``task``.

    Args:
        manifest: a manifest path or a list of ``Sample``.
        builder: the ``SequenceBuilder`` (tokenizer, V, max length, term matcher).
        preprocess: ``path -> [3, H, W, D]`` tensor; default ``radfm.transforms.preprocess_scan``.
        preprocess_options: keyword options for ``preprocess`` (e.g. ``{"window": "lung"}``).
        cache_dir: if set, preprocessed scans are stored there as ``.pt`` tensors keyed by
            path, size, modification time and options, and read back with ``weights_only=True``.
        tasks / splits: keep only samples of these tasks / splits.
    """

    def __init__(
        self,
        manifest: str | os.PathLike | Sequence[Sample],
        builder: SequenceBuilder,
        *,
        preprocess: Callable | None = None,
        preprocess_options: dict | None = None,
        cache_dir: str | os.PathLike | None = None,
        tasks: Sequence[str] | None = None,
        splits: Sequence[str] | None = None,
        data_root: str | os.PathLike | None = None,
    ):
        samples = load_manifest(manifest, data_root=data_root) if isinstance(manifest, (str, os.PathLike)) else list(manifest)
        if tasks is not None:
            samples = [s for s in samples if s.task in set(tasks)]
        if splits is not None:
            samples = [s for s in samples if s.split in set(splits)]
        self.samples = samples
        self.builder = builder
        self.preprocess = preprocess or _default_preprocess
        self.preprocess_options = dict(preprocess_options or {})
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def dims(self) -> list[int]:
        """Per sample 2 or 3 (3 if any of its scans is 3D), for ``ModalityBatchSampler``."""
        return [sample_dims(s) for s in self.samples]

    @property
    def groups(self) -> list[str]:
        """Per sample its dataset name, for ratio mixing."""
        return [s.dataset for s in self.samples]

    def _cache_path(self, path: str) -> Path:
        stat = os.stat(path)
        key = json.dumps([os.path.abspath(path), stat.st_size, stat.st_mtime_ns, self.preprocess_options],
                         sort_keys=True, default=str)
        return self.cache_dir / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".pt")

    def load_image(self, path: str) -> torch.Tensor:
        """The preprocessed scan as a plain float tensor ``[3, H, W, D]`` (through the cache if set)."""
        if self.cache_dir is not None:
            cached = self._cache_path(path)
            if cached.is_file():
                return torch.load(cached, weights_only=True)
        image = self.preprocess(path, **self.preprocess_options)
        image = torch.as_tensor(image.as_tensor() if hasattr(image, "as_tensor") else image, dtype=torch.float32)
        if self.cache_dir is not None:
            with atomic_path(cached) as tmp:
                torch.save(image.contiguous().clone(), tmp)
        return image

    def __getitem__(self, index: int) -> dict:
        sample = self.samples[index]
        item = self.builder(sample)
        try:
            images = [self.load_image(im.path) for im in sample.images[: item["num_images"]]]
        except Exception as err:
            err.add_note(f"while loading the images of sample {sample.id!r} ({sample.dataset})")
            raise
        item.update(id=sample.id, dataset=sample.dataset, task=sample.task, images=images)
        return item
