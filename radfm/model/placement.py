"""Placing a saved RadFM on ordinary hardware: dtype, device maps over GPUs/CPU/disk, 8-/4-bit.

* ``dtype``: bf16/fp16 halve the weights (the 14B model: ~24 GiB instead of ~49 GiB).
* ``device_map``: accelerate places the language model's decoder layers over GPUs, CPU RAM
  and disk (``max_memory`` caps each), e.g. the 14B model on 2x24 GB GPUs. The vision
  encoder, perceiver, projection and image-token rows always sit with the token embeddings
  (the image tokens are spliced into those embeddings), on the "main" device.
* ``quantization``: "8bit"/"4bit" through bitsandbytes (accelerate's ``load_and_quantize_model``)
  for the language model's Linear layers; needs ``bitsandbytes`` and a CUDA GPU.

Used by :func:`radfm.model.loading.load` (the one loader); the model class is passed in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from radfm.model.pretrained import INDEX_NAME, SINGLE_WEIGHTS_NAME
from radfm.model.weights import parse_dtype

VISION_SIDE = ("vision_encoder", "perceiver", "projection", "figure_token_weight")
DEVICE_MAP_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto``: the GPU when there is one, else the CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device | str) -> torch.dtype:
    """``auto``: bf16 on a GPU that supports it, else fp16 on GPU, fp32 on CPU."""
    if dtype in (None, "auto"):
        if torch.device(device).type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32  # also on CPUs with native bf16: fp32 stays the CPU default
    resolved = parse_dtype(dtype)
    from radfm.utils.cpu import warn_slow_cpu_bf16

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


def _checkpoint_location(model_dir: Path) -> Path:
    for name in (INDEX_NAME, SINGLE_WEIGHTS_NAME):
        if (model_dir / name).is_file():
            return model_dir / name
    raise FileNotFoundError(f"{model_dir} holds no weights ({INDEX_NAME} or {SINGLE_WEIGHTS_NAME})")


def _module_bytes(module: torch.nn.Module, dtype: torch.dtype) -> int:
    size = torch.finfo(dtype).bits // 8
    return sum(p.numel() * size for p in module.parameters())


def plan_device_map(model, strategy: str | dict, max_memory: dict | None, dtype: torch.dtype) -> dict[str, Any]:
    """Device map for a (meta) ``RadFM``: the LLM split by accelerate, the vision side with the embeddings.

    ``strategy`` is an accelerate strategy name or a ready map (returned unchanged after a check
    that the vision side shares the embeddings' device).
    """
    from accelerate import infer_auto_device_map
    from accelerate.utils import get_balanced_memory, get_max_memory

    llm = model.language_model
    embed_name = _embedding_module_name(llm)
    if isinstance(strategy, dict):
        device_map = dict(strategy)
        main = _device_of(device_map, f"language_model.{embed_name}")
        for name in VISION_SIDE:
            if _device_of(device_map, name) != main:
                raise ValueError(f"device_map puts {name} on {_device_of(device_map, name)} but the token embeddings on {main}; they must match")
        return device_map
    if strategy not in DEVICE_MAP_STRATEGIES:
        raise ValueError(f"device_map {strategy!r}: expected one of {DEVICE_MAP_STRATEGIES} or a dict")
    no_split = list(getattr(llm, "_no_split_modules", None) or [])
    budget = get_max_memory(max_memory)
    if strategy in ("auto", "balanced", "balanced_low_0"):
        budget = get_balanced_memory(llm, max_memory=budget, no_split_module_classes=no_split, dtype=dtype,
                                     low_zero=strategy == "balanced_low_0")
    # the vision side joins the first device that will hold the embeddings: reserve room for it
    vision_bytes = sum(_module_bytes(getattr(model, n), dtype) for n in VISION_SIDE[:3]) + model.figure_token_weight.numel() * 4
    first = next(iter(budget))
    budget = dict(budget)
    budget[first] = max(0, _as_bytes(budget[first]) - vision_bytes)
    llm_map = infer_auto_device_map(llm, max_memory=budget, no_split_module_classes=no_split, dtype=dtype)
    device_map = {("language_model." + k if k else "language_model"): v for k, v in llm_map.items()}
    main = _device_of(device_map, f"language_model.{embed_name}")
    if main == "disk":
        raise ValueError("max_memory leaves no room for the token embeddings on a GPU or in CPU RAM")
    device_map.update({name: main for name in VISION_SIDE})
    return device_map


def _embedding_module_name(llm) -> str:
    embeddings = llm.get_input_embeddings()
    for name, module in llm.named_modules():
        if module is embeddings:
            return name
    raise ValueError("cannot find the language model's input embeddings module")


def _device_of(device_map: dict[str, Any], module_name: str) -> Any:
    """Device of ``module_name`` under ``device_map`` (longest matching prefix)."""
    best, device = -1, None
    for key, value in device_map.items():
        if (key == "" or module_name == key or module_name.startswith(key + ".")) and len(key) > best:
            best, device = len(key), value
    if device is None:
        raise ValueError(f"device_map does not place {module_name!r}")
    return device


def _as_bytes(size: int | str) -> int:
    from accelerate.utils import convert_file_size_to_int

    return size if isinstance(size, int) else convert_file_size_to_int(size)


def load_placed(
    model_class: type[torch.nn.Module],
    model_dir: Path,
    *,
    dtype: str | torch.dtype | None,
    device_map: str | dict | None,
    max_memory: str | dict | None,
    offload_folder: str | None,
    quantization: str | None,
) -> torch.nn.Module:
    """``model_class`` from a ``save_pretrained`` folder, spread by ``device_map`` and/or quantized."""
    from radfm.model.config import RadFMConfig
    from radfm.model.weights import build_empty

    config = RadFMConfig.from_json_file(model_dir / "config.json")
    gpu = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    dtype = resolve_dtype(dtype, gpu)
    max_memory = parse_max_memory(max_memory)
    model = build_empty(model_class, config)
    device_map = plan_device_map(model, device_map or "auto", max_memory, dtype)
    if "disk" in set(device_map.values()) and offload_folder is None:
        raise ValueError("the device map offloads weights to disk: pass --offload_folder DIR")
    if quantization is not None:
        return _load_quantized(model, model_dir, quantization, device_map, max_memory, offload_folder, dtype)
    import warnings

    from accelerate import load_checkpoint_and_dispatch

    with warnings.catch_warnings():
        # figure_token_weight is a parameter of the root module, not a submodule: accelerate
        # places it while loading but warns that the key names no submodule
        warnings.filterwarnings("ignore", message="The following device_map keys do not match")
        return load_checkpoint_and_dispatch(
            model, str(_checkpoint_location(model_dir)), device_map=device_map,
            offload_folder=offload_folder, dtype=dtype, strict=True,
        )


def _load_quantized(model, model_dir: Path, quantization: str, device_map, max_memory, offload_folder, dtype):
    """8-/4-bit language model via bitsandbytes; the vision side stays in ``dtype``."""
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as error:
        raise RuntimeError("quantized loading needs bitsandbytes: pip install bitsandbytes (CUDA GPU required)") from error
    if not torch.cuda.is_available():
        raise RuntimeError("quantized loading (bitsandbytes) needs a CUDA GPU")
    if quantization not in ("8bit", "4bit"):
        raise ValueError(f"quantization {quantization!r}: expected '8bit' or '4bit'")
    from accelerate.utils import BnbQuantizationConfig, load_and_quantize_model

    skip = [*VISION_SIDE, "lm_head"]
    if quantization == "8bit":
        config = BnbQuantizationConfig(load_in_8bit=True, skip_modules=skip, torch_dtype=dtype)
    else:
        config = BnbQuantizationConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                       bnb_4bit_compute_dtype=dtype, skip_modules=skip, torch_dtype=dtype)
    return load_and_quantize_model(
        model, config, weights_location=str(model_dir), device_map=device_map, max_memory=max_memory,
        offload_folder=offload_folder,
    )
