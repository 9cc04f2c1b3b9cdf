"""``RadFMForConditionalGeneration``: 3D ViT → perceiver → projection, spliced into any causal LM.

A transformers ``PreTrainedModel`` + ``GenerationMixin``: ``save_pretrained``/``from_pretrained``
(sharded safetensors, ``dtype``, ``device_map``, ``max_memory``, ``offload_folder``,
``quantization_config``), ``generate`` (streamers, stopping criteria, beams, KV cache) and
gradient checkpointing are transformers' own.

``model(input_ids=[B, L], images=[[Tensor[3, H, W, D], ...], ...])`` → ``CausalLMOutputWithPast``
with ``.logits [B, L, V]``; ``model.generate(input_ids, images=..., attention_mask=...)`` →
``[B, new]`` token ids (left padding).
"""

from __future__ import annotations

import copy
import logging
import os
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from transformers import AutoModelForCausalLM, GenerationMixin, PreTrainedModel

from radfm.model import official
from radfm.model.config import RadFMConfig
from radfm.model.embedding import embed_with_images
from radfm.model.perceiver import PerceiverResampler
from radfm.model.recompute import checkpoint_kwargs
from radfm.model.tokenizer import TOKENS_PER_IMAGE
from radfm.model.vision import VisionEncoder3D, check_image_shape

logger = logging.getLogger(__name__)


def _plain(tensor: torch.Tensor) -> torch.Tensor:
    """Drop MONAI MetaTensor metadata (cheaper stacking; the model needs values only)."""
    return tensor.as_tensor() if hasattr(tensor, "as_tensor") else tensor


class RadFMPreTrainedModel(PreTrainedModel):
    """Shared transformers class attributes of the RadFM models."""

    config_class = RadFMConfig
    base_model_prefix = "radfm"
    main_input_name = "input_ids"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    # the vision side runs as one piece next to the token embeddings (image tokens are spliced
    # into them); the language model adds its own decoder-layer class
    _no_split_modules = ["VisionEncoder3D", "PerceiverResampler"]
    _skip_keys_device_placement = ["cache", "past_key_values"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = False

    def _init_weights(self, module: nn.Module) -> None:
        """PyTorch's default init for the vision side (what the published code used), randn latents."""
        if isinstance(module, (nn.Linear, nn.LayerNorm, nn.Embedding)):
            module.reset_parameters()
        elif isinstance(module, PerceiverResampler):
            nn.init.normal_(module.latents)
        elif isinstance(module, RadFMForConditionalGeneration):
            std = float(getattr(self.config.text_config, "initializer_range", 0.02) or 0.02)
            nn.init.normal_(module.figure_token_weight, std=std)


def _no_remote_code(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` with ``trust_remote_code=False``: a model folder is data, its Python never runs."""
    if kwargs.get("trust_remote_code"):
        raise ValueError("trust_remote_code=True is refused: a RadFM model folder is data, never code")
    return {**kwargs, "trust_remote_code": False}


class RadFMForConditionalGeneration(RadFMPreTrainedModel, GenerationMixin):
    """The RadFM network around any decoder-only causal LM (``self.language_model``)."""

    def __init__(self, config: RadFMConfig, language_model: nn.Module | None = None) -> None:
        super().__init__(config)
        if language_model is None:
            # a config's auto_map never runs code (transformers would ask on stdin)
            language_model = AutoModelForCausalLM.from_config(config.text_config, trust_remote_code=False)
        embed_rows = language_model.get_input_embeddings().weight.shape[0]
        if embed_rows != config.base_vocab_size:
            raise ValueError(
                f"language model has {embed_rows} embedding rows but text_config.vocab_size is "
                f"{config.base_vocab_size}; they must match (image tokens start at V)"
            )
        self.vision_encoder = VisionEncoder3D(config.vision_config)
        self.perceiver = PerceiverResampler(config.vision_config.dim, config.perceiver_config)
        self.projection = nn.Linear(config.vision_config.dim, config.hidden_size)
        std = float(getattr(config.text_config, "initializer_range", 0.02) or 0.02)
        self.figure_token_weight = nn.Parameter(torch.randn(2, config.hidden_size) * std)
        # registered after the vision side: a device map fills devices in module order, so the
        # vision side lands on the first (main) device, next to the token embeddings
        self.language_model = language_model
        self.vision_batch_size: int | None = None  # images per encoder call (None = whole group)
        self.post_init()

    # ---- construction helpers ------------------------------------------------------
    @classmethod
    def from_llm(cls, llm: str | os.PathLike | nn.Module, config: RadFMConfig | None = None,
                 **llm_kwargs: Any) -> RadFMForConditionalGeneration:
        """Wrap a causal LM (a model or a local directory) with fresh vision/perceiver weights.

        ``config`` supplies the vision/perceiver sizes (default: the published ones); its text
        config is replaced by the language model's own config.
        """
        if not isinstance(llm, nn.Module):
            llm = AutoModelForCausalLM.from_pretrained(os.fspath(llm), **_no_remote_code(llm_kwargs))
        config = RadFMConfig() if config is None else config
        llm_dict = llm.config.to_dict()
        llm_dict["vocab_size"] = llm.get_input_embeddings().weight.shape[0]
        config = RadFMConfig(text_config=llm_dict, vision_config=config.vision_config.to_dict(),
                             perceiver_config=config.perceiver_config.to_dict(), max_images=config.max_images)
        return cls(config, language_model=llm)

    @classmethod
    def empty(cls, config: RadFMConfig) -> RadFMForConditionalGeneration:
        """The network with parameters on the meta device (no memory), ready for weights to be assigned.

        Buffers (e.g. rotary tables) stay real, so a caller can materialise the parameters anywhere.
        """
        from radfm.model.weights import build_empty

        return build_empty(cls, config)

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
    ) -> RadFMForConditionalGeneration:
        """Load the published ``pytorch_model.bin`` (see ``radfm.model.official.load_official``).

        ``llm_config``: the LLaMA config (dict, config.json or its folder); ``dtype`` e.g.
        ``torch.bfloat16`` casts tensor by tensor; vision/perceiver sizes are read off the file.
        """
        return official.load_official(
            cls, bin_path, llm_config=llm_config, dtype=dtype, device=device, config=config, progress=progress
        )

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args: Any, **kwargs: Any):
        """transformers' ``from_pretrained``; an old-format folder is refused naming the converter."""
        from radfm.model.folder import check_model_folder, check_weights_cover

        if os.path.isdir(os.fspath(pretrained_model_name_or_path)):
            check_model_folder(pretrained_model_name_or_path, processor=False)
            check_weights_cover(pretrained_model_name_or_path, cls)  # headers only, before anything is allocated
        return super().from_pretrained(pretrained_model_name_or_path, *args, **_no_remote_code(kwargs))

    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, tokenizer=None, processor=None,
                        **kwargs: Any) -> None:
        """transformers' ``save_pretrained``, plus the processor so the folder loads on its own.

        Args:
            save_directory: the model folder to write.
            tokenizer: with no ``processor``, a processor at the standard grid is built around it and saved
                (``RadFMImageProcessor.save_grid`` records another grid).
            processor: the :class:`~radfm.model.processing.RadFMProcessor` to save beside the weights
                (``radfm.load`` returns it with the model); the model holds no processor of its own.
        """
        super().save_pretrained(save_directory, *args, **kwargs)
        if processor is None and tokenizer is not None:
            from radfm.model.processing import RadFMImageProcessor, RadFMProcessor

            processor = RadFMProcessor(RadFMImageProcessor(), tokenizer)
        elif processor is not None and tokenizer is not None and tokenizer is not processor.tokenizer:
            processor = type(processor)(processor.image_processor, tokenizer, chat_template=processor.chat_template)
        if processor is not None:
            processor.save_pretrained(os.fspath(save_directory))

    # ---- transformers plumbing -------------------------------------------------------
    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module | None:
        return self.language_model.get_output_embeddings()

    def get_decoder(self) -> nn.Module:
        return self.language_model.get_decoder()

    def activation_checkpointing_enable(self, activation_checkpointing_kwargs: dict | None = None,
                                        mode: str = "full", **kwargs: Any) -> None:
        """Recompute activations in the backward pass (ViT blocks and LLM decoder layers); non-reentrant.

        ``mode``: ``"full"`` keeps only each block's input and recomputes the whole block;
        ``"selective"`` also keeps the outputs of the matrix products and attention inside the
        blocks and recomputes only the cheap elementwise ops (norms, activations, residual adds,
        rotary), so the backward pass redoes almost no FLOPs, for a smaller memory saving
        (``radfm.model.recompute``). Other keywords go to transformers' method (``every_n_layers``,
        ``offload``).
        """
        kwargs_ = checkpoint_kwargs(mode, activation_checkpointing_kwargs)
        super().activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs_, **kwargs)

    # ---- properties ------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """Device of the image-token rows (the "main" device under a device map)."""
        return self.figure_token_weight.device

    @property
    def dtype(self) -> torch.dtype:
        """Floating-point dtype of the vision side."""
        return self.figure_token_weight.dtype

    # ---- images -----------------------------------------------------------------------
    def encode_images(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        """``N`` images ``[3, H, W, D]`` (any mix of sizes) → ``[N, 32, hidden]`` LLM-width tokens.

        Same-shaped images share one encoder call; images are never padded or resized.
        """
        vision_dtype = self.projection.weight.dtype
        out = torch.empty(len(images), TOKENS_PER_IMAGE, self.config.hidden_size, device=self.device, dtype=vision_dtype)
        groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for index, image in enumerate(images):
            check_image_shape(image.shape, self.config.vision_config, where=f"image {index}")
            groups[tuple(image.shape)].append(index)
        for indices in groups.values():
            step = self.vision_batch_size or len(indices)
            for start in range(0, len(indices), step):
                chunk = indices[start : start + step]
                # a list, not a torch.stack copy (48 MiB per 256²×64 scan that autograd may keep)
                pixels = [_plain(images[i]).to(self.device, vision_dtype) for i in chunk]
                latents = self.perceiver(self.vision_encoder(pixels))
                out[chunk] = self.projection(latents).to(out.device)
        return out

    def _normalise_images(self, images, batch_size: int) -> list[list[torch.Tensor]]:
        if images is None:
            return [[] for _ in range(batch_size)]
        if isinstance(images, torch.Tensor):  # published layout [B, S, 3, H, W, D]
            if images.ndim != 6:
                raise ValueError(f"images tensor must be [B, S, 3, H, W, D], got shape {list(images.shape)}")
        images = [list(sample) for sample in images]
        if len(images) != batch_size:
            raise ValueError(f"input_ids has {batch_size} prompt(s) but images has {len(images)} list(s)")
        return images

    def embed(self, input_ids: torch.Tensor, images=None) -> torch.Tensor:
        """``[B, L]`` ids + per-sample image lists → ``[B, L, hidden]`` input embeddings."""
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must be [B, L], got shape {list(input_ids.shape)}")
        batch, _ = input_ids.shape
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
        embeddings = self.language_model.get_input_embeddings()
        return embed_with_images(
            input_ids.to(embeddings.weight.device if embeddings.weight.device.type != "meta" else self.device),
            embeddings,
            self.figure_token_weight,
            visual_tokens,
            vocab,
        )

    def _check_context(self, length: int) -> None:
        context = self.config.max_context
        if context is not None and length > context:
            raise ValueError(f"prompt is {length} tokens long but the language model's context is {context} tokens")

    # ---- forward / generate -----------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        images=None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        cache=None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **llm_kwargs: Any,
    ):
        """Language-model output (``CausalLMOutputWithPast``: ``.logits [B, L, V]``, ``.loss`` with ``labels``).

        ``logits_to_keep`` (transformers'): ``0`` all positions; ``k`` the last ``k`` (``generate``'s
        prefill asks for 1, as the argument is named here); a ``[B, L]`` bool mask gives ``[N, V]`` (the trainer's
        loss positions).

        ``images``: per prompt, a list of ``[3, H, W, D]`` tensors (sizes may differ), or the
        published ``[B, S, 3, H, W, D]`` tensor. With left padding, positions are counted from
        each prompt's first real token.
        """
        if inputs_embeds is None:
            if input_ids is None:
                raise ValueError("forward needs input_ids or inputs_embeds")
            if cache is None or images is not None:
                self._check_context(input_ids.shape[1])
            inputs_embeds = self.embed(input_ids, images)
        if labels is not None and bool((labels >= self.config.base_vocab_size).any()):
            raise ValueError(
                f"labels contain ids >= {self.config.base_vocab_size} (image tokens); the LM head only predicts "
                "text ids, so set image-token positions to -100"
            )
        if attention_mask is not None:
            attention_mask = attention_mask.to(inputs_embeds.device)
            if position_ids is None and cache is None:
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        return self.language_model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            labels=labels.to(inputs_embeds.device) if labels is not None else None,
            cache=cache,
            use_cache=use_cache,
            logits_to_keep=logits_to_keep,
            **llm_kwargs,
        )

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor | None = None,
        images=None,
        attention_mask: torch.Tensor | None = None,
        max_new_tokens: int | None = None,
        **generate_kwargs: Any,
    ) -> torch.Tensor:
        """``[B, new]`` new token ids: transformers' ``generate`` on the spliced prompt embeddings.

        Prompts must be left padded (``attention_mask`` 0 on the left). Greedy by default; pass
        ``num_beams``, ``do_sample``/``top_p``/``temperature``, ``streamer``, ``stopping_criteria``
        etc. as in transformers, or one ``generation_config``. ``max_new_tokens`` (default: the
        ``generation_config``'s, else 64) is cut to fit the LM's context (logged).
        """
        config = generate_kwargs.pop("generation_config", None)
        if max_new_tokens is None:
            max_new_tokens = getattr(config, "max_new_tokens", None) or 64
        if config is not None:  # the length travels inside the config (transformers: not both)
            config = copy.deepcopy(config)
            generate_kwargs["generation_config"] = config
        if input_ids is None or "inputs_embeds" in generate_kwargs:
            return super().generate(input_ids=input_ids, attention_mask=attention_mask,
                                    **_length(config, max_new_tokens), **generate_kwargs)
        self._check_context(input_ids.shape[1])
        inputs_embeds = self.embed(input_ids, images)
        if attention_mask is None:
            attention_mask = torch.ones(input_ids.shape, dtype=torch.long)
        attention_mask = attention_mask.to(inputs_embeds.device)
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
        if not {"do_sample", "temperature", "top_p", "generation_config"} & set(generate_kwargs):
            generate_kwargs["do_sample"] = False  # greedy (or beam) unless sampling is asked for
        return super().generate(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                **_length(config, max_new_tokens), **generate_kwargs)


def _length(config: Any, max_new_tokens: int) -> dict[str, int]:
    """``max_new_tokens`` set on ``config`` when there is one (and ``min_new_tokens`` kept within it), else a kwarg."""
    if config is None:
        return {"max_new_tokens": max_new_tokens}
    config.max_new_tokens = max_new_tokens
    if config.min_new_tokens is not None and config.min_new_tokens > max_new_tokens:
        config.min_new_tokens = max_new_tokens  # cut to the context, as max_new_tokens was
    return {}

