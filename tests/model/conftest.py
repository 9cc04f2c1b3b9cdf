"""Fixtures for the model tests: a seeded tiny RadFM and small images of mixed sizes."""

from __future__ import annotations

import json

import pytest
import torch

from radfm.model.config import RadFMConfig
from radfm.model.radfm import RadFMForConditionalGeneration


@pytest.fixture(scope="session")
def official_fixture(official_tiny_dir) -> dict:
    return json.loads((official_tiny_dir / "fixture.json").read_text())


@pytest.fixture(scope="session")
def official_cases(official_tiny_dir) -> dict[str, dict[str, torch.Tensor]]:
    return {
        name: torch.load(official_tiny_dir / f"case_{name}.pt", weights_only=True)
        for name in ("xray2d", "ct3d_two_scans")
    }


@pytest.fixture(scope="session")
def official_model(official_tiny_dir, official_fixture):
    return RadFMForConditionalGeneration.from_official(official_tiny_dir / "pytorch_model.bin", llm_config=official_fixture["llm_config"])


@pytest.fixture(scope="session")
def tiny_base_vocab(tiny_tokenizer) -> int:
    return tiny_tokenizer.convert_tokens_to_ids("<image>")


@pytest.fixture(scope="session")
def tiny_model(tiny_base_vocab) -> RadFMForConditionalGeneration:
    torch.manual_seed(0)
    model = RadFMForConditionalGeneration(RadFMConfig.preset("tiny", vocab_size=tiny_base_vocab)).eval()
    # random init gives near-flat logits; a sharper LM head makes greedy choices well separated
    with torch.no_grad():
        model.language_model.lm_head.weight.mul_(20.0)
    return model


@pytest.fixture(scope="session")
def make_image():
    """``make_image((H, W, D), seed)`` → a ``[3, H, W, D]`` image in [0, 1]."""

    def make(shape: tuple[int, int, int], seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        return torch.rand((3, *shape), generator=generator)

    return make


def answer_texts(model, tokenizer, prompts, images, max_new_tokens: int = 8, **generate_kwargs) -> list[str]:
    """Prompts and already-preprocessed images (any sizes) -> answers, from the model alone.

    The processor's own steps (its prompt batch, ``model.generate``, its decoding) without its grid,
    so these model tests may feed scans of any size; the engines and the request path generate
    through ``radfm.answering.answerer.ModelAnswerer.answer_batch`` (tests/engines, tests/answering).
    """
    from radfm.model.processing import decode_answers, encode_prompts, generation_token_ids

    input_ids, attention_mask = encode_prompts(tokenizer, list(prompts), [len(case) for case in images],
                                               base_vocab_size=model.config.base_vocab_size)
    with torch.no_grad():
        new_tokens = model.generate(input_ids=input_ids, images=[list(case) for case in images],
                                    attention_mask=attention_mask, max_new_tokens=max_new_tokens,
                                    **{**generation_token_ids(tokenizer), **generate_kwargs})
    return decode_answers(tokenizer, new_tokens)


@pytest.fixture(scope="session")
def answers():
    """``answers(model, tokenizer, prompts, images, max_new_tokens, **generate_kwargs)`` -> list of answers."""
    return answer_texts
