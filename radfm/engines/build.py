"""Building blocks the bundle configs call: the model and its processor, LoRA, the optimizer."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)


def load_model(
    model: str | os.PathLike = "tiny",
    *,
    tokenizer_dir: str | os.PathLike | None = None,
    config_overrides: dict[str, Any] | None = None,
    gradient_checkpointing: bool | str = False,
    seed: int | None = 0,
    device: str | torch.device = "cpu",
    vision_init: str | os.PathLike | None = None,
    image_grid: dict[str, Any] | None = None,
):
    """The model to train and its processor, as :func:`radfm.load` returns them (``(model, processor)``).

    ``model``: a ``save_pretrained`` directory (weights loaded), a ``RadFMConfig`` JSON file or a
    preset name (random init; then ``tokenizer_dir`` gives the tokenizer, default the preset's
    own small tokenizer). ``config_overrides``: ``{"vision": {...}, "perceiver": {...}, "llm": {...}}``
    entries merged into a fresh config (ignored for a weights directory). ``seed`` fixes the init.
    ``vision_init``: a safetensors file of vision-encoder weights to start from (e.g. an encoder
    first trained as a classifier); shapes must match the config. ``image_grid``: the grid the
    run feeds the model; for a saved model folder it must be the grid recorded there
    (``radfm.model.processing.GridMismatchError`` otherwise). ``gradient_checkpointing``: ``False``,
    ``True``/``"full"`` or ``"selective"`` (:func:`checkpointing_mode`).

    The processor (tokenizer + the grid this run trains at) is what ``SavePretrained`` writes beside
    the weights and what validation generates through; a bundle config names it ``@processor``.
    """
    from radfm.model.config import RadFMConfig
    from radfm.model.loading import LoadedModel, load
    from radfm.model.processing import RadFMImageProcessor, RadFMProcessor
    from radfm.model.radfm import RadFMForConditionalGeneration

    source = Path(os.fspath(model))
    if source.is_dir():
        # the grid the folder's processor records; checked before the weights load
        RadFMImageProcessor.from_model_dir(source).check_same_grid(image_grid, model=f"the model in {source}")
        net, processor = load(source, device="cpu", dtype="float32")
        if tokenizer_dir is not None:
            processor = RadFMProcessor(processor.image_processor, _load_tokenizer(tokenizer_dir))
    else:
        if tokenizer_dir is not None:
            tokenizer = _load_tokenizer(tokenizer_dir)
        else:
            from radfm.model.loading import tiny_tokenizer

            tokenizer = tiny_tokenizer()
        base = tokenizer.convert_tokens_to_ids("<image>")
        if source.is_file():
            config = RadFMConfig.from_json_file(source)
        elif os.sep in os.fspath(model) or os.fspath(model).endswith(".json"):
            raise FileNotFoundError(f"model {os.fspath(model)!r}: no such model directory or config file")
        else:
            config = RadFMConfig.preset(os.fspath(model))
        parts = {"llm": config.text_config.to_dict(), "vision": config.vision_config.sizes(),
                 "perceiver": config.perceiver_config.to_dict()}
        for part, entries in (config_overrides or {}).items():
            if part not in parts:
                raise ValueError(f"config_overrides key {part!r}: expected 'vision', 'perceiver' or 'llm'")
            parts[part].update(entries)
        parts["llm"]["vocab_size"] = base
        if seed is not None:
            torch.manual_seed(seed)
        net = RadFMForConditionalGeneration(RadFMConfig(text_config=parts["llm"], vision_config=parts["vision"],
                                       perceiver_config=_perceiver_sizes(parts["perceiver"]),
                                       max_images=config.max_images))
        # the grid this run trains at travels with the weights (SavePretrained writes the processor)
        processor = RadFMProcessor(RadFMImageProcessor(**(image_grid or {})), tokenizer)
    if vision_init is not None:
        from safetensors.torch import load_file

        state = load_file(os.fspath(vision_init))
        missing, unexpected = net.vision_encoder.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"vision_init {vision_init}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    mode = checkpointing_mode(gradient_checkpointing)
    if mode is not None:
        net.activation_checkpointing_enable(mode=mode)
    return LoadedModel(net.to(device), processor)


def checkpointing_mode(value: bool | str | None) -> str | None:
    """The bundle's ``gradient_checkpointing`` entry → ``None`` (off), ``"full"`` or ``"selective"``.

    ``"full"`` (= ``true``) recomputes each ViT block and LLM decoder layer in the backward pass;
    ``"selective"`` keeps their matmul/attention outputs and recomputes only elementwise ops
    (``RadFMForConditionalGeneration.activation_checkpointing_enable``).
    """
    from radfm.model.recompute import CHECKPOINTING_MODES

    if value is None or value is False or value in ("none", "off", "false"):
        return None
    if value is True or value in ("full", "true"):
        return "full"
    if value in CHECKPOINTING_MODES:
        return value
    raise ValueError(
        f"gradient_checkpointing: expected false, true, 'full' or 'selective', got {value!r}"
    )


def export_state_dict(model_dir: str | os.PathLike, output: str | os.PathLike) -> Path:
    """Write a saved model folder's weights as a plain state dict (``torch.save``; loads with ``weights_only=True``).

    This is how ``bundles/radfm/models/model.pt`` is made from the demo model folder:
    ``python -c "from radfm.engines.build import export_state_dict as e; e('bundles/radfm/models/demo',
    'bundles/radfm/models/model.pt')"``.
    """
    from radfm.model.loading import load
    from radfm.utils.io import atomic_path

    model = load(model_dir, device="cpu", dtype="float32").model
    output = Path(os.fspath(output))
    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(output) as tmp:
        torch.save({k: v.contiguous() for k, v in model.state_dict().items()}, tmp)
    return output


def _perceiver_sizes(values: dict[str, Any]) -> dict[str, Any]:
    keys = ("depth", "heads", "dim_head", "num_latents", "ff_mult")
    return {k: values[k] for k in keys if k in values}


def _load_tokenizer(tokenizer_dir: str | os.PathLike):
    from transformers import AutoTokenizer

    from radfm.model.tokenizer import add_image_tokens

    tokenizer = AutoTokenizer.from_pretrained(os.fspath(tokenizer_dir), trust_remote_code=False)
    add_image_tokens(tokenizer)
    return tokenizer


def apply_lora(model, *, rank: int = 8, alpha: int = 16, dropout: float = 0.05, target_modules: Any = "all-linear"):
    """Wrap ``model.language_model`` with peft LoRA adapters; the base LLM weights stay frozen.

    The vision encoder, perceiver and projection still train in full. Returns ``model``.
    """
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules,
                        task_type="CAUSAL_LM")
    model.language_model = get_peft_model(model.language_model, config)
    return model


def make_optimizer(model: torch.nn.Module, lr: float = 1e-4, weight_decay: float = 0.0,
                   betas: tuple[float, float] = (0.9, 0.95), fused: bool | None = True) -> torch.optim.AdamW:
    """AdamW over every parameter that can train (LoRA: adapters only in the LLM).

    Parameters frozen later by the freeze schedule stay in the optimizer; they receive no
    gradient while frozen and are skipped. ``fused=True`` (the default) uses torch's fused AdamW
    kernel (one pass over each tensor, CPU and CUDA; its cost against the per-tensor loop is
    measured in docs/training.md) when every parameter is a floating tensor on a CPU or CUDA device, else the
    default implementation; ``None`` leaves the choice to torch, ``False`` forces the loop.
    """
    params = [p for n, p in model.named_parameters() if p.requires_grad or "language_model" in n]
    if any("lora_" in n for n, _ in model.named_parameters()):
        params = [p for n, p in model.named_parameters() if "language_model" not in n or "lora_" in n]
    if fused and not all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params):
        fused = None
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=betas, fused=fused)


def optimizer_steps(data_loader: Any, epochs: int, accumulation_steps: int = 1) -> int:
    """Optimizer steps in a run: ``epochs × ceil(len(loader) / accumulation_steps)``."""
    return max(1, epochs * -(-len(data_loader) // accumulation_steps))
