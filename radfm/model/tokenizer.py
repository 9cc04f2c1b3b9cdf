"""A tokenizer with RadFM's image tokens: add them to any Hugging Face tokenizer, or train a small one.

The published id scheme, with ``V`` the language model's vocabulary size:
``<image>`` = V, ``</image>`` = V+1, ``<imageK>`` = V+2+K, 32 visual tokens per image. How a
prompt's ``<image>`` placeholders become these ids is the processor's rule
(:mod:`radfm.model.processing`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

IMAGE_PLACEHOLDER = "<image>"
IMAGE_END = "</image>"
TOKENS_PER_IMAGE = 32
BLOCK_LENGTH = TOKENS_PER_IMAGE + 2
DEFAULT_MAX_IMAGES = 10


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
