"""Batched generation, prompt building and the bad-input errors of the model API."""

from __future__ import annotations

import pytest
import torch

from radfm.model.processing import encode_prompts, image_token_ids

# (H, W, D) of the images of each prompt: 2D radiographs (512×512×4) mixed with small 3D volumes
SHAPES = [
    [(512, 512, 4)],
    [(64, 64, 8), (64, 64, 8)],
    [(512, 512, 4), (64, 64, 16), (64, 64, 8)],
    [(64, 64, 16)],
    [(64, 64, 8), (512, 512, 4)],
    [(512, 512, 4), (512, 512, 4), (512, 512, 4)],
    [(96, 64, 12)],
    [(64, 64, 8), (64, 64, 16)],
]
PROMPTS = [
    "<image> Is this image captured by CT?",
    "Compare <image> with <image>. Findings:",
    "<image><image><image> Please make diagnosis based on the images.",
    "What is the modality of the input scan <image>?",
    "Please caption this scan with findings <image> and <image>",
    "Does the patient have pneumonia? <image> <image> <image>",
    "Describe the lesion.",  # no placeholder: the image goes in front
    "<image> left, <image> right lung?",
]


@pytest.fixture(scope="module")
def batch_images(make_image):
    return [[make_image(shape, seed=10 * i + j) for j, shape in enumerate(shapes)] for i, shapes in enumerate(SHAPES)]


def test_batch_of_8_greedy_equals_one_by_one(tiny_model, tiny_tokenizer, batch_images, answers):
    batched = answers(tiny_model, tiny_tokenizer, PROMPTS, batch_images, max_new_tokens=8)
    single = [
        answers(tiny_model, tiny_tokenizer, [p], [imgs], max_new_tokens=8)[0]
        for p, imgs in zip(PROMPTS, batch_images)
    ]
    assert batched == single
    assert len(set(batched)) > 1  # the images/prompts actually change the answers


def test_left_padded_forward_matches_unpadded(tiny_model, tiny_tokenizer, batch_images):
    input_ids, mask = encode_prompts(
        tiny_tokenizer, PROMPTS[:2], [len(i) for i in batch_images[:2]], base_vocab_size=tiny_model.config.base_vocab_size
    )
    with torch.no_grad():
        batched = tiny_model(input_ids=input_ids, images=batch_images[:2], attention_mask=mask).logits
        short = int(mask[0].sum())
        alone = tiny_model(input_ids=input_ids[:1, -short:], images=batch_images[:1]).logits
    assert torch.allclose(batched[0, -short:], alone[0], atol=1e-4)


def test_generate_stops_at_eos_and_returns_new_tokens_only(tiny_model, tiny_tokenizer, batch_images):
    ids, mask = encode_prompts(tiny_tokenizer, PROMPTS[:1], [len(batch_images[0])],
                               base_vocab_size=tiny_model.config.base_vocab_size)
    first = tiny_model.generate(input_ids=ids, images=batch_images[:1], attention_mask=mask, max_new_tokens=1)
    forced_eos = int(first[0, 0])  # declare the first greedy token to be EOS: generation must stop there
    new = tiny_model.generate(
        input_ids=ids, images=batch_images[:1], attention_mask=mask, max_new_tokens=10, eos_token_id=forced_eos
    )
    assert new.shape == (1, 1)


def test_prefill_projects_only_the_last_position_onto_the_vocabulary(tiny_model, tiny_tokenizer, batch_images):
    """generate asks forward for the last position's logits only (transformers' logits_to_keep=1), so the
    LM head never runs over the whole prompt; the greedy tokens are those of the full-logits forward."""
    ids, mask = encode_prompts(tiny_tokenizer, PROMPTS[:2], [len(images) for images in batch_images[:2]],
                               base_vocab_size=tiny_model.config.base_vocab_size)
    rows: list[int] = []
    hook = tiny_model.language_model.get_output_embeddings().register_forward_hook(
        lambda module, inputs, output: rows.append(inputs[0].shape[-2]))
    try:
        new = tiny_model.generate(input_ids=ids, images=batch_images[:2], attention_mask=mask, max_new_tokens=3)
    finally:
        hook.remove()
    assert ids.shape[1] > 1 and rows == [1, 1, 1], rows  # prefill included: one position per step
    with torch.no_grad():
        full = tiny_model(input_ids=ids, images=batch_images[:2], attention_mask=mask).logits
    assert torch.equal(new[:, 0], full[:, -1].argmax(-1))


def test_beam_sampling_and_streaming_run(tiny_model, tiny_tokenizer, batch_images, answers):
    from transformers import TextIteratorStreamer

    beams = answers(tiny_model, tiny_tokenizer, PROMPTS[:2], batch_images[:2], max_new_tokens=4, num_beams=3)
    torch.manual_seed(0)
    sampled = answers(
        tiny_model, tiny_tokenizer, PROMPTS[:2], batch_images[:2], max_new_tokens=4, do_sample=True, top_p=0.9
    )
    assert len(beams) == len(sampled) == 2
    streamer = TextIteratorStreamer(tiny_tokenizer, skip_special_tokens=True)
    answer = answers(tiny_model, tiny_tokenizer, PROMPTS[:1], batch_images[:1], max_new_tokens=6, streamer=streamer)
    streamed = "".join(streamer)
    assert streamed.strip() == answer[0]


def test_placeholder_count_mismatch_names_both_counts(tiny_model, tiny_tokenizer, make_image, answers):
    images = [[make_image((64, 64, 8), 0), make_image((64, 64, 8), 1)]]
    with pytest.raises(ValueError, match="1 <image> placeholder.*2 image"):
        answers(tiny_model, tiny_tokenizer, ["<image> what is it?"], images)
    ids = torch.tensor([[1, *image_token_ids(tiny_model.config.base_vocab_size, 0), 5]])
    with pytest.raises(ValueError, match="1 image placeholder block.*2 image"):
        tiny_model(input_ids=ids, images=images)


@pytest.mark.parametrize(
    "shape, rule",
    [((3, 500, 512, 4), "multiples of 32"), ((3, 256, 256, 10), "multiple of 4"), ((1, 256, 256, 8), r"\[3, H, W, D\]")],
)
def test_bad_image_shape_names_shape_rule_and_transforms(tiny_model, shape, rule):
    ids = torch.tensor([[1, *image_token_ids(tiny_model.config.base_vocab_size, 0)]])
    with pytest.raises(ValueError, match=rule) as info:
        tiny_model(input_ids=ids, images=[[torch.zeros(shape)]])
    assert str(list(shape)) in str(info.value) and "radfm.transforms" in str(info.value)


def test_prompt_longer_than_context_reports_lengths(tiny_model):
    context = tiny_model.config.max_context
    ids = torch.ones(1, context + 5, dtype=torch.long)
    with pytest.raises(ValueError, match=f"{context + 5} tokens long.*{context} tokens"):
        tiny_model(input_ids=ids)
    with pytest.raises(ValueError, match="no room"):
        tiny_model.generate(input_ids=torch.ones(1, context, dtype=torch.long), max_new_tokens=4)
