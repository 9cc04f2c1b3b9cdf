"""Our model folder format: ``config.json`` + (sharded) safetensors + index (+ tokenizer files).

Saving is atomic (a temp folder renamed into place); loading builds the network on the meta
device and assigns tensors one at a time (:mod:`radfm.model.weights`). The model class is
passed in, so this module does not import the network.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from radfm.model.config import RadFMConfig
from radfm.model.weights import assign_weights, build_empty, parse_dtype, parse_size, tied_aliases

CONFIG_NAME = "config.json"
INDEX_NAME = "model.safetensors.index.json"
SINGLE_WEIGHTS_NAME = "model.safetensors"


def _replace_directory(tmp_dir: Path, target: Path) -> None:
    """Move a finished temp directory into place (never leaves a half-written target)."""
    backup = None
    if target.exists():
        backup = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, backup)
    os.replace(tmp_dir, target)
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


def save_pretrained(model, directory: str | os.PathLike, *, tokenizer=None, max_shard_size: int | str = "2GB") -> None:
    """``config.json`` + ``model-XXXXX-of-YYYYY.safetensors`` + index (+ tokenizer files), atomically."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    limit = parse_size(max_shard_size)
    aliases = tied_aliases(model)
    tensors = {k: v for k, v in model.state_dict().items() if k not in aliases}
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, tensor in tensors.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > limit:
            shards.append({})
            size = 0
        shards[-1][name] = tensor.detach().contiguous()
        size += nbytes
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    try:
        weight_map: dict[str, str] = {}
        for i, shard in enumerate(shards, start=1):
            file_name = SINGLE_WEIGHTS_NAME if len(shards) == 1 else f"model-{i:05d}-of-{len(shards):05d}.safetensors"
            save_file({k: v.cpu() for k, v in shard.items()}, str(tmp_dir / file_name), metadata={"format": "pt"})
            weight_map.update({name: file_name for name in shard})
        index = {
            "metadata": {"total_size": sum(t.numel() * t.element_size() for t in tensors.values())},
            "weight_map": weight_map,
            "aliases": aliases,
        }
        (tmp_dir / INDEX_NAME).write_text(json.dumps(index, indent=2))
        model.config.to_json_file(tmp_dir / CONFIG_NAME)
        tokenizer = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp_dir))
        _replace_directory(tmp_dir, directory)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise


def _safetensors_pairs(directory: Path, weight_files: list[str]) -> Iterator[tuple[str, torch.Tensor]]:
    from safetensors import safe_open

    for file_name in weight_files:
        with safe_open(str(directory / file_name), framework="pt", device="cpu") as handle:
            for name in handle.keys():
                yield name, handle.get_tensor(name)


def load_pretrained(model_class: type[nn.Module], directory: str | os.PathLike, *, device: str | torch.device = "cpu", dtype=None, progress: bool = True):
    """``model_class`` (``RadFM``) from a ``save_pretrained`` directory; attaches the tokenizer when one was saved."""
    directory = Path(directory)
    if not (directory / CONFIG_NAME).is_file():
        raise FileNotFoundError(f"{directory} is not a RadFM model directory: no {CONFIG_NAME}")
    config = RadFMConfig.from_json_file(directory / CONFIG_NAME)
    if (directory / INDEX_NAME).is_file():
        index = json.loads((directory / INDEX_NAME).read_text())
        weight_files = sorted(set(index["weight_map"].values()))
    elif (directory / SINGLE_WEIGHTS_NAME).is_file():
        weight_files = [SINGLE_WEIGHTS_NAME]
        index = {}
    else:
        raise FileNotFoundError(f"{directory} holds no weights ({INDEX_NAME} or {SINGLE_WEIGHTS_NAME})")
    model = build_empty(model_class, config)
    assign_weights(
        model, _safetensors_pairs(directory, weight_files), source=str(directory), dtype=parse_dtype(dtype),
        device=device, progress=progress, tied=index.get("aliases", {}),
    )
    if (directory / "tokenizer_config.json").is_file() or (directory / "tokenizer.json").is_file():
        from transformers import AutoTokenizer

        model.tokenizer = AutoTokenizer.from_pretrained(str(directory))
    return model.eval()
