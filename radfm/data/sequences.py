"""Training sequences: token ids, labels, per-token loss weights and attention mask.

Weights follow the paper (eq. 3–4):

- instruction samples: instruction tokens 0 (BOS and image blocks included), response
  tokens 1, response tokens that overlap a medical term 3, the appended EOS 1;
- interleaved samples: text tokens 1, medical-term tokens 3, image blocks 0, BOS 0, EOS 1.

``labels[i] = input_ids[i]`` where ``loss_weights[i] > 0`` and ``-100`` elsewhere (the
ignore index of ``torch.nn.functional.cross_entropy``). Labels and weights are aligned
with ``input_ids`` (the Hugging Face convention): the trainer shifts them by one so that
position ``i`` predicts token ``i + 1``; the weighted loss is ``Σ w·CE / Σ w``.

Medical terms are matched on the text (word boundaries) and mapped to tokens through the
fast tokenizer's character offsets, with array arithmetic instead of per-token loops.
Sequences longer than ``max_length`` are cut at the end, never inside a 34-id image block:
a block that would be cut is dropped whole, and ``num_images`` says how many images remain.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from radfm.data.manifest import Sample
from radfm.data.medical_terms import MedicalTermMatcher, default_matcher
from radfm.model.processing import block_positions, encode_prompt, image_token_ids, split_on_placeholders

IGNORE_INDEX = -100
INSTRUCTION_WEIGHT = 0.0
RESPONSE_WEIGHT = 1.0
TERM_WEIGHT = 3.0


def weighted_text_ids(tokenizer, text: str, matcher: MedicalTermMatcher | None, base_weight: float,
                      term_weight: float) -> tuple[np.ndarray, np.ndarray]:
    """Ids of ``text`` (no special tokens) and a weight per id: ``term_weight`` for tokens
    overlapping a medical term, ``base_weight`` otherwise. Shapes ``[T]``, ``[T]``."""
    if not text:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = np.asarray(encoded["input_ids"], dtype=np.int64)
    weights = np.full(len(ids), base_weight, dtype=np.float32)
    spans = matcher.spans(text) if matcher is not None else []
    if spans and len(ids):
        # characters inside a term -> 1; a token overlaps a term iff its [start, end) holds one
        marks = np.zeros(len(text) + 1, dtype=np.int64)
        for start, end in spans:
            marks[start] += 1
            marks[end] -= 1
        inside = (np.cumsum(marks)[:-1] > 0).astype(np.int64)
        prefix = np.concatenate([[0], np.cumsum(inside)])
        offsets = np.asarray(encoded["offset_mapping"], dtype=np.int64).reshape(-1, 2)
        has_term = (prefix[offsets[:, 1]] - prefix[offsets[:, 0]]) > 0
        weights[has_term] = term_weight
    return ids, weights


@dataclass
class SequenceBuilder:
    """Turns ``Sample``s into model inputs for one tokenizer.

    ``base_vocab_size`` is V (``model.config.base_vocab_size``; the id of ``<image>``).
    ``matcher=None`` uses the shipped vocabulary; pass ``False`` to disable term weighting.
    """

    tokenizer: object
    base_vocab_size: int
    max_length: int = 2048
    matcher: MedicalTermMatcher | None | bool = None
    response_weight: float = RESPONSE_WEIGHT
    term_weight: float = TERM_WEIGHT

    def __post_init__(self) -> None:
        if self.matcher is None:
            self.matcher = default_matcher()
        elif self.matcher is False:
            self.matcher = None
        if self.tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no EOS token; sequences end with EOS")
        if self.max_length < 2:
            raise ValueError(f"max_length must be >= 2, got {self.max_length}")

    def __call__(self, sample: Sample) -> dict:
        if sample.is_interleaved:
            return self.interleaved(sample.text, len(sample.images))
        return self.instruction(sample.instruction, sample.response, len(sample.images))

    def instruction(self, instruction: str, response: str, num_images: int) -> dict:
        """Weights 0 on the instruction, 1/3 on the response, EOS appended (weight 1)."""
        prompt = np.asarray(encode_prompt(self.tokenizer, instruction, base_vocab_size=self.base_vocab_size,
                                          num_images=num_images, add_bos=True), dtype=np.int64)
        resp_ids, resp_w = weighted_text_ids(self.tokenizer, response.strip(), self.matcher,
                                             self.response_weight, self.term_weight)
        ids = np.concatenate([prompt, resp_ids, [self.tokenizer.eos_token_id]])
        weights = np.concatenate([np.zeros(len(prompt), np.float32), resp_w, [self.response_weight]]).astype(np.float32)
        return self._finish(ids, weights, num_images)

    def interleaved(self, text: str, num_images: int) -> dict:
        """Text 1, medical terms 3, image blocks 0, BOS 0, EOS 1."""
        segments = split_on_placeholders(text)
        if len(segments) - 1 != num_images:
            raise ValueError(f"text has {len(segments) - 1} <image> placeholder(s) but {num_images} image(s)")
        id_parts: list[np.ndarray] = []
        weight_parts: list[np.ndarray] = []
        if self.tokenizer.bos_token_id is not None:
            id_parts.append(np.asarray([self.tokenizer.bos_token_id]))
            weight_parts.append(np.zeros(1, np.float32))
        for s, segment in enumerate(segments):
            seg_ids, seg_w = weighted_text_ids(self.tokenizer, segment, self.matcher, 1.0, self.term_weight)
            id_parts.append(seg_ids)
            weight_parts.append(seg_w)
            if s < num_images:
                block = np.asarray(image_token_ids(self.base_vocab_size, s))
                id_parts.append(block)
                weight_parts.append(np.zeros(len(block), np.float32))
        id_parts.append(np.asarray([self.tokenizer.eos_token_id]))
        weight_parts.append(np.ones(1, np.float32))
        return self._finish(np.concatenate(id_parts).astype(np.int64), np.concatenate(weight_parts), num_images)

    def _finish(self, ids: np.ndarray, weights: np.ndarray, num_images: int) -> dict:
        truncated = len(ids) > self.max_length
        if truncated:
            cut = self.max_length
            for start, end in block_positions(ids.tolist(), self.base_vocab_size):
                if start < cut < end:  # never keep half a block
                    cut = start
                    break
            ids, weights = ids[:cut], weights[:cut]
            num_images = len(block_positions(ids.tolist(), self.base_vocab_size))
        labels = np.where(weights > 0, ids, IGNORE_INDEX)
        return {
            "input_ids": torch.from_numpy(ids.copy()),
            "labels": torch.from_numpy(labels.astype(np.int64)),
            "loss_weights": torch.from_numpy(weights.astype(np.float32)),
            "attention_mask": torch.ones(len(ids), dtype=torch.long),
            "num_images": num_images,
            "truncated": truncated,
        }
