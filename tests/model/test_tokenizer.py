"""Building a tokenizer with RadFM's image tokens (the prompt rules are tested in test_processing.py)."""

from __future__ import annotations

import pytest

from radfm.model.tokenizer import add_image_tokens


def test_add_image_tokens_puts_them_after_the_vocabulary(tiny_tokenizer):
    base = tiny_tokenizer.convert_tokens_to_ids("<image>")
    assert tiny_tokenizer.convert_tokens_to_ids(["</image>", "<image0>", "<image5>"]) == [base + 1, base + 2, base + 7]
    # idempotent
    assert add_image_tokens(tiny_tokenizer) == base


def test_pad_vocabulary_puts_image_tokens_at_the_embedding_size():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from radfm.model.tokenizer import pad_vocabulary

    words = ["<pad>", "<s>", "</s>", "lung", "ct", "mri"]
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<pad>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>")
    assert pad_vocabulary(tokenizer, 16) == 10  # e.g. an LLM with 16 embedding rows
    assert add_image_tokens(tokenizer, max_images=1) == 16
    with pytest.raises(ValueError, match="more than the requested"):
        pad_vocabulary(tokenizer, 8)
