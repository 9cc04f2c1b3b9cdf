"""A shuffling sampler that resumes mid-epoch at the exact sample where training stopped.

Ignite does not skip already-seen batches when it resumes inside an epoch: it restarts the
data loader and only shortens the epoch. This sampler draws the same per-epoch permutation
(``seed + epoch``, like ``DistributedSampler``) and drops the first ``skip`` indices of the
first epoch after a resume. It subclasses ``DistributedSampler`` so that MONAI workflows call
``set_epoch`` on it every epoch, and it shards across ranks the same way under DDP.
"""

from __future__ import annotations

from collections.abc import Iterator, Sized

from torch.utils.data import DistributedSampler


class ResumableSampler(DistributedSampler):
    """Deterministic per-epoch shuffling (``seed + epoch``) with a one-off skip for resuming."""

    def __init__(
        self,
        dataset: Sized,
        *,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        drop_last: bool = False,
    ) -> None:
        import torch.distributed as dist

        distributed = dist.is_available() and dist.is_initialized()
        num_replicas = num_replicas if num_replicas is not None else (dist.get_world_size() if distributed else 1)
        rank = rank if rank is not None else (dist.get_rank() if distributed else 0)
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last)
        self._skip = 0

    def skip_next_epoch(self, num_samples: int) -> None:
        """Drop the first ``num_samples`` of this rank's indices the next time it is iterated."""
        self._skip = num_samples

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        skip, self._skip = self._skip, 0
        return iter(indices[skip:])
