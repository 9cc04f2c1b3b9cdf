"""Image tokens for any Hugging Face tokenizer, and prompts with ``<image>`` placeholders.

The published id scheme, with ``V`` the language model's vocabulary size:
``<image>`` = V, ``</image>`` = V+1, ``<imageK>`` = V+2+K, 32 visual tokens per image.
Image ``s`` of a prompt is written ``<image><image{32s}>…<image{32s+31}></image>`` (34 ids).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

IMAGE_PLACEHOLDER = "<image>"
IMAGE_END = "</image>"
TOKENS_PER_IMAGE = 32
BLOCK_LENGTH = TOKENS_PER_IMAGE + 2
DEFAULT_MAX_IMAGES = 10

_PLACEHOLDER_RE = re.compile(re.escape(IMAGE_PLACEHOLDER))


def image_token_ids(base_vocab_size: int, image_index: int) -> list[int]:
    """The 34 ids of image ``image_index`` (0-based) in a prompt: ``[V, V+2+32s, …, V+2+32s+31, V+1]``."""
    if image_index < 0:
        raise ValueError(f"image_index must be >= 0, got {image_index}")
    first = base_vocab_size + 2 + TOKENS_PER_IMAGE * image_index
    return [base_vocab_size, *range(first, first + TOKENS_PER_IMAGE), base_vocab_size + 1]


def count_placeholders(text: str) -> int:
    """Number of ``<image>`` placeholders in ``text``."""
    return len(_PLACEHOLDER_RE.findall(text))


def add_image_tokens(tokenizer, max_images: int = DEFAULT_MAX_IMAGES) -> int:
    """Add ``<image>``, ``</image>`` and ``<image0>…`` to ``tokenizer`` in the published id order.

    Returns the base vocabulary size ``V`` (the tokenizer's length before the image tokens).
    Calling it again on a tokenizer that already has the tokens is a no-op that returns the
    same ``V``; a tokenizer with fewer slots is extended.
    """
    vocab = tokenizer.get_vocab()
    if IMAGE_PLACEHOLDER in vocab:
        base = vocab[IMAGE_PLACEHOLDER]
        if vocab.get(IMAGE_END) != base + 1:
            raise ValueError(f"tokenizer has {IMAGE_PLACEHOLDER} at {base} but {IMAGE_END} is not at {base + 1}")
        have = sum(1 for tok in vocab if re.fullmatch(r"<image\d+>", tok))
        wanted = TOKENS_PER_IMAGE * max_images
        if have < wanted:
            tokenizer.add_tokens([f"<image{k}>" for k in range(have, wanted)], special_tokens=True)
        return base
    base = len(tokenizer)
    new_tokens = [IMAGE_PLACEHOLDER, IMAGE_END] + [f"<image{k}>" for k in range(TOKENS_PER_IMAGE * max_images)]
    tokenizer.add_tokens(new_tokens, special_tokens=True)
    got = tokenizer.convert_tokens_to_ids([IMAGE_PLACEHOLDER, IMAGE_END, "<image0>"])
    if got != [base, base + 1, base + 2]:
        raise ValueError(
            f"image tokens landed at ids {got}, expected {[base, base + 1, base + 2]}: "
            "the tokenizer already holds some of these tokens"
        )
    return base


def pad_vocabulary(tokenizer, size: int, prefix: str = "<unused") -> int:
    """Add filler tokens ``<unusedN>`` until ``len(tokenizer) == size``; returns how many were added.

    Use before ``add_image_tokens`` when an LLM's embedding matrix is larger than its tokenizer
    (e.g. Qwen2), so that ``<image>`` lands at V = the number of embedding rows.
    """
    missing = size - len(tokenizer)
    if missing < 0:
        raise ValueError(f"tokenizer already has {len(tokenizer)} tokens, more than the requested {size}")
    if missing:
        tokenizer.add_tokens([f"{prefix}{k}>" for k in range(missing)], special_tokens=True)
    return missing


def split_on_placeholders(text: str) -> list[str]:
    """Text segments around each ``<image>``: ``n`` placeholders give ``n + 1`` segments."""
    return _PLACEHOLDER_RE.split(text)


def encode_prompt(
    tokenizer,
    text: str,
    *,
    base_vocab_size: int,
    num_images: int | None = None,
    add_bos: bool = True,
    first_image_index: int = 0,
) -> list[int]:
    """Token ids of ``text`` with every ``<image>`` expanded to its 34-id block.

    Text segments are tokenized without special tokens; a BOS id is prepended when
    ``add_bos`` and the tokenizer has one. ``num_images``, when given, must equal the number
    of placeholders (the error names both counts).
    """
    segments = split_on_placeholders(text)
    n_placeholders = len(segments) - 1
    if num_images is not None and num_images != n_placeholders:
        raise ValueError(
            f"prompt has {n_placeholders} {IMAGE_PLACEHOLDER} placeholder(s) but {num_images} image(s) were given"
        )
    ids: list[int] = []
    if add_bos and tokenizer.bos_token_id is not None:
        ids.append(tokenizer.bos_token_id)
    for s, segment in enumerate(segments):
        if segment:
            ids.extend(tokenizer(segment, add_special_tokens=False)["input_ids"])
        if s < n_placeholders:
            ids.extend(image_token_ids(base_vocab_size, first_image_index + s))
    return ids


def with_placeholders(text: str, num_images: int) -> str:
    """Prepend ``num_images`` placeholders to a prompt that has none (images given separately)."""
    have = count_placeholders(text)
    if have == num_images:
        return text
    if have == 0:
        return IMAGE_PLACEHOLDER * num_images + text
    raise ValueError(f"prompt has {have} {IMAGE_PLACEHOLDER} placeholder(s) but {num_images} image(s) were given")


def train_tokenizer(
    corpus: Iterable[str],
    *,
    vocab_size: int = 1000,
    max_images: int = DEFAULT_MAX_IMAGES,
    min_frequency: int = 1,
    base_vocab_size: int | None = None,
):
    """Train a small byte-level BPE tokenizer (``tokenizers``) and wrap it for transformers.

    Special tokens: ``<pad>`` = 0, ``<s>`` = 1, ``</s>`` = 2, ``<unk>`` = 3 (the LLaMA order).
    The image tokens are added after training, so ``V`` = the trained vocabulary size, or
    ``base_vocab_size`` when given (filler tokens pad the vocabulary up to it first, to match a
    language model with more embedding rows). Returns a ``PreTrainedTokenizerFast``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    core = Tokenizer(models.BPE(unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(corpus, trainer=trainer)
    core.post_processor = processors.ByteLevel(trim_offsets=True)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        padding_side="left",
    )
    if base_vocab_size is not None:
        pad_vocabulary(tokenizer, base_vocab_size)
    add_image_tokens(tokenizer, max_images=max_images)
    return tokenizer


def block_positions(input_ids: Sequence[int], base_vocab_size: int) -> list[tuple[int, int]]:
    """``(start, end)`` spans (end exclusive) of every 34-id image block in ``input_ids``."""
    spans = []
    i = 0
    n = len(input_ids)
    while i < n:
        if input_ids[i] == base_vocab_size:
            end = i + BLOCK_LENGTH
            if end > n or input_ids[end - 1] != base_vocab_size + 1:
                raise ValueError(f"image block starting at position {i} is not {BLOCK_LENGTH} ids long")
            spans.append((i, end))
            i = end
        else:
            i += 1
    return spans
