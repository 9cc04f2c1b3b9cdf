"""Loading and saving weights: the published ``pytorch_model.bin`` and our safetensors format.

Memory rule: never two full copies of the weights. The model is built with parameters on the
meta device, the published pickle is memory-mapped (``torch.load(mmap=True,
weights_only=True)``), and each tensor is copied/cast into place one at a time; the mapped
pages of a tensor are released as soon as it has been copied.
"""

from __future__ import annotations

import ctypes
import json
import mmap
import os
import pickle
import re
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from radfm.model.config import PerceiverConfig, RadFMConfig, VisionConfig

CONFIG_NAME = "config.json"
INDEX_NAME = "model.safetensors.index.json"
SINGLE_WEIGHTS_NAME = "model.safetensors"

# Parts of the published checkpoint that inference never uses.
OFFICIAL_DROPPED = re.compile(
    r"^embedding_layer\.(bert_model\.|bert_projection_fc\.|transformer_decoder|cls_head\.|output_upscaling\.)"
    r"|\.rotary_emb\.inv_freq$"
)
# The published file saves the shared token embedding twice; `embedding_layer.weight` is the
# one the published forward reads, so it is the copy we keep.
OFFICIAL_SHARED_DUPLICATE = "lang_model.model.embed_tokens.weight"
OFFICIAL_SHARED_SOURCE = "embedding_layer.weight"

# (published-key pattern, our key) — applied in order, first match wins.
_OFFICIAL_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(p), r)
    for p, r in [
        (r"^embedding_layer\.weight$", "language_model.model.embed_tokens.weight"),
        (r"^lang_model\.(.*)$", r"language_model.\1"),
        (r"^embedding_layer\.figure_token_weight$", "figure_token_weight"),
        (r"^embedding_layer\.fc\.(weight|bias)$", r"projection.\1"),
        (r"^embedding_layer\.vision_encoder\.to_patch_embedding\.1\.(.*)$", r"vision_encoder.patch_embedding.input_norm.\1"),
        (r"^embedding_layer\.vision_encoder\.to_patch_embedding\.2\.(.*)$", r"vision_encoder.patch_embedding.projection.\1"),
        (r"^embedding_layer\.vision_encoder\.to_patch_embedding\.3\.(.*)$", r"vision_encoder.patch_embedding.output_norm.\1"),
        (r"^embedding_layer\.vision_encoder\.pos_embedding\.row_embed\.(.*)$", r"vision_encoder.position_embedding.row.\1"),
        (r"^embedding_layer\.vision_encoder\.pos_embedding\.col_embed\.(.*)$", r"vision_encoder.position_embedding.col.\1"),
        (r"^embedding_layer\.vision_encoder\.pos_embedding\.dep_embed\.(.*)$", r"vision_encoder.position_embedding.depth.\1"),
        (r"^embedding_layer\.vision_encoder\.transformer\.layers\.(\d+)\.0\.norm\.(.*)$", r"vision_encoder.blocks.\1.attention_norm.\2"),
        (r"^embedding_layer\.vision_encoder\.transformer\.layers\.(\d+)\.0\.fn\.to_qkv\.(.*)$", r"vision_encoder.blocks.\1.attention.qkv.\2"),
        (r"^embedding_layer\.vision_encoder\.transformer\.layers\.(\d+)\.0\.fn\.to_out\.0\.(.*)$", r"vision_encoder.blocks.\1.attention.out.\2"),
        (r"^embedding_layer\.vision_encoder\.transformer\.layers\.(\d+)\.1\.norm\.(.*)$", r"vision_encoder.blocks.\1.mlp_norm.\2"),
        (r"^embedding_layer\.vision_encoder\.transformer\.layers\.(\d+)\.1\.fn\.net\.0\.(.*)$", r"vision_encoder.blocks.\1.mlp.fc1.\2"),
        (r"^embedding_layer\.vision_encoder\.transformer\.layers\.(\d+)\.1\.fn\.net\.3\.(.*)$", r"vision_encoder.blocks.\1.mlp.fc2.\2"),
        (r"^embedding_layer\.perceiver\.latents$", "perceiver.latents"),
        (r"^embedding_layer\.perceiver\.layers\.(\d+)\.0\.(norm_media|norm_latents|to_q|to_kv|to_out)\.(.*)$", r"perceiver.layers.\1.attention.\2.\3"),
        (r"^embedding_layer\.perceiver\.layers\.(\d+)\.1\.0\.(.*)$", r"perceiver.layers.\1.feed_forward.norm.\2"),
        (r"^embedding_layer\.perceiver\.layers\.(\d+)\.1\.1\.(.*)$", r"perceiver.layers.\1.feed_forward.fc1.\2"),
        (r"^embedding_layer\.perceiver\.layers\.(\d+)\.1\.3\.(.*)$", r"perceiver.layers.\1.feed_forward.fc2.\2"),
        (r"^embedding_layer\.perceiver\.norm\.(.*)$", r"perceiver.norm.\1"),
    ]
]


class CheckpointError(ValueError):
    """A weights file that does not fit the model (names the file and the offending keys)."""


def official_key_to_ours(key: str) -> str | None:
    """Our parameter name for a published key; ``None`` for parts we drop; ``KeyError`` if unknown."""
    if key == OFFICIAL_SHARED_DUPLICATE or OFFICIAL_DROPPED.search(key):
        return None
    for pattern, replacement in _OFFICIAL_RULES:
        if pattern.match(key):
            return pattern.sub(replacement, key)
    raise KeyError(key)


# ---- reading files safely -----------------------------------------------------------------
def load_weights_pickle(path: str | os.PathLike, *, mmap_file: bool = True) -> dict[str, torch.Tensor]:
    """``torch.load(weights_only=True)`` a plain state dict; anything else is refused with a clear error."""
    return _load_weights(path, mmap_file=mmap_file)[0]


def _load_weights(path: str | os.PathLike, *, mmap_file: bool = True) -> tuple[dict[str, torch.Tensor], bool]:
    """(state dict, whether its tensors are memory-mapped from the file)."""
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
            return _load_weights(path, mmap_file=False)
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


# ---- building without memory and assigning tensor by tensor --------------------------------
def build_empty_model(config: RadFMConfig):
    """``RadFM`` whose parameters live on the meta device (no memory); buffers stay real."""
    from accelerate import init_empty_weights

    from radfm.model.radfm import RadFM

    with init_empty_weights(include_buffers=False):
        return RadFM(config)


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


def _shared_groups(model: nn.Module) -> dict[str, str]:
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
    aliases = {**_shared_groups(model), **(tied or {})}
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


# ---- the published checkpoint ---------------------------------------------------------------
def _read_llm_config(llm_config: str | os.PathLike | dict) -> dict[str, Any]:
    if isinstance(llm_config, dict):
        values = dict(llm_config)
    else:
        path = Path(llm_config)
        if path.is_dir():
            path = path / "config.json"
        try:
            values = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"cannot read the LLM config {path}: {err}") from err
    values.setdefault("model_type", "llama")  # the published checkpoint wraps a LLaMA
    return values


def infer_official_sizes(state: dict[str, torch.Tensor]) -> tuple[VisionConfig, PerceiverConfig]:
    """Vision/perceiver sizes read off the published tensors (head width assumed 64, as published)."""
    prefix = "embedding_layer.vision_encoder."
    try:
        dim = state[prefix + "to_patch_embedding.2.weight"].shape[0]
        inner = state[prefix + "transformer.layers.0.0.fn.to_qkv.weight"].shape[0] // 3
        mlp_dim = state[prefix + "transformer.layers.0.1.fn.net.0.weight"].shape[0]
        tables = tuple(state[prefix + f"pos_embedding.{t}_embed.weight"].shape[0] for t in ("row", "col", "dep"))
        p_inner = state["embedding_layer.perceiver.layers.0.0.to_q.weight"].shape[0]
        p_ff = state["embedding_layer.perceiver.layers.0.1.1.weight"].shape[0]
    except KeyError as err:
        raise CheckpointError(f"not a published RadFM checkpoint: missing {err.args[0]}") from err
    depth = 1 + max(int(m.group(1)) for k in state if (m := re.match(re.escape(prefix) + r"transformer\.layers\.(\d+)\.", k)))
    p_depth = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"embedding_layer\.perceiver\.layers\.(\d+)\.", k)))
    dim_head = 64
    vision = VisionConfig(dim=dim, depth=depth, heads=inner // dim_head, dim_head=dim_head, mlp_dim=mlp_dim, pos_table=tables)
    perceiver = PerceiverConfig(depth=p_depth, heads=p_inner // dim_head, dim_head=dim_head, ff_mult=p_ff // dim)
    return vision, perceiver


def map_official_keys(keys: Iterable[str]) -> tuple[dict[str, str], list[str], list[str]]:
    """(published -> ours for kept keys, dropped keys, unknown keys)."""
    mapping: dict[str, str] = {}
    dropped: list[str] = []
    unknown: list[str] = []
    for key in keys:
        try:
            ours = official_key_to_ours(key)
        except KeyError:
            unknown.append(key)
            continue
        if ours is None:
            dropped.append(key)
        else:
            mapping[key] = ours
    return mapping, dropped, unknown


def load_official(
    bin_path: str | os.PathLike,
    *,
    llm_config: str | os.PathLike | dict,
    dtype: torch.dtype | str | None = None,
    device: str | torch.device = "cpu",
    config: RadFMConfig | None = None,
    progress: bool = True,
):
    """``RadFM`` from the published ``pytorch_model.bin`` (a plain state dict).

    Drops ``bert_model``, ``bert_projection_fc``, ``transformer_decoder*``, ``cls_head``,
    ``output_upscaling`` and ``rotary_emb.inv_freq``; keeps the shared token embedding once.
    Any other unexpected or missing key, or a wrong shape, raises ``CheckpointError`` by name.
    ``dtype`` (e.g. ``torch.bfloat16`` or ``"bfloat16"``) casts tensor by tensor.
    """
    dtype = parse_dtype(dtype)
    state, mapped = _load_weights(bin_path)
    mapping, _dropped, unknown = map_official_keys(state)
    if unknown:
        raise CheckpointError(
            f"checkpoint {bin_path} has {len(unknown)} unknown key(s) (not part of the published layout): "
            + ", ".join(unknown[:50])
        )
    if config is None:
        vision, perceiver = infer_official_sizes(state)
        config = RadFMConfig(llm=_read_llm_config(llm_config), vision=vision, perceiver=perceiver)
    model = build_empty_model(config)
    if OFFICIAL_SHARED_SOURCE not in state and OFFICIAL_SHARED_DUPLICATE in state:
        mapping[OFFICIAL_SHARED_DUPLICATE] = "language_model.model.embed_tokens.weight"

    def pairs() -> Iterator[tuple[str, torch.Tensor]]:
        for key, ours in mapping.items():
            yield ours, state[key]

    # releasing pages is only safe for tensors that live in the (private, read-only) file mapping
    assign_weights(model, pairs(), source=str(bin_path), dtype=dtype, device=device, release_source=mapped, progress=progress)
    del state
    return model.eval()


# ---- our format -----------------------------------------------------------------------------
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


def parse_size(size: int | str) -> int:
    """``"2GB"`` → 2·10⁹ bytes; ints pass through."""
    if isinstance(size, int):
        return size
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]i?B)?\s*", str(size), re.IGNORECASE)
    if not match:
        raise ValueError(f"cannot read shard size {size!r}; use e.g. '2GB' or a byte count")
    units = {None: 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}
    return int(float(match.group(1)) * units[match.group(2).upper() if match.group(2) else None])


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
    aliases = _shared_groups(model)
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


def load_pretrained(directory: str | os.PathLike, *, device: str | torch.device = "cpu", dtype=None, progress: bool = True):
    """``RadFM`` from a ``save_pretrained`` directory; attaches the tokenizer when one was saved."""
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
    model = build_empty_model(config)
    assign_weights(
        model, _safetensors_pairs(directory, weight_files), source=str(directory), dtype=parse_dtype(dtype),
        device=device, progress=progress, tied=index.get("aliases", {}),
    )
    if (directory / "tokenizer_config.json").is_file() or (directory / "tokenizer.json").is_file():
        from transformers import AutoTokenizer

        model.tokenizer = AutoTokenizer.from_pretrained(str(directory))
    return model.eval()


def convert(
    official_bin: str,
    llm_config: str,
    output: str,
    dtype: str = "float32",
    tokenizer: str | None = None,
    max_shard_size: str = "2GB",
) -> str:
    """Convert the published RadFM ``pytorch_model.bin`` into our safetensors model directory.

    Args:
        official_bin: path to the published ``pytorch_model.bin`` (a plain state dict).
        llm_config: the LLaMA ``config.json`` (file or folder) of the language model.
        output: directory to write (config.json, sharded safetensors, tokenizer if given).
        dtype: float32 (default), bfloat16 or float16; cast tensor by tensor.
        tokenizer: optional local tokenizer directory to store beside the weights; the image
            tokens are added if it lacks them.
        max_shard_size: largest safetensors shard, e.g. "2GB".
    Returns:
        The output directory.
    """
    model = load_official(official_bin, llm_config=llm_config, dtype=parse_dtype(dtype))
    tok = None
    if tokenizer is not None:
        from transformers import AutoTokenizer

        from radfm.model.tokenizer import add_image_tokens

        tok = AutoTokenizer.from_pretrained(tokenizer)
        base = add_image_tokens(tok, max_images=model.config.max_images)
        if base != model.config.base_vocab_size:
            raise ValueError(
                f"tokenizer {tokenizer} puts <image> at id {base} but the model's vocabulary is "
                f"{model.config.base_vocab_size}"
            )
    save_pretrained(model, output, tokenizer=tok, max_shard_size=max_shard_size)
    return output
