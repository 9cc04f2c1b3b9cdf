"""FSDP for the full-size model: wrapping policy, and full (gathered) state dicts for checkpoints.

Used by ``bundles/radfm/configs/multi_gpu_fsdp.json``. Needs an initialised process group: NCCL
on GPUs, or gloo on CPU (how the test suite runs it, with 2 processes).
"""

from __future__ import annotations

import functools
from typing import Any

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

    policy = functools.partial(transformer_auto_wrap_policy, transformer_layer_cls=_unit_classes(model))
    precision = None
    if param_dtype is not None:
        precision = MixedPrecision(param_dtype=param_dtype, reduce_dtype=torch.float32, buffer_dtype=param_dtype)
    wrapped = FullyShardedDataParallel(model, auto_wrap_policy=policy, mixed_precision=precision, device_id=device,
                                       use_orig_params=True)
    wrapped.tokenizer = getattr(model, "tokenizer", None)
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
