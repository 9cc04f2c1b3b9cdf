"""Text in, text out: batched, left-padded generation over prompts with ``<image>`` placeholders."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from radfm.model.tokenizer import count_placeholders, encode_prompt, with_placeholders


def build_prompt_batch(
    tokenizer,
    prompts: Sequence[str],
    images: Sequence[Sequence[Any]],
    *,
    base_vocab_size: int,
    add_bos: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ``input_ids`` and ``attention_mask`` ``[B, L]``.

    A prompt without placeholders gets one ``<image>`` per image in front; otherwise the number
    of placeholders must equal the number of images (the error names both counts and the prompt).
    """
    if len(prompts) != len(images):
        raise ValueError(f"{len(prompts)} prompt(s) but {len(images)} image list(s)")
    encoded: list[list[int]] = []
    for i, (prompt, sample_images) in enumerate(zip(prompts, images)):
        try:
            text = prompt if count_placeholders(prompt) else with_placeholders(prompt, len(sample_images))
            ids = encode_prompt(tokenizer, text, base_vocab_size=base_vocab_size, num_images=len(sample_images), add_bos=add_bos)
        except ValueError as err:
            raise ValueError(f"prompt {i}: {err}") from err
        encoded.append(ids)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    length = max(len(ids) for ids in encoded)
    input_ids = torch.full((len(encoded), length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(encoded), length), dtype=torch.long)
    for row, ids in enumerate(encoded):
        input_ids[row, length - len(ids) :] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, length - len(ids) :] = 1
    return input_ids, attention_mask


def decode_new_tokens(tokenizer, new_tokens: torch.Tensor) -> list[str]:
    """Cut each row at its first EOS and decode without special tokens."""
    eos = tokenizer.eos_token_id
    texts = []
    for row in new_tokens.tolist():
        if eos is not None and eos in row:
            row = row[: row.index(eos)]
        texts.append(tokenizer.decode(row, skip_special_tokens=True).strip())
    return texts


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
