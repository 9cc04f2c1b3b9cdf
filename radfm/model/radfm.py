"""``RadFM``: 3D ViT → perceiver → projection, spliced into any Hugging Face causal LM.

``model(input_ids=[B, L], images=[[Tensor[3, H, W, D], ...], ...])`` → output with
``.logits [B, L, V]``; ``model.generate(...)`` → ``[B, new]`` token ids (KV cache, left padding).
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from radfm.model import official, pretrained
from radfm.model.config import RadFMConfig
from radfm.model.embedding import embed_with_images
from radfm.model.perceiver import PerceiverResampler
from radfm.model.tokenizer import TOKENS_PER_IMAGE
from radfm.model.vision import VisionEncoder3D, check_image_shape
from radfm.model.weights import build_empty

logger = logging.getLogger(__name__)


def _plain(tensor: torch.Tensor) -> torch.Tensor:
    """Drop MONAI MetaTensor metadata (cheaper stacking; the model needs values only)."""
    return tensor.as_tensor() if hasattr(tensor, "as_tensor") else tensor


def build_language_model(config: RadFMConfig) -> nn.Module:
    """A randomly initialised ``AutoModelForCausalLM`` from ``config.llm``."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_config(config.build_llm_config())


class RadFM(nn.Module):
    """The RadFM network around any decoder-only causal LM (``self.language_model``)."""

    def __init__(self, config: RadFMConfig, language_model: nn.Module | None = None) -> None:
        super().__init__()
        self.config = config
        self.language_model = language_model if language_model is not None else build_language_model(config)
        embed_rows = self.language_model.get_input_embeddings().weight.shape[0]
        if embed_rows != config.base_vocab_size:
            raise ValueError(
                f"language model has {embed_rows} embedding rows but config.llm['vocab_size'] is "
                f"{config.base_vocab_size}; they must match (image tokens start at V)"
            )
        self.vision_encoder = VisionEncoder3D(config.vision)
        self.perceiver = PerceiverResampler(config.vision.dim, config.perceiver)
        self.projection = nn.Linear(config.vision.dim, config.hidden_size)
        std = float(config.llm.get("initializer_range", 0.02))
        self.figure_token_weight = nn.Parameter(torch.randn(2, config.hidden_size) * std)
        self.tokenizer = None  # optional; saved with save_pretrained when attached
        self.vision_batch_size: int | None = None  # images per encoder call (None = whole group)

    # ---- construction helpers ------------------------------------------------------
    @classmethod
    def from_llm(cls, llm: str | os.PathLike | nn.Module, config: RadFMConfig | None = None, **llm_kwargs: Any) -> RadFM:
        """Wrap a causal LM (a model or a local directory) with fresh vision/perceiver weights.

        ``config`` supplies the vision/perceiver sizes (default: the published ones); its ``llm``
        entry is replaced by the language model's own config.
        """
        from transformers import AutoModelForCausalLM

        if not isinstance(llm, nn.Module):
            llm = AutoModelForCausalLM.from_pretrained(os.fspath(llm), **llm_kwargs)
        config = RadFMConfig() if config is None else config
        llm_dict = llm.config.to_dict()
        llm_dict["vocab_size"] = llm.get_input_embeddings().weight.shape[0]
        config = RadFMConfig(llm=llm_dict, vision=config.vision, perceiver=config.perceiver, max_images=config.max_images)
        return cls(config, language_model=llm)

    @classmethod
    def empty(cls, config: RadFMConfig) -> RadFM:
        """The network with parameters on the meta device (no memory), ready for weights to be assigned."""
        return build_empty(cls, config)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, *, device: str | torch.device = "cpu", dtype=None) -> RadFM:
        """Load our format (``save_pretrained``): config.json + sharded safetensors (+ tokenizer)."""
        return pretrained.load_pretrained(cls, directory, device=device, dtype=dtype)

    @classmethod
    def from_official(
        cls,
        bin_path: str | os.PathLike,
        *,
        llm_config: str | os.PathLike | dict,
        dtype=None,
        device: str | torch.device = "cpu",
        config: RadFMConfig | None = None,
        progress: bool = True,
    ) -> RadFM:
        """Load the published ``pytorch_model.bin`` (see ``radfm.model.official.load_official``).

        ``llm_config``: the LLaMA config (dict, config.json or its folder); ``dtype`` e.g.
        ``torch.bfloat16`` casts tensor by tensor; vision/perceiver sizes are read off the file.
        """
        return official.load_official(
            cls, bin_path, llm_config=llm_config, dtype=dtype, device=device, config=config, progress=progress
        )

    def save_pretrained(self, directory: str | os.PathLike, *, tokenizer=None, max_shard_size: int | str = "2GB") -> None:
        """Write config.json, sharded safetensors and the tokenizer (given or attached)."""
        pretrained.save_pretrained(self, directory, tokenizer=tokenizer, max_shard_size=max_shard_size)

    # ---- properties ------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """Device of the image-token rows (the "main" device under a device map)."""
        return self.figure_token_weight.device

    @property
    def dtype(self) -> torch.dtype:
        """Floating-point dtype of the vision side."""
        return self.figure_token_weight.dtype

    def gradient_checkpointing_enable(self) -> None:
        """Recompute activations in the backward pass (vision encoder and LLM)."""
        self.vision_encoder.gradient_checkpointing = True
        if hasattr(self.language_model, "gradient_checkpointing_enable"):
            self.language_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    # ---- images -----------------------------------------------------------------------
    def encode_images(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        """``N`` images ``[3, H, W, D]`` (any mix of sizes) → ``[N, 32, hidden]`` LLM-width tokens.

        Same-shaped images share one encoder call; images are never padded or resized.
        """
        vision_dtype = self.projection.weight.dtype
        out = torch.empty(len(images), TOKENS_PER_IMAGE, self.config.hidden_size, device=self.device, dtype=vision_dtype)
        groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for index, image in enumerate(images):
            check_image_shape(image.shape, self.config.vision, where=f"image {index}")
            groups[tuple(image.shape)].append(index)
        for indices in groups.values():
            step = self.vision_batch_size or len(indices)
            for start in range(0, len(indices), step):
                chunk = indices[start : start + step]
                pixels = torch.stack([_plain(images[i]) for i in chunk]).to(self.device, vision_dtype)
                latents = self.perceiver(self.vision_encoder(pixels))
                out[chunk] = self.projection(latents)
        return out

    def _normalise_images(self, images, batch_size: int) -> list[list[torch.Tensor]]:
        if images is None:
            return [[] for _ in range(batch_size)]
        if isinstance(images, torch.Tensor):  # published layout [B, S, 3, H, W, D]
            if images.ndim != 6:
                raise ValueError(f"images tensor must be [B, S, 3, H, W, D], got shape {list(images.shape)}")
            images = [list(sample) for sample in images]
        images = [list(sample) for sample in images]
        if len(images) != batch_size:
            raise ValueError(f"input_ids has {batch_size} prompt(s) but images has {len(images)} list(s)")
        return images

    def embed(self, input_ids: torch.Tensor, images=None) -> torch.Tensor:
        """``[B, L]`` ids + per-sample image lists → ``[B, L, hidden]`` input embeddings."""
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must be [B, L], got shape {list(input_ids.shape)}")
        batch, length = input_ids.shape
        context = self.config.max_context
        if context is not None and length > context:
            raise ValueError(f"prompt is {length} tokens long but the language model's context is {context} tokens")
        images = self._normalise_images(images, batch)
        vocab = self.config.base_vocab_size
        blocks_per_sample = (input_ids == vocab).sum(dim=1).tolist()
        for b, (blocks, sample_images) in enumerate(zip(blocks_per_sample, images)):
            if blocks != len(sample_images):
                raise ValueError(
                    f"sample {b}: prompt has {blocks} image placeholder block(s) (<image> tokens) "
                    f"but {len(sample_images)} image(s) were given"
                )
        flat = [image for sample in images for image in sample]
        encoded = self.encode_images(flat) if flat else None
        visual_tokens, start = [], 0
        for sample in images:
            n = len(sample)
            if n:
                visual_tokens.append(encoded[start : start + n].reshape(n * TOKENS_PER_IMAGE, -1))
            else:
                visual_tokens.append(self.projection.weight.new_zeros(0, self.config.hidden_size))
            start += n
        return embed_with_images(
            input_ids.to(self.device),
            self.language_model.get_input_embeddings(),
            self.figure_token_weight,
            visual_tokens,
            vocab,
        )

    # ---- forward / generate -----------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor,
        images=None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        **llm_kwargs: Any,
    ):
        """Language-model output (``.logits [B, L, V]``, ``.loss`` when ``labels`` are given).

        With left padding, positions are counted from each prompt's first real token.
        """
        inputs_embeds = self.embed(input_ids, images)
        if labels is not None and bool((labels >= self.config.base_vocab_size).any()):
            raise ValueError(
                f"labels contain ids >= {self.config.base_vocab_size} (image tokens); the LM head only predicts "
                "text ids, so set image-token positions to -100"
            )
        if attention_mask is not None:
            attention_mask = attention_mask.to(self.device)
            if position_ids is None:
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        return self.language_model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            labels=labels.to(self.device) if labels is not None else None,
            **llm_kwargs,
        )

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        images=None,
        attention_mask: torch.Tensor | None = None,
        max_new_tokens: int = 64,
        **generate_kwargs: Any,
    ) -> torch.Tensor:
        """``[B, new]`` new token ids via HF ``generate(inputs_embeds=...)`` (KV cache).

        Prompts must be left padded (``attention_mask`` 0 on the left). Greedy by default; pass
        ``num_beams``, ``do_sample``/``top_p``/``temperature``, ``streamer`` etc. as in HF.
        """
        inputs_embeds = self.embed(input_ids, images)
        if attention_mask is None:
            attention_mask = torch.ones(input_ids.shape, dtype=torch.long)
        attention_mask = attention_mask.to(self.device)
        if bool((attention_mask[:, -1] == 0).any()):
            raise ValueError("generate needs left-padded prompts: attention_mask is 0 at the last position")
        context = self.config.max_context
        if context is not None and input_ids.shape[1] + max_new_tokens > context:
            allowed = context - input_ids.shape[1]
            if allowed < 1:
                raise ValueError(
                    f"prompt is {input_ids.shape[1]} tokens long; the language model's context is {context} tokens, "
                    "leaving no room for new tokens"
                )
            logger.warning("max_new_tokens %d cut to %d to fit the %d-token context", max_new_tokens, allowed, context)
            max_new_tokens = allowed
        llm_config = self.language_model.config
        generate_kwargs.setdefault("pad_token_id", getattr(llm_config, "pad_token_id", None))
        generate_kwargs.setdefault("eos_token_id", getattr(llm_config, "eos_token_id", None))
        if "do_sample" not in generate_kwargs and not any(k in generate_kwargs for k in ("temperature", "top_p")):
            generate_kwargs["do_sample"] = False  # greedy (or beam) unless sampling is asked for
        return self.language_model.generate(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            max_new_tokens=max_new_tokens,
            **generate_kwargs,
        )
