"""Multi-process helpers: FSDP wrapping, full (gathered) state dicts for checkpoints, the model
used for generation under DDP/FSDP, unsharded parameter counts, and rank/world queries.

Used by ``bundles/radfm/configs/multi_gpu_fsdp.json`` / ``multi_gpu_train.json`` and by sharded
``radfm evaluate``. Needs an initialised process group: NCCL on GPUs, or gloo on CPU (how the
test suite runs it, with 2 processes).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

import torch
from torch import nn


def _unit_classes(model: nn.Module) -> set[type[nn.Module]]:
    """Module classes that become their own FSDP unit: the LLM's decoder layers.

    Every rank runs every decoder layer exactly once per forward, as FSDP's collectives need.
    The vision encoder is not split into units: it runs once per group of same-shaped scans,
    so ranks holding different mixes of 2D/3D scans would call its blocks a different number
    of times and their all-gathers would not match. It stays in the root unit (gathered once
    per forward; it is small next to the LLM).
    """
    names = set(getattr(model.language_model, "_no_split_modules", None) or [])
    return {type(m) for m in model.language_model.modules() if type(m).__name__ in names}


def wrap_fsdp(model: nn.Module, *, device: torch.device, param_dtype: torch.dtype | None = torch.bfloat16) -> nn.Module:
    """``FullyShardedDataParallel`` over ``model`` with one unit per decoder layer / vision block.

    ``use_orig_params=True`` keeps parameter names (freeze schedule, LoRA, optimizer groups).
    ``param_dtype`` sets FSDP mixed precision (reductions in fp32).
    """
    from torch.distributed.fsdp import FullyShardedDataParallel, MixedPrecision
    from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

    model.unsharded_parameter_count = sum(p.numel() for p in model.parameters())  # before sharding: see parameter_count
    policy = functools.partial(transformer_auto_wrap_policy, transformer_layer_cls=_unit_classes(model))
    precision = None
    if param_dtype is not None:
        precision = MixedPrecision(param_dtype=param_dtype, reduce_dtype=torch.float32, buffer_dtype=param_dtype)
    wrapped = FullyShardedDataParallel(model, auto_wrap_policy=policy, mixed_precision=precision, device_id=device,
                                       use_orig_params=True)
    return wrapped


class FullStateModel:
    """``state_dict``/``load_state_dict`` of an FSDP model as one full (CPU, rank-0) state."""

    def __init__(self, fsdp_model: nn.Module) -> None:
        self.model = fsdp_model

    def _context(self):
        from torch.distributed.fsdp import FullStateDictConfig, FullyShardedDataParallel, StateDictType

        # offloading is for GPU shards; on CPU (gloo) torch's offload of CPU tensors crashes (SIGSEGV)
        on_gpu = any(p.is_cuda for p in self.model.parameters())
        return FullyShardedDataParallel.state_dict_type(
            self.model, StateDictType.FULL_STATE_DICT, FullStateDictConfig(offload_to_cpu=on_gpu, rank0_only=False)
        )

    def state_dict(self) -> dict[str, Any]:
        with self._context():
            return self.model.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with self._context():
            self.model.load_state_dict(state)


class FullStateOptimizer:
    """The optimizer state of an FSDP model, gathered (``FSDP.optim_state_dict``) and re-sharded on load."""

    def __init__(self, fsdp_model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.model = fsdp_model
        self.optimizer = optimizer

    def state_dict(self) -> dict[str, Any]:
        from torch.distributed.fsdp import FullyShardedDataParallel

        return FullyShardedDataParallel.optim_state_dict(self.model, self.optimizer)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        from torch.distributed.fsdp import FullyShardedDataParallel

        flat = FullyShardedDataParallel.optim_state_dict_to_load(self.model, self.optimizer, state)
        self.optimizer.load_state_dict(flat)


def destroy_process_group() -> None:
    """Tear down torch.distributed after a run and reset ignite's cached distributed context.

    Ignite remembers the native process group it saw during the run; without the reset a later
    run in the same process (tests, notebooks) asks a destroyed group for its rank.
    """
    import ignite.distributed as idist
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    idist.utils._set_model(idist.utils._SerialModel())  # no public reset that skips destroying the group


# ------------------------------------------------------------------ ranks ----
T = TypeVar("T")


def world() -> tuple[int, int]:
    """(rank, world size) of the initialised process group, or (0, 1) without one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def rank_slice(items: Sequence[T], rank: int, world_size: int) -> list[T]:
    """Rank ``rank``'s share of ``items``: every ``world_size``-th item from ``rank`` (no padding, no overlap)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside a world of {world_size} processes")
    return list(items[rank::world_size])


def parameter_count(model: nn.Module) -> int:
    """Parameters of the whole (unsharded) model: what FSDP had before it sharded them.

    After ``wrap_fsdp`` the original module's parameters are this rank's shard (``numel`` 0 on
    some ranks); :func:`wrap_fsdp` records the full count first. DDP/plain models: ``numel`` sum.
    """
    inner = getattr(model, "module", model)
    for candidate in (model, inner):
        count = getattr(candidate, "unsharded_parameter_count", None)
        if count is not None:
            return int(count)
    return sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------ generation ----
@contextlib.contextmanager
def generation_model(network: nn.Module) -> Iterator[nn.Module]:
    """The plain model to call ``generate`` on, alone on this rank, under DDP, FSDP or neither.

    * plain model: itself; DDP: ``network.module`` (every rank holds all parameters);
    * FSDP: every rank's full parameters are gathered (``FSDP.summon_full_params``, a collective:
      all ranks must enter this context together, once per validation/evaluation run) and the
      nested FSDP units (decoder layers) are bypassed while inside, so that a rank's forwards
      issue no collectives and ranks may generate different numbers of tokens and batches.
      Memory: each rank holds the whole model (in the stored parameter dtype) for the duration.
      Parameter updates made inside are discarded (``writeback=False``).

    Callers must pass ``synced_gpus=False`` to HF ``generate`` (it would otherwise see an FSDP
    managed module and wait for the other ranks at every token).
    """
    from torch.distributed.fsdp import FullyShardedDataParallel
    from torch.nn.parallel import DistributedDataParallel

    if isinstance(network, DistributedDataParallel):
        yield network.module
        return
    if not isinstance(network, FullyShardedDataParallel):
        yield network
        return
    with FullyShardedDataParallel.summon_full_params(network, writeback=False, recurse=True):
        inner = network.module
        bypassed: list[tuple[nn.Module, str, nn.Module]] = []
        for parent in list(inner.modules()):
            for name, child in list(parent._modules.items()):
                if isinstance(child, FullyShardedDataParallel):
                    parent._modules[name] = child.module  # its unsharded views, without FSDP's forward hooks
                    bypassed.append((parent, name, child))
        try:
            yield inner
        finally:
            for parent, name, child in reversed(bypassed):
                parent._modules[name] = child
