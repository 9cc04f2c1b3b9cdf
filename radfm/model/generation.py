"""Text in, text out: batched, left-padded generation over prompts with ``<image>`` placeholders.

The prompt rules are the processor's (:mod:`radfm.model.processing`); this is the batching loop
the engines and the service call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from radfm.model.processing import decode_answers, encode_prompts


def build_prompt_batch(
    tokenizer,
    prompts: Sequence[str],
    images: Sequence[Sequence[Any]],
    *,
    base_vocab_size: int,
    add_bos: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ``input_ids`` and ``attention_mask`` ``[B, L]`` (the processor's rules:
    :func:`radfm.model.processing.encode_prompts`)."""
    if len(prompts) != len(images):
        raise ValueError(f"{len(prompts)} prompt(s) but {len(images)} image list(s)")
    return encode_prompts(tokenizer, prompts, [len(sample) for sample in images], base_vocab_size=base_vocab_size,
                          add_bos=add_bos)


decode_new_tokens = decode_answers


def generate_text(
    model,
    tokenizer,
    prompts: Sequence[str],
    images: Sequence[Sequence[torch.Tensor]],
    *,
    max_new_tokens: int = 64,
    batch_size: int | None = None,
    **generate_kwargs: Any,
) -> list[str]:
    """Answers for ``prompts`` (each with its own list of ``[3, H, W, D]`` images), batched.

    ``batch_size`` prompts share one ``generate`` call (default: all). ``generate_kwargs`` go to
    HF ``generate`` (``num_beams``, ``do_sample``, ``temperature``, ``streamer`` …).
    """
    prompts, images = list(prompts), [list(sample) for sample in images]
    step = batch_size or max(len(prompts), 1)
    generate_kwargs.setdefault("eos_token_id", tokenizer.eos_token_id)
    if tokenizer.pad_token_id is not None:
        generate_kwargs.setdefault("pad_token_id", tokenizer.pad_token_id)
    answers: list[str] = []
    for start in range(0, len(prompts), step):
        chunk_prompts, chunk_images = prompts[start : start + step], images[start : start + step]
        input_ids, attention_mask = build_prompt_batch(
            tokenizer, chunk_prompts, chunk_images, base_vocab_size=model.config.base_vocab_size
        )
        new_tokens = model.generate(
            input_ids=input_ids,
            images=chunk_images,
            attention_mask=attention_mask,
            max_new_tokens=max_new_tokens,
            **generate_kwargs,
        )
        answers.extend(decode_new_tokens(tokenizer, new_tokens))
    return answers
