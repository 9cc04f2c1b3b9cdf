"""Batching as in the paper: a batch is all-2D (4 samples) or all-3D (1 sample).

``ModalityBatchSampler`` yields lists of dataset indices. Per epoch it (1) draws the epoch's
samples, optionally mixing datasets with given ratios, (2) groups them by dimensionality,
(3) cuts each group into batches, (4) shuffles the batch order, and (5) gives each rank a
disjoint, equally long share of the batches (the tail that does not divide evenly is
dropped so that ranks run the same number of steps). Everything is seeded by
``seed`` and the epoch set with ``set_epoch``; ``skip_next_epoch`` resumes mid-epoch.
With ``ratios`` the 2D/3D split, and so the number of batches, can differ between epochs;
without them every epoch has the same batches in a new order.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from functools import lru_cache

import numpy as np
import torch
from torch.utils.data import Sampler


@lru_cache(maxsize=100_000)
def image_dims(path: str) -> int:
    """2 or 3: how many spatial dimensions the scan at ``path`` has, from its header only.

    The model's reader decides (:func:`radfm.transforms.readers.scan_spatial_dims`: same format
    detection and 2D/3D rule as ``read_scan``); a missing or unsupported file raises
    ``ScanReadError`` naming it.
    """
    from radfm.transforms.readers import scan_spatial_dims  # lazily: MONAI/torch readers load on first use

    return scan_spatial_dims(path)


def sample_dims(sample) -> int:
    """2 or 3 for a manifest ``Sample``: 3 if any of its scans is 3D, 2 otherwise (also without scans)."""
    return max((image_dims(ref.path) for ref in sample.images), default=2)


def _dist_info(num_replicas: int | None, rank: int | None) -> tuple[int, int]:
    if num_replicas is None or rank is None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            num_replicas = torch.distributed.get_world_size() if num_replicas is None else num_replicas
            rank = torch.distributed.get_rank() if rank is None else rank
        else:
            num_replicas, rank = num_replicas or 1, rank or 0
    if not 0 <= rank < num_replicas:
        raise ValueError(f"rank {rank} is outside [0, {num_replicas})")
    return num_replicas, rank


class ModalityBatchSampler(Sampler[list[int]]):
    """Batches that never mix 2D and 3D samples.

    Args:
        dims: per sample, 2 or 3 (``ManifestDataset.dims``).
        groups: per sample, the dataset name it comes from (needed for ``ratios``).
        batch_size_2d / batch_size_3d: samples per batch (paper: 4 and 1).
        ratios: ``{dataset: weight}``; the epoch then holds ``samples_per_epoch`` samples
            (default: as many as the data) split between datasets in these proportions,
            drawn without replacement until a dataset is used up, then again.
        seed, shuffle, drop_last: as in ``DistributedSampler``; ``drop_last`` drops
            incomplete batches of each kind.
        num_replicas, rank: default to ``torch.distributed`` when initialised, else 1 and 0.
    """

    def __init__(
        self,
        dims: Sequence[int],
        groups: Sequence[str] | None = None,
        *,
        batch_size_2d: int = 4,
        batch_size_3d: int = 1,
        ratios: Mapping[str, float] | None = None,
        samples_per_epoch: int | None = None,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = False,
        num_replicas: int | None = None,
        rank: int | None = None,
    ):
        self.dims = np.asarray(dims, dtype=np.int64)
        if not np.isin(self.dims, (2, 3)).all():
            raise ValueError("dims must hold only 2 and 3")
        if batch_size_2d < 1 or batch_size_3d < 1:
            raise ValueError("batch sizes must be >= 1")
        self.groups = list(groups) if groups is not None else ["default"] * len(self.dims)
        if len(self.groups) != len(self.dims):
            raise ValueError(f"groups has {len(self.groups)} entries but dims has {len(self.dims)}")
        self.ratios = dict(ratios) if ratios else None
        if self.ratios:
            unknown = set(self.ratios) - set(self.groups)
            if unknown:
                raise ValueError(f"ratios name datasets with no samples: {sorted(unknown)}")
            if any(w < 0 for w in self.ratios.values()) or sum(self.ratios.values()) <= 0:
                raise ValueError("ratios must be >= 0 and not all 0")
        self.batch_size = {2: batch_size_2d, 3: batch_size_3d}
        self.samples_per_epoch = samples_per_epoch
        self.seed, self.shuffle, self.drop_last = seed, shuffle, drop_last
        self.num_replicas, self.rank = _dist_info(num_replicas, rank)
        self.epoch = 0
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch's draw (call at every epoch start: MONAI does it only for ``DistributedSampler``)."""
        self.epoch = epoch

    def skip_next_epoch(self, num_batches: int) -> None:
        """Drop the first ``num_batches`` of this rank's batches the next time it is iterated (resume)."""
        self._skip = num_batches

    def _epoch_indices(self, rng: np.random.Generator) -> np.ndarray:
        if not self.ratios:
            idx = np.arange(len(self.dims))
            return rng.permutation(idx) if self.shuffle else idx
        total = self.samples_per_epoch or len(self.dims)
        weight_sum = sum(self.ratios.values())
        groups = np.asarray(self.groups)
        chosen = []
        for name, weight in sorted(self.ratios.items()):
            pool = np.flatnonzero(groups == name)
            want = int(round(total * weight / weight_sum))
            reps = math.ceil(want / len(pool)) if want else 0
            draws = [rng.permutation(pool) if self.shuffle else pool for _ in range(reps)]
            chosen.append(np.concatenate(draws)[:want] if draws else pool[:0])
        idx = np.concatenate(chosen) if chosen else np.zeros(0, np.int64)
        return rng.permutation(idx) if self.shuffle else idx

    def _all_batches(self) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        idx = self._epoch_indices(rng)
        batches: list[list[int]] = []
        for dim in (2, 3):
            members = idx[self.dims[idx] == dim]
            size = self.batch_size[dim]
            for start in range(0, len(members), size):
                chunk = members[start:start + size]
                if len(chunk) < size and self.drop_last:
                    continue
                batches.append(chunk.tolist())
        if self.shuffle:
            order = rng.permutation(len(batches))
            batches = [batches[i] for i in order]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._all_batches()
        per_rank = len(batches) // self.num_replicas
        skip, self._skip = self._skip, 0
        yield from batches[self.rank:per_rank * self.num_replicas:self.num_replicas][skip:]

    def __len__(self) -> int:
        return len(self._all_batches()) // self.num_replicas


def collate_samples(items: Sequence[dict], *, pad_token_id: int = 0, padding_side: str = "right") -> dict:
    """Stack sequences (padding to the longest) and keep images as per-sample lists.

    Returns ``input_ids`` / ``labels`` / ``loss_weights`` / ``attention_mask`` as
    ``[B, L]`` tensors (pad: ``pad_token_id`` / -100 / 0 / 0), ``images``: a list of B lists
    of ``[3, H, W, D]`` tensors (each sample's scans at their own sizes), and ``ids``.
    Right padding suits training; use ``padding_side="left"`` for batched generation.
    """
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    length = max(len(item["input_ids"]) for item in items)
    pads = {"input_ids": pad_token_id, "labels": -100, "loss_weights": 0.0, "attention_mask": 0}
    out: dict = {}
    for key, pad in pads.items():
        dtype = torch.float32 if key == "loss_weights" else torch.long
        stacked = torch.full((len(items), length), pad, dtype=dtype)
        for b, item in enumerate(items):
            seq = torch.as_tensor(item[key], dtype=dtype)
            if padding_side == "right":
                stacked[b, : len(seq)] = seq
            else:
                stacked[b, length - len(seq):] = seq
        out[key] = stacked
    out["images"] = [list(item.get("images", [])) for item in items]
    out["ids"] = [item.get("id") for item in items]
    return out
