from __future__ import annotations

import pytest

from radfm.model.tokenizer import (
    BLOCK_LENGTH,
    add_image_tokens,
    block_positions,
    encode_prompt,
    image_token_ids,
    with_placeholders,
)


def test_image_token_ids_follow_published_scheme():
    ids = image_token_ids(1000, 1)
    assert len(ids) == BLOCK_LENGTH == 34
    assert ids[0] == 1000 and ids[-1] == 1001
    assert ids[1:-1] == list(range(1000 + 2 + 32, 1000 + 2 + 64))


def test_add_image_tokens_puts_them_after_the_vocabulary(tiny_tokenizer):
    base = tiny_tokenizer.convert_tokens_to_ids("<image>")
    assert tiny_tokenizer.convert_tokens_to_ids(["</image>", "<image0>", "<image5>"]) == [base + 1, base + 2, base + 7]
    # idempotent
    assert add_image_tokens(tiny_tokenizer) == base


def test_encode_prompt_expands_each_placeholder(tiny_tokenizer):
    base = tiny_tokenizer.convert_tokens_to_ids("<image>")
    ids = encode_prompt(tiny_tokenizer, "<image> left <image> lung?", base_vocab_size=base)
    assert ids[0] == tiny_tokenizer.bos_token_id
    spans = block_positions(ids, base)
    assert len(spans) == 2
    assert ids[spans[0][0] : spans[0][1]] == image_token_ids(base, 0)
    assert ids[spans[1][0] : spans[1][1]] == image_token_ids(base, 1)
    text_ids = [i for i in ids[1:] if i < base]
    assert tiny_tokenizer.decode(text_ids).strip().startswith("left")


def test_placeholder_count_mismatch_names_both_counts(tiny_tokenizer):
    base = tiny_tokenizer.convert_tokens_to_ids("<image>")
    with pytest.raises(ValueError, match="1 <image> placeholder.*2 image"):
        encode_prompt(tiny_tokenizer, "<image> what?", base_vocab_size=base, num_images=2)


def test_with_placeholders_prepends_when_absent():
    assert with_placeholders("What is shown?", 2) == "<image><image>What is shown?"
    assert with_placeholders("<image> ok", 1) == "<image> ok"
    with pytest.raises(ValueError):
        with_placeholders("<image> ok", 3)



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
