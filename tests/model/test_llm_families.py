"""The same RadFM code around other decoder-only LLM families (built from tiny configs)."""

from __future__ import annotations

import pytest
import torch

from radfm.model.config import RadFMConfig
from radfm.model.processing import encode_prompts
from radfm.model.radfm import RadFMForConditionalGeneration

FAMILIES = {
    "qwen2": {"tie_word_embeddings": True, "max_window_layers": 2, "layer_types": ["full_attention"] * 2},
    "mistral": {"sliding_window": 4096},
    "gemma": {"head_dim": 16, "hidden_activation": "gelu_pytorch_tanh"},
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_runs_trains_and_generates(family, tiny_tokenizer, tiny_base_vocab, make_image, answers):
    base = RadFMConfig.preset("tiny")
    llm = {key: base.text_config.to_dict()[key] for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                                        "num_attention_heads", "num_key_value_heads", "max_position_embeddings")}
    llm.update(model_type=family, vocab_size=tiny_base_vocab, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    llm.update(FAMILIES[family])
    torch.manual_seed(0)
    model = RadFMForConditionalGeneration(RadFMConfig(text_config=llm, vision_config=base.vision_config, perceiver_config=base.perceiver_config))
    assert type(model.language_model).__name__.lower().startswith(family)

    prompts = ["<image> Findings:", "Compare <image> and <image>."]
    images = [[make_image((512, 512, 4), 1)], [make_image((64, 64, 8), 2), make_image((64, 64, 16), 3)]]
    input_ids, mask = encode_prompts(tiny_tokenizer, prompts, [len(i) for i in images], base_vocab_size=tiny_base_vocab)
    labels = input_ids.masked_fill((mask == 0) | (input_ids >= tiny_base_vocab), -100)

    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    output = model(input_ids=input_ids, images=images, attention_mask=mask, labels=labels)
    assert output.logits.shape == (*input_ids.shape, tiny_base_vocab)
    output.loss.backward()
    assert model.vision_encoder.patch_embedding.projection.weight.grad.abs().sum() > 0  # gradient reaches the ViT
    assert model.figure_token_weight.grad.abs().sum() > 0
    before = model.perceiver.latents.detach().clone()
    optimizer.step()
    assert not torch.equal(before, model.perceiver.latents)

    model.eval()
    texts = answers(model, tiny_tokenizer, prompts, images, max_new_tokens=3)
    assert len(texts) == 2 and all(isinstance(a, str) for a in texts)
