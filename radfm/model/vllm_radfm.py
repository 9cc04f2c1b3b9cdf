"""RadFM as a vLLM model, registered through vLLM's plugin entry point (``vllm.general_plugins``).

With the package installed in vLLM's environment (``make install-vllm``, ``.venv-vllm``), vLLM calls
:func:`register` in each of its processes; a RadFM model folder (``config.json`` with
``"architectures": ["RadFMForConditionalGeneration"]``) then loads with ``vllm.LLM(model=DIR)`` or
``python -m vllm.entrypoints.openai.api_server --model DIR``.

What runs where:

* **image embeddings**: the 3D ViT, the perceiver and the projection are this package's modules
  (``radfm.model.vision``, ``radfm.model.perceiver``), run by the same ``encode_images`` as the
  transformers model; each scan gives 34 vectors: ``<image>``'s learned row, the 32 projected latents,
  ``</image>``'s row (what ``radfm.model.embedding`` splices in for transformers);
* **language model**: vLLM's own implementation of the decoder the folder's ``text_config`` names
  (``LlamaForCausalLM`` for the published 14B and the demo model; any decoder vLLM supports);
* **weights**: the folder's safetensors, names mapped by :data:`WEIGHT_PREFIXES`;
* **prompt**: each ``<image>`` id ``V`` is replaced by ``image_token_ids(V, s)`` (vLLM's prompt
  update; ``radfm.model.processing``); all 34 positions take the image's vectors.

Inputs (for the engine that calls vLLM):

* multimodal items are preprocessed scans, ``torch.Tensor [3, H, W, D]`` float32 at the model's grid
  (``processor.image_processor.process_one`` / ``RadFMImageProcessor.from_model_dir(DIR)``: reading,
  guards and preprocessing stay in ``radfm.transforms``), given as a list:
  ``{"multi_modal_data": {"image": [scan, ...]}}``; 2D and 3D scans of different sizes may share a
  prompt. A PIL image (vLLM's OpenAI server decodes ``image_url`` parts to one) goes through the
  same image processor as an array ``[C, H, W]``.
* the prompt: for exactly the ids ``RadFMProcessor`` builds, pass
  ``{"prompt_token_ids": prompt_token_ids(tokenizer, text, len(scans), base_vocab_size=V)}``:
  :func:`radfm.model.processing.placeholder_prompt_ids` applies the processor's text rules (a prompt
  without ``<image>`` gets one per scan in front; otherwise one per scan is required; BOS first).
  A text prompt (``{"prompt": text}``) also works: vLLM tokenises it with the folder's tokenizer in
  one call; this model then puts BOS first when the tokenizer did not, and prepends the missing
  ``<image>`` ids by the same rule (``placeholders_to_prepend``). The text between placeholders can
  tokenise differently in one call than segment by segment (SentencePiece's leading space), so the
  ids route is the one with parity to ``radfm generate``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from vllm.config import VllmConfig
from vllm.model_executor.models.interfaces import MultiModalEmbeddings, SupportsMultiModal
from vllm.model_executor.models.utils import (
    AutoWeightsLoader,
    WeightsMapper,
    init_vllm_registered_model,
    maybe_prefix,
)
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.multimodal.inputs import MultiModalFieldConfig
from vllm.multimodal.parse import ImageProcessorItems, MultiModalDataParser
from vllm.multimodal.processing import (
    BaseDummyInputsBuilder,
    BaseMultiModalProcessor,
    BaseProcessingInfo,
    PromptReplacement,
    PromptUpdateDetails,
)

from radfm.model.config import RadFMConfig
from radfm.model.perceiver import PerceiverResampler
from radfm.model.processing import (
    RadFMImageProcessor,
    image_token_ids,
    placeholder_prompt_ids,
    placeholders_to_prepend,
)
from radfm.model.radfm import RadFMForConditionalGeneration
from radfm.model.tokenizer import BLOCK_LENGTH, IMAGE_PLACEHOLDER
from radfm.model.vision import VisionEncoder3D

ARCHITECTURE = "RadFMForConditionalGeneration"
# Our folder's tensor names (RadFMForConditionalGeneration.save_pretrained) -> this module's names.
# The vision side keeps its names; the language model's keys go to vLLM's decoder, whose own
# load_weights stacks q/k/v and gate/up.
WEIGHT_PREFIXES = {
    "vision_encoder.": "vision_encoder.",
    "perceiver.": "perceiver.",
    "projection.": "projection.",
    "figure_token_weight": "figure_token_weight",
    "language_model.model.": "language_model.model.",
    "language_model.lm_head.": "language_model.lm_head.",
}


def prompt_token_ids(tokenizer, text: str, num_images: int, *, base_vocab_size: int) -> list[int]:
    """The ids to give vLLM for ``text`` with ``num_images`` scans (each ``<image>`` one id ``V``).

    Args:
        tokenizer: the model folder's tokenizer (``processor.tokenizer``).
        text: the user's prompt, with or without ``<image>`` placeholders.
        num_images: scans sent with it (``multi_modal_data["image"]``).
        base_vocab_size: ``V`` (``processor.base_vocab_size``).

    Returns:
        Token ids; vLLM's prompt update expands each ``V`` to the scan's 34 ids.
    """
    return placeholder_prompt_ids(tokenizer, text, num_images, base_vocab_size=base_vocab_size)


def _scan_items(data: Any) -> list[Any] | None:
    """A scan (``[3, H, W, D]``) or a list of scans -> a list (vLLM reads a 4D tensor as a batch of 2D images)."""
    if data is None:
        return None
    if isinstance(data, (torch.Tensor, np.ndarray)) and data.ndim == 4:
        return [data]
    if isinstance(data, (list, tuple)):
        return list(data)
    return [data]


class RadFMDataParser(MultiModalDataParser):
    """vLLM's parser, with scans ``[3, H, W, D]`` (never embeddings, never a batch of 2D images)."""

    def _parse_image_data(self, data: Any):
        items = _scan_items(data)
        if items is None:
            return None
        if any(isinstance(i, torch.Tensor) and i.ndim == 4 for i in items):
            return ImageProcessorItems(items)
        return super()._parse_image_data(items)


class RadFMProcessingInfo(BaseProcessingInfo):
    """What vLLM needs to know about RadFM's inputs: at most ``max_images`` scans, 34 tokens each."""

    def get_hf_config(self) -> RadFMConfig:
        return self.ctx.get_hf_config(RadFMConfig)

    def get_data_parser(self) -> MultiModalDataParser:
        return RadFMDataParser(expected_hidden_size=self._get_expected_hidden_size(),
                               allow_missing_mm_embeddings=self.allow_missing_mm_embeddings)

    def get_supported_mm_limits(self) -> Mapping[str, int | None]:
        return {"image": int(self.get_hf_config().max_images)}

    def get_mm_max_tokens_per_item(self, seq_len: int, mm_counts: Mapping[str, int]) -> Mapping[str, int]:
        return {"image": BLOCK_LENGTH}

    @property
    def base_vocab_size(self) -> int:
        """``V``: the id of ``<image>``."""
        return self.get_hf_config().base_vocab_size

    def image_processor(self) -> RadFMImageProcessor:
        """The folder's preprocessing at its grid (``processor_config.json``)."""
        cached = getattr(self, "_image_processor", None)
        if cached is None:
            cached = self._image_processor = RadFMImageProcessor.from_model_dir(Path(self.ctx.model_config.model))
        return cached


class RadFMDummyInputsBuilder(BaseDummyInputsBuilder[RadFMProcessingInfo]):
    """Profiling inputs: the largest scan the grid allows (3D at ``max_depth``, or 2D if larger)."""

    def get_dummy_text(self, mm_counts: Mapping[str, int]) -> str:
        return IMAGE_PLACEHOLDER * mm_counts.get("image", 0)

    def get_dummy_mm_data(self, seq_len: int, mm_counts: Mapping[str, int], mm_options: Any = None):
        grid = self.info.image_processor().grid
        shapes = [(3, *grid["size_2d"], 4), (3, *grid["size_3d"], grid["max_depth"])]
        shape = max(shapes, key=lambda s: int(np.prod(s)))
        return {"image": [torch.zeros(shape) for _ in range(mm_counts.get("image", 0))]}


class RadFMMultiModalProcessor(BaseMultiModalProcessor[RadFMProcessingInfo]):
    """Scans -> ``images`` (one tensor per scan); each ``<image>`` id -> its 34-id block."""

    def _call_hf_processor(self, hf_data: Mapping[str, object], hf_kwargs: Mapping[str, object]):
        from transformers import BatchFeature

        processor = self.info.image_processor()
        scans = []
        for item in hf_data.get("images", []):
            if not isinstance(item, (torch.Tensor, np.ndarray)):  # a PIL image: [rows, cols(, C)] -> [C, rows, cols]
                array = np.asarray(item, dtype=np.float32)
                item = array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0)
            scan = processor.process_one(item)
            scans.append(scan.as_tensor() if hasattr(scan, "as_tensor") else scan)
        processor.check_images(scans)
        return BatchFeature({"images": scans})

    def _get_mm_fields_config(self, hf_inputs, hf_processor_mm_kwargs) -> Mapping[str, MultiModalFieldConfig]:
        return {"images": MultiModalFieldConfig.batched("image")}

    def _block(self, item_idx: int) -> PromptUpdateDetails:
        return PromptUpdateDetails.from_seq(image_token_ids(self.info.base_vocab_size, item_idx))

    def _get_prompt_updates(self, mm_items, hf_processor_mm_kwargs, out_mm_kwargs):
        return [PromptReplacement(modality="image", target=[self.info.base_vocab_size], replacement=self._block)]

    def _recompute_cached_prompt_update(self, cached_update, new_item_idx: int):
        # the block's ids depend on the scan's place in the prompt, not only on the scan
        return replace(cached_update, item_idx=new_item_idx, content=self._block(new_item_idx))

    def apply(self, inputs, timing_ctx):
        """BOS first and one ``<image>`` id per scan, by the processor's rule, before vLLM's own steps."""
        tokenizer = self.info.get_tokenizer()
        prompt = list(inputs.prompt)
        bos = getattr(tokenizer, "bos_token_id", None)
        if bos is not None and (not prompt or prompt[0] != bos):
            prompt = [bos, *prompt]
        vocab = self.info.base_vocab_size
        count = inputs.mm_data_items.get_all_counts().get("image", 0)
        missing = placeholders_to_prepend(prompt.count(vocab), count)
        start = 1 if bos is not None else 0
        prompt[start:start] = [vocab] * missing
        inputs.prompt = prompt
        return super().apply(inputs, timing_ctx)


@MULTIMODAL_REGISTRY.register_processor(RadFMMultiModalProcessor, info=RadFMProcessingInfo,
                                        dummy_inputs=RadFMDummyInputsBuilder)
class RadFMForConditionalGenerationVLLM(nn.Module, SupportsMultiModal):
    """RadFM for vLLM: our vision side + vLLM's decoder for ``text_config``."""

    hf_to_vllm_mapper = WeightsMapper(orig_to_new_prefix=WEIGHT_PREFIXES)
    vision_batch_size = None  # read by encode_images: all same-shaped scans of a batch in one call

    @classmethod
    def get_placeholder_str(cls, modality: str, i: int) -> str | None:
        if modality.startswith("image"):
            return IMAGE_PLACEHOLDER
        raise ValueError(f"RadFM takes images (scans) only, not {modality}")

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "") -> None:
        super().__init__()
        config: RadFMConfig = vllm_config.model_config.hf_config
        self.config = config
        # ids V.. are not rows of the decoder's embedding: vLLM masks them before the lookup
        self.configure_mm_token_handling(vocab_size=config.base_vocab_size, mm_token_ids=[config.base_vocab_size])
        with self._mark_tower_model(vllm_config, "image"):
            self.vision_encoder = VisionEncoder3D(config.vision_config)
            self.perceiver = PerceiverResampler(config.vision_config.dim, config.perceiver_config)
            self.projection = nn.Linear(config.vision_config.dim, config.hidden_size)
        self.figure_token_weight = nn.Parameter(torch.empty(2, config.hidden_size))
        text_config = config.text_config
        if not getattr(text_config, "architectures", None):
            from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

            text_config.architectures = [MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[text_config.model_type]]
        with self._mark_language_model(vllm_config):
            self.language_model = init_vllm_registered_model(
                vllm_config=vllm_config, hf_config=text_config, prefix=maybe_prefix(prefix, "language_model"))
        self.make_empty_intermediate_tensors = self.language_model.make_empty_intermediate_tensors

    @property
    def device(self) -> torch.device:
        """Where the vision side runs (read by ``encode_images``)."""
        return self.figure_token_weight.device

    def embed_multimodal(self, **kwargs: object) -> MultiModalEmbeddings:
        """``images`` (scans ``[3, H, W, D]``, a list or a stacked tensor) -> per scan ``[34, hidden]``."""
        images = kwargs.get("images")
        if images is None:
            return []
        scans = list(images.unbind(0)) if isinstance(images, torch.Tensor) else list(images)
        latents = RadFMForConditionalGeneration.encode_images(self, scans)  # the transformers model's own code
        figure = self.figure_token_weight.to(latents.dtype)
        return [torch.cat([figure[0:1], latents[i], figure[1:2]]) for i in range(len(scans))]

    def embed_input_ids(self, input_ids: torch.Tensor, multimodal_embeddings: MultiModalEmbeddings | None = None,
                        *, is_multimodal: torch.Tensor | None = None) -> torch.Tensor:
        """vLLM's embedding step; image-token ids outside a scan's block (a prompt without scans that names
        them: vLLM passes it by our processor) become the pad id rather than rows past the decoder's table."""
        stray = input_ids >= self.config.base_vocab_size
        if is_multimodal is not None:
            stray &= ~is_multimodal.to(device=stray.device, dtype=torch.bool)
        return super().embed_input_ids(input_ids.masked_fill(stray, 0), multimodal_embeddings,
                                       is_multimodal=is_multimodal)

    def forward(self, input_ids: torch.Tensor | None, positions: torch.Tensor, intermediate_tensors=None,
                inputs_embeds: torch.Tensor | None = None, **kwargs: object):
        if intermediate_tensors is not None:
            inputs_embeds = None
        return self.language_model.model(input_ids, positions, intermediate_tensors, inputs_embeds=inputs_embeds)

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor | None:
        return self.language_model.compute_logits(hidden_states)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        return AutoWeightsLoader(self).load_weights(weights, mapper=self.hf_to_vllm_mapper)


def register() -> None:
    """vLLM's plugin hook (entry point ``vllm.general_plugins: radfm``): RadFM folders load in vLLM."""
    from vllm import ModelRegistry

    import radfm  # noqa: F401  (registers RadFMConfig with transformers' AutoConfig)

    if ARCHITECTURE not in ModelRegistry.get_supported_archs():
        ModelRegistry.register_model(ARCHITECTURE, f"{__name__}:RadFMForConditionalGenerationVLLM")


__all__: Sequence[str] = ("register", "prompt_token_ids", "RadFMForConditionalGenerationVLLM", "WEIGHT_PREFIXES")
