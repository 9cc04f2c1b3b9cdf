"""The processor's prompt rules: ``<image>`` placement, the 34-id image blocks, one tokenizer call per batch,
decoding; and that these rules live in ``radfm/model/processing.py`` only."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

import radfm.model.processing as processing
from radfm.model.processing import (
    RadFMImageProcessor,
    RadFMProcessor,
    block_positions,
    count_placeholders,
    decode_answers,
    encode_prompt,
    encode_prompts,
    image_token_ids,
    placeholder_prompt_ids,
    with_placeholders,
)
from radfm.model.tokenizer import BLOCK_LENGTH

REPO = Path(__file__).resolve().parents[2]
PROMPT_RULES = ("image_token_ids", "count_placeholders", "split_on_placeholders", "with_placeholders",
                "encode_prompt", "encode_prompts", "block_positions", "decode_answers", "build_prompt_batch",
                "decode_new_tokens", "generate_text", "placeholder_prompt_ids", "placeholders_to_prepend")


def test_image_token_ids_follow_published_scheme():
    ids = image_token_ids(1000, 1)
    assert len(ids) == BLOCK_LENGTH == 34
    assert ids[0] == 1000 and ids[-1] == 1001
    assert ids[1:-1] == list(range(1000 + 2 + 32, 1000 + 2 + 64))


@pytest.mark.parametrize("text,scans", [("What is shown?", 2), ("<image> left <image> lung?", 2), ("no scan", 0)])
def test_placeholder_prompt_ids_expand_to_the_processor_ids(tiny_tokenizer, text, scans):
    # vLLM gets one <image> id per scan and expands it (radfm.model.vllm_radfm): the result must be the processor's ids
    base = tiny_tokenizer.convert_tokens_to_ids("<image>")
    ids = placeholder_prompt_ids(tiny_tokenizer, text, scans, base_vocab_size=base)
    assert ids.count(base) == scans and ids[0] == tiny_tokenizer.bos_token_id
    expanded, seen = [], 0
    for token in ids:
        if token == base:
            expanded += image_token_ids(base, seen)
            seen += 1
        else:
            expanded.append(token)
    reference, _ = encode_prompts(tiny_tokenizer, [text], [scans], base_vocab_size=base)
    assert expanded == reference[0].tolist()


def test_placeholder_prompt_ids_refuse_a_wrong_count(tiny_tokenizer):
    base = tiny_tokenizer.convert_tokens_to_ids("<image>")
    with pytest.raises(ValueError, match="1 <image> placeholder.*2 image"):
        placeholder_prompt_ids(tiny_tokenizer, "<image> and?", 2, base_vocab_size=base)


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
    with pytest.raises(ValueError, match="prompt 1: prompt has 1 <image> placeholder.*3 image"):
        encode_prompts(tiny_tokenizer, ["ok", "<image> what?"], [1, 3], base_vocab_size=base)


def test_with_placeholders_prepends_when_absent():
    assert with_placeholders("What is shown?", 2) == "<image><image>What is shown?"
    assert with_placeholders("<image> ok", 1) == "<image> ok"
    assert count_placeholders("<image> a <image>") == 2
    with pytest.raises(ValueError):
        with_placeholders("<image> ok", 3)


def test_a_batch_is_tokenised_in_one_call_and_decoded_in_one(tiny_tokenizer, counting_tokenizer):
    """Several prompts with several images each: one tokenizer call, the same ids as segment by segment."""
    base = tiny_tokenizer.convert_tokens_to_ids("<image>")
    counting = counting_tokenizer(tiny_tokenizer)
    prompts = ["<image> left lung, <image> right lung?", "Findings:", "Compare <image> with <image>. And <image>?"]
    ids, mask = encode_prompts(counting, prompts, [2, 1, 3], base_vocab_size=base)
    assert counting.encode_calls == 1
    for row, prompt in enumerate(prompts):
        text = with_placeholders(prompt, [2, 1, 3][row])
        alone = [tiny_tokenizer.bos_token_id]
        for s, segment in enumerate(processing.split_on_placeholders(text)):
            if segment:
                alone += tiny_tokenizer(segment, add_special_tokens=False)["input_ids"]
            if s < count_placeholders(text):
                alone += image_token_ids(base, s)
        assert ids[row, -len(alone):].tolist() == alone and int(mask[row].sum()) == len(alone)  # left padded
    eos = tiny_tokenizer.eos_token_id
    new_tokens = torch.tensor([[5, 6, eos, 7], [8, 9, 10, 11]])
    texts = decode_answers(counting, new_tokens)
    assert counting.batch_decode_calls == 1 and counting.decode_calls == 0
    assert texts == [tiny_tokenizer.decode([5, 6]).strip(), tiny_tokenizer.decode([8, 9, 10, 11]).strip()]


def test_processor_call_places_images_and_keeps_scans_at_the_grid(tiny_tokenizer):
    processor = RadFMProcessor(RadFMImageProcessor(size_2d=(64, 64), size_3d=(32, 32), max_depth=8), tiny_tokenizer)
    at_grid = torch.rand(3, 32, 32, 8)
    other = torch.rand(1, 40, 50, 10)  # a channel-first volume not at the grid: preprocessed
    inputs = processor(text="Describe.", images=[at_grid, other])
    assert inputs["images"][0][0] is at_grid and tuple(inputs["images"][0][1].shape) == (3, 32, 32, 8)
    assert len(block_positions(inputs["input_ids"][0].tolist(), processor.base_vocab_size)) == 2  # prepended


def test_prompt_rules_live_in_the_processor_only():
    """No module of the package defines (or imports from elsewhere) the prompt rules: radfm.model.processing
    holds them; radfm.model.tokenizer only builds tokenizers; the old delegations are gone."""
    offenders = []
    for path in sorted((REPO / "radfm").rglob("*.py")) + sorted((REPO / "transforms").rglob("*.py")):
        if path.resolve() == Path(processing.__file__).resolve():
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in PROMPT_RULES:
                offenders.append(f"{path.relative_to(REPO)}: defines {node.name}")
            if isinstance(node, ast.ImportFrom) and node.module != "radfm.model.processing":
                offenders += [f"{path.relative_to(REPO)}: imports {a.name} from {node.module}"
                              for a in node.names if a.name in PROMPT_RULES]
    assert offenders == []
    assert not (REPO / "radfm" / "model" / "generation.py").exists()
