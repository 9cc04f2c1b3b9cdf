"""Low-level weight handling: reading plain state dicts safely and assigning them tensor by tensor.

Memory rule: never two full copies of the weights. A model is built with parameters on the
meta device (:func:`build_empty`), a file is memory-mapped (``torch.load(mmap=True,
weights_only=True)`` or safetensors), and each tensor is copied/cast into place one at a time;
the mapped pages of a tensor are released as soon as it has been copied. Knows nothing of
RadFM's layout: :mod:`radfm.model.official` (the published-checkpoint converter) builds on it;
our own folders load through transformers' ``from_pretrained``.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import pickle
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn


class CheckpointError(ValueError):
    """A weights file that does not fit the model (names the file and the offending keys)."""



def read_state_dict(path: str | os.PathLike, *, mmap_file: bool = True) -> tuple[dict[str, torch.Tensor], bool]:
    """``(state dict, whether its tensors are memory-mapped)`` from a ``torch.save`` file.

    ``torch.load(weights_only=True)``: anything but a dict of name -> tensor (or
    ``{"state_dict": ...}``) is refused with ``CheckpointError``; pickled code never runs.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap_file)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"refused to load {path}: it is not a plain weights file (weights_only=True rejected it: "
            f"{str(err).splitlines()[0]}). Only state dicts of tensors are accepted; never unpickle code."
        ) from err
    except RuntimeError as err:
        if mmap_file and "mmap" in str(err):  # legacy (non-zip) torch.save format cannot be mapped
            return read_state_dict(path, mmap_file=False)
        raise CheckpointError(f"cannot read {path} as a PyTorch weights file: {err}") from err
    except (KeyError, EOFError, ValueError, AttributeError) as err:  # garbage bytes trip the unpickler anywhere
        raise CheckpointError(f"cannot read {path} as a PyTorch weights file ({type(err).__name__}: {err})") from err
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"refused to load {path}: expected a dict of name -> tensor, got {type(state).__name__}")
    return state, mmap_file


def _release_mapped_pages(tensor: torch.Tensor) -> None:
    """Drop the resident pages of a tensor that lives in a private read-only file mapping.

    Only called on tensors from ``torch.load(mmap=True)`` (MAP_PRIVATE, never written): the
    kernel re-reads them from the file if touched again, so this frees RSS without changing data.
    """
    if sys.platform != "linux" or tensor.device.type != "cpu" or tensor.numel() == 0:
        return
    page = mmap.PAGESIZE
    start = tensor.data_ptr()
    end = start + tensor.numel() * tensor.element_size()
    aligned_start = start - start % page
    length = ((end - aligned_start + page - 1) // page) * page
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.madvise(ctypes.c_void_p(aligned_start), ctypes.c_size_t(length), ctypes.c_int(4))  # MADV_DONTNEED
    except (OSError, AttributeError):
        pass


# Copy large mapped tensors in pieces and release each piece: the transient is one piece,
# not the biggest tensor of the file (e.g. a 0.65 GB embedding in the 14B checkpoint).
_COPY_CHUNK_BYTES = 64 * 2**20


def _copy_tensor(source: torch.Tensor, dtype: torch.dtype, device: torch.device, release_source: bool) -> torch.Tensor:
    """A fresh ``dtype``/``device`` copy of ``source``; with ``release_source``, its mapped pages are dropped."""
    value = torch.empty(source.shape, dtype=dtype, device=device)
    if not (release_source and source.is_contiguous() and source.numel() > 0):
        value.copy_(source)
        if release_source:
            _release_mapped_pages(source)
        return value
    flat_source, flat_value = source.reshape(-1), value.view(-1)
    step = max(1, _COPY_CHUNK_BYTES // source.element_size())
    for start in range(0, flat_source.numel(), step):
        piece = flat_source[start : start + step]
        flat_value[start : start + step].copy_(piece)
        _release_mapped_pages(piece)
    return value



def build_empty(model_class: type[nn.Module], config: Any) -> nn.Module:
    """``model_class(config)`` with parameters on the meta device (no memory); buffers stay real."""
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        return model_class(config)


def _tensor_slots(model: nn.Module) -> dict[str, tuple[nn.Module, str, bool]]:
    """name -> (owning module, attribute, is_parameter) for every persistent tensor of ``model``."""
    slots: dict[str, tuple[nn.Module, str, bool]] = {}
    for module_name, module in model.named_modules(remove_duplicate=False):
        prefix = f"{module_name}." if module_name else ""
        for leaf, param in module._parameters.items():
            if param is not None:
                slots[prefix + leaf] = (module, leaf, True)
        for leaf, buffer in module._buffers.items():
            if buffer is not None and leaf not in module._non_persistent_buffers_set:
                slots[prefix + leaf] = (module, leaf, False)
    return slots


def tied_aliases(model: nn.Module) -> dict[str, str]:
    """alias name -> canonical name for parameters that are the same tensor (tied weights)."""
    first_by_id: dict[int, str] = {}
    aliases: dict[str, str] = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        key = id(tensor)
        if key in first_by_id:
            aliases[name] = first_by_id[key]
        else:
            first_by_id[key] = name
    return aliases


def assign_weights(
    model: nn.Module,
    tensors: Iterable[tuple[str, torch.Tensor]],
    *,
    source: str,
    dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
    release_source: bool = False,
    progress: bool = True,
    tied: dict[str, str] | None = None,
) -> None:
    """Copy/cast each ``(name, tensor)`` into ``model`` (built on meta), one tensor at a time.

    Raises ``CheckpointError`` listing unknown keys, wrong shapes and missing keys of ``source``.
    Tied parameters (found in ``model`` or listed in ``tied`` as alias -> canonical name) are
    filled once and shared again afterwards.
    """
    from tqdm.auto import tqdm

    slots = _tensor_slots(model)
    # building on meta can break ties (each registration makes a new meta Parameter), so the
    # file's own record of tied names counts too
    aliases = {**tied_aliases(model), **(tied or {})}
    expected = set(slots) - set(aliases)
    filled: set[str] = set()
    unknown: list[str] = []
    wrong_shape: list[str] = []
    device = torch.device(device)
    bar = tqdm(tensors, desc=f"loading {Path(source).name}", unit="tensor", disable=not progress, leave=False)
    for name, tensor in bar:
        name = aliases.get(name, name)
        if name not in slots:
            unknown.append(name)
            continue
        module, leaf, is_param = slots[name]
        current = module._parameters[leaf] if is_param else module._buffers[leaf]
        if tuple(current.shape) != tuple(tensor.shape):
            wrong_shape.append(f"{name}: file {list(tensor.shape)} vs model {list(current.shape)}")
            continue
        target_dtype = dtype if (dtype is not None and tensor.is_floating_point()) else tensor.dtype
        value = _copy_tensor(tensor, target_dtype, device, release_source)
        if is_param:
            module._parameters[leaf] = nn.Parameter(value, requires_grad=current.requires_grad)
        else:
            module._buffers[leaf] = value
        filled.add(name)
    missing = sorted(expected - filled)
    if unknown or wrong_shape or missing:
        parts = [f"checkpoint {source} does not fit the model:"]
        if unknown:
            parts.append(f"  unknown keys ({len(unknown)}): " + ", ".join(sorted(unknown)[:50]))
        if wrong_shape:
            parts.append(f"  wrong shapes ({len(wrong_shape)}): " + "; ".join(wrong_shape[:50]))
        if missing:
            parts.append(f"  missing keys ({len(missing)}): " + ", ".join(missing[:50]))
        raise CheckpointError("\n".join(parts))
    for alias, canonical in aliases.items():  # re-tie shared weights
        module, leaf, is_param = slots[alias]
        owner, owner_leaf, _ = slots[canonical]
        if is_param:
            module._parameters[leaf] = owner._parameters[owner_leaf]
        else:
            module._buffers[leaf] = owner._buffers[owner_leaf]
    # non-persistent buffers (e.g. rotary tables) were built on CPU; move them along
    for module in model.modules():
        for leaf, buffer in module._buffers.items():
            if buffer is not None and buffer.device != device:
                module._buffers[leaf] = buffer.to(device)


def parse_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    """``"bfloat16"``/``"bf16"``/``torch.bfloat16`` → ``torch.bfloat16``; ``None`` stays ``None``."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    names = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "half": "float16", "float": "float32"}
    name = names.get(str(dtype).lower(), str(dtype).lower()).removeprefix("torch.")
    value = getattr(torch, name, None)
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise ValueError(f"unknown dtype {dtype!r}; use float32, bfloat16 or float16")
    return value
