"""The one loader: ``model, processor = radfm.load(path_or_preset, ...)``.

Every command, the service, the bundles and the Slicer path load models through :func:`load`.
A model folder is a transformers folder: ``config.json`` (``model_type: radfm``), safetensors,
and the processor files (``processor_config.json`` with the grid the model was trained at,
tokenizer files, ``chat_template.jinja``). The weights are loaded by transformers' ``from_pretrained``
(meta-device init, memory-mapped safetensors, ``device_map``/``max_memory``/offload,
bitsandbytes through ``quantization_config``); the processor by ``RadFMProcessor.from_pretrained``.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from radfm.model.config import RadFMConfig
from radfm.model.folder import WEIGHT_FILES, check_model_folder
from radfm.model.processing import RadFMImageProcessor, RadFMProcessor
from radfm.model.radfm import RadFMForConditionalGeneration

__all__ = ["LoadedModel", "load", "resolve_model_dir", "demo_model_dir", "check_model_folder", "tiny_tokenizer",
           "tiny_processor"]

# A few sentences so the "tiny" preset has a working tokenizer without any download.
_TINY_CORPUS = [
    "Findings: a large bright lesion in the left upper lung. Impression: pneumothorax.",
    "Is this image captured by CT? yes no MRI X-ray ultrasound mammography PET",
    "Does the patient have pneumonia? The lesion is small and dark, right lower region.",
    "Please caption this scan with findings. No abnormality detected. Normal study.",
    "What is the modality of the input scan? Please make diagnosis based on the images.",
    "Determine the disease starting with the radiological features and the ultimate diagnosis.",
]


def tiny_tokenizer(max_images: int = 10, base_vocab_size: int | None = None):
    """A small BPE tokenizer (trained here, deterministic) for the ``tiny`` preset.

    ``base_vocab_size``: put ``<image>`` at this id (filler tokens in between), for a model with
    a larger vocabulary.
    """
    from radfm.model.tokenizer import train_tokenizer

    return train_tokenizer(_TINY_CORPUS * 4, vocab_size=400, max_images=max_images, base_vocab_size=base_vocab_size)


def tiny_processor(**image_options: Any) -> RadFMProcessor:
    """The ``tiny`` preset's processor: :func:`tiny_tokenizer` + the standard grid (or ``image_options``)."""
    return RadFMProcessor(RadFMImageProcessor(**image_options), tiny_tokenizer())


def demo_model_dir() -> Path:
    """The demo model shipped in the RadFM bundle (the default of generate/serve/info)."""
    from radfm.utils.resources import bundle_dir

    return bundle_dir("radfm") / "models" / "demo"


def resolve_model_dir(model: str | os.PathLike | None) -> Path:
    """``model`` or the demo model; a clear error when neither exists."""
    if model is None:
        demo = demo_model_dir()
        if (demo / "config.json").is_file():
            return demo
        raise FileNotFoundError(
            f"no --model given and the demo model {demo} does not exist; "
            "pass --model DIR (a `save_pretrained` folder, see `radfm convert`)"
        )
    path = Path(model)
    if not path.exists():
        raise FileNotFoundError(f"model folder {path} does not exist; pass --model DIR (a `save_pretrained` folder, "
                                "see `radfm convert`)")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} is not a RadFM model folder (no config.json); convert weights with `radfm convert`")
    return path


class LoadedModel(NamedTuple):
    """What :func:`load` returns: unpacks as ``model, processor = radfm.load(...)``.

    ``processor`` (a :class:`RadFMProcessor`) holds the tokenizer (``processor.tokenizer``) and the
    scan preprocessing at the model's grid (``processor.image_processor``).
    """

    model: RadFMForConditionalGeneration
    processor: RadFMProcessor


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto``: the GPU when there is one, else the CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device | str) -> torch.dtype:
    """``auto``: bf16 on a GPU that supports it, else fp16 on GPU, fp32 on CPU."""
    from radfm.model.weights import parse_dtype

    if dtype in (None, "auto"):
        if torch.device(device).type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32  # also on CPUs with native bf16: fp32 stays the CPU default
    resolved = parse_dtype(dtype)
    from radfm.model.cpu_bf16 import warn_slow_cpu_bf16

    warn_slow_cpu_bf16(resolved, device)  # asked for bf16 on a CPU that emulates it: say so (once)
    return resolved


def parse_max_memory(max_memory: str | dict | None) -> dict[int | str, int | str] | None:
    """``"0=22GiB,1=22GiB,cpu=64GiB"`` -> ``{0: "22GiB", 1: "22GiB", "cpu": "64GiB"}``; dicts pass (keys normalised)."""
    if max_memory is None or max_memory == "":
        return None
    if isinstance(max_memory, str):
        pairs = [item.split("=", 1) for item in max_memory.split(",") if item.strip()]
        if any(len(pair) != 2 for pair in pairs):
            raise ValueError(f"max_memory {max_memory!r}: expected 'DEVICE=SIZE,…' such as '0=22GiB,cpu=64GiB'")
        max_memory = {key.strip(): value.strip() for key, value in pairs}
    parsed: dict[int | str, int | str] = {}
    for key, value in max_memory.items():
        key = str(key).strip().removeprefix("cuda:")
        if not (key.isdigit() or key in ("cpu", "disk", "mps")):
            raise ValueError(f"max_memory device {key!r}: expected a GPU index, 'cpu' or 'disk'")
        parsed[int(key) if key.isdigit() else key] = value
    return parsed


def quantization_config(quantization: str | None, dtype: torch.dtype):
    """``"8bit"``/``"4bit"`` -> a transformers ``BitsAndBytesConfig`` for the language model (vision side kept).

    Runs on a CUDA GPU, or on the CPU with bitsandbytes' CPU backend (tests/model/test_quantized_loading.py,
    bitsandbytes 0.50.2); a backend bitsandbytes lacks is refused by bitsandbytes itself.
    """
    if quantization is None:
        return None
    if quantization not in ("8bit", "4bit"):
        raise ValueError(f"quantization {quantization!r}: expected '8bit' or '4bit'")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as error:
        raise RuntimeError("quantized loading needs bitsandbytes: pip install bitsandbytes") from error
    from transformers import BitsAndBytesConfig

    skip = ["vision_encoder", "perceiver", "projection", "lm_head"]
    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=dtype, llm_int8_skip_modules=skip)


@contextlib.contextmanager
def _quiet_bar_off_terminal():
    """transformers' "Loading weights" bar off while stderr is not a terminal (it would write ``\\r`` lines into logs)."""
    from transformers.utils import logging as hf_logging

    from radfm.utils.progress import is_terminal

    switch = hf_logging.is_progress_bar_enabled() and not is_terminal(sys.stderr)
    if switch:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if switch:
            hf_logging.enable_progress_bar()


def load(
    path_or_preset: str | os.PathLike,
    *,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype | None = "auto",
    device_map: str | dict | None = None,
    max_memory: str | dict | None = None,
    offload_folder: str | None = None,
    quantization: str | None = None,
    weights: bool = True,
) -> LoadedModel:
    """A RadFM model and its processor from a model folder or the ``"tiny"`` preset.

    Args:
        path_or_preset: a ``save_pretrained`` folder (``radfm convert`` writes one from the
            published checkpoint) or ``"tiny"`` (random small model with a small trained tokenizer,
            for tests and demos).
        device: ``auto`` (GPU if any), ``cpu``, ``cuda``, ``cuda:N``; ignored with ``device_map``.
        dtype: ``auto`` (bf16 on a GPU that has it, fp16 on other GPUs, fp32 on CPU), ``float32``,
            ``bfloat16``, ``float16``.
        device_map: ``auto``/``balanced``/``balanced_low_0``/``sequential`` or ``{module: device}``:
            spread the model over GPUs, CPU RAM and disk (transformers/accelerate).
        max_memory: caps per device for ``device_map``, e.g. ``"0=22GiB,1=22GiB,cpu=64GiB"``.
        offload_folder: folder for weights a device map puts on disk.
        quantization: ``"8bit"`` or ``"4bit"`` for the language model (bitsandbytes: a CUDA GPU, or its CPU backend).
        weights: ``False`` builds the folder's architecture (its ``config.json``) with fresh
            weights and leaves the loading to the caller: a MONAI bundle's ``network_def`` does
            this and its ``CheckpointLoader`` then loads ``models/model.pt``.

    Returns ``(model, processor)`` (:class:`LoadedModel`): scans go through
    ``processor(text=..., images=...)`` or ``processor.image_processor``, at the grid the folder records.
    """
    name = os.fspath(path_or_preset)
    path = Path(name)
    if name == "tiny" and not path.exists():
        if device_map is not None or quantization is not None:
            raise ValueError("the 'tiny' preset loads on one device: device_map and quantization need a model folder")
        processor = tiny_processor()
        model = RadFMForConditionalGeneration(RadFMConfig.preset("tiny", vocab_size=processor.base_vocab_size))
        target = resolve_device(device)
        model = model.to(device=target, dtype=resolve_dtype(dtype, target))
    elif path.is_dir():
        check_model_folder(path, weights=weights)  # names the missing/bad file before anything is built
        processor = RadFMProcessor.from_pretrained(str(path))
        if not weights:
            if device_map is not None or quantization is not None:
                raise ValueError("weights=False builds the network on one device: device_map and quantization need weights")
            target = resolve_device(device)
            model = RadFMForConditionalGeneration(RadFMConfig.from_json_file(path / "config.json"))
            model = model.to(device=target, dtype=resolve_dtype(dtype, target))
        else:
            model = _load_weights(path, device=device, dtype=dtype, device_map=device_map, max_memory=max_memory,
                                  offload_folder=offload_folder, quantization=quantization)
    elif path.is_file() and path.suffix == ".bin":
        raise ValueError(
            f"{path} looks like the published checkpoint; convert it first: "
            "radfm convert OFFICIAL_BIN --llm-config CONFIG_JSON --output DIR"
        )
    elif name == "radfm-14b":
        raise ValueError("the radfm-14b preset has no weights here; convert the published checkpoint with `radfm convert`")
    else:
        raise ValueError(f"{name!r} is neither a model directory nor a preset ('tiny')")
    if processor.base_vocab_size != model.config.base_vocab_size:
        raise ValueError(f"{name}: the tokenizer puts <image> at id {processor.base_vocab_size} but the model's "
                         f"vocabulary is {model.config.base_vocab_size}")
    return LoadedModel(model.eval(), processor)


VISION_SIDE = ("vision_encoder", "perceiver", "projection")
EMBEDDINGS = "language_model.model.embed_tokens"


def _device_of(device_map: dict[str, Any], module_name: str) -> Any:
    """Device of ``module_name`` under ``device_map`` (longest matching prefix; "" is the root)."""
    best, device = -1, None
    for key, value in device_map.items():
        if (key == "" or module_name == key or module_name.startswith(key + ".")) and len(key) > best:
            best, device = len(key), value
    return device


def plan_device_map(model: RadFMForConditionalGeneration, strategy: str | dict, max_memory: str | dict | None, dtype: torch.dtype) -> dict:
    """The device map ``from_pretrained(device_map=strategy, max_memory=...)`` computes for ``model`` in ``dtype``.

    transformers' own planner (no GPU needed; e.g. a meta-device 14B model for ``radfm info --plan``).
    """
    from transformers.integrations.accelerate import _get_device_map

    if isinstance(strategy, dict):
        check_vision_placement(strategy)
        return dict(strategy)
    return _get_device_map(model.to(dtype), strategy, parse_max_memory(max_memory), None)


def check_vision_placement(device_map: dict[str, Any]) -> None:
    """A hand-written device map must keep the vision side with the token embeddings (image tokens are
    spliced into them); ``ValueError`` naming the module and both devices otherwise."""
    main = _device_of(device_map, EMBEDDINGS)
    for name in VISION_SIDE:
        where = _device_of(device_map, name)
        if main is not None and where is not None and where != main:
            raise ValueError(f"device_map puts {name} on {where} but {EMBEDDINGS} on {main}; they must match")


def _safetensors_mappings() -> list[tuple[int, int]]:
    """Address ranges of this process's private mappings of ``*.safetensors`` files (Linux; else none)."""
    ranges = []
    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            for line in maps:
                parts = line.split()
                # private (copy-on-write) mappings only: dropped pages are re-read from the file
                if len(parts) >= 6 and parts[-1].endswith(".safetensors") and parts[1].endswith("p"):
                    low, high = (int(x, 16) for x in parts[0].split("-"))
                    ranges.append((low, high))
    except OSError:
        return []
    return ranges


def _cast_releasing_pages(model: RadFMForConditionalGeneration, dtype: torch.dtype) -> RadFMForConditionalGeneration:
    """Cast floating tensors to ``dtype`` one at a time, dropping each source's mapped file pages.

    After the cast of a memory-mapped tensor its pages are released (``madvise``), so the peak
    RSS is the cast weights plus one tensor, not the file plus the cast weights. Tied tensors
    stay tied.
    """
    from radfm.model.weights import _release_mapped_pages

    mapped = _safetensors_mappings()
    done: dict[int, torch.Tensor] = {}
    for module in model.modules():
        for slots, is_param in ((module._parameters, True), (module._buffers, False)):
            for name, tensor in list(slots.items()):
                if tensor is None or not tensor.is_floating_point() or tensor.dtype == dtype:
                    continue
                if id(tensor) not in done:
                    value = tensor.detach().to(dtype)
                    done[id(tensor)] = nn.Parameter(value, requires_grad=tensor.requires_grad) if is_param else value
                    start = tensor.data_ptr()
                    end = start + tensor.numel() * tensor.element_size()
                    # only pages of a safetensors file mapping, never heap memory; nothing has written to
                    # the freshly loaded weights, and the source is dropped right after its cast
                    if any(low <= start and end <= high for low, high in mapped):
                        _release_mapped_pages(tensor.detach())
                slots[name] = done[id(tensor)]
    model.config.dtype = dtype
    return model


def _load_weights(folder: Path, *, device, dtype, device_map, max_memory, offload_folder, quantization) -> RadFMForConditionalGeneration:
    """transformers' ``from_pretrained`` with our device/dtype defaults; errors name the folder's files."""
    kwargs: dict[str, Any] = {}
    cast_to = None
    if device_map is None and quantization is None:
        target = resolve_device(device)
        resolved = resolve_dtype(dtype, target)
        if target.type == "cpu":
            # on the CPU, load in the stored dtype (the safetensors stay memory-mapped, no copy) and
            # cast tensor by tensor below, so a cast never holds the file's pages and the copy at once
            kwargs.update(dtype="auto", device_map=None)
            cast_to = resolved
        else:
            kwargs.update(dtype=resolved, device_map=target)
    else:
        gpu = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
        resolved = resolve_dtype(dtype, gpu)
        kwargs.update(dtype=resolved, device_map=device_map or "auto", max_memory=parse_max_memory(max_memory),
                      offload_folder=offload_folder, quantization_config=quantization_config(quantization, resolved))
    if isinstance(kwargs.get("device_map"), dict):
        check_vision_placement(kwargs["device_map"])
    try:
        with _quiet_bar_off_terminal():
            model = RadFMForConditionalGeneration.from_pretrained(str(folder), **kwargs)
        return _cast_releasing_pages(model, cast_to) if cast_to is not None else model
    except Exception as error:  # noqa: BLE001 — safetensors/accelerate raise their own types; name the files
        if isinstance(error, (FileNotFoundError, ValueError)) and str(folder) in str(error):
            raise
        raise ValueError(f"cannot load the weights of {folder} ({', '.join(n for n in WEIGHT_FILES if (folder / n).is_file())}): "
                         f"{type(error).__name__}: {error}") from error
