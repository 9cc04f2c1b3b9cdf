"""vLLM with the RadFM plugin against transformers' ``generate``: same prompt ids, same greedy tokens,
per-step log-probabilities within 1e-4 (fp32, CPU), for the demo model on the shipped scans and for the
official-layout fixture converted with ``radfm convert``."""

from __future__ import annotations

import pytest
import torch

NEW_TOKENS = 12
LOGPROB_TOLERANCE = 1e-4

# (prompt, scans): no placeholder (one put in front), one, 2D + 3D of different sizes, two 3D
DEMO_CASES = [
    ("What is the modality of this image?", ["xray_phantom.png"]),
    ("Which organ is shown in <image>?", ["ct_phantom.nii.gz"]),
    ("<image> is an X-ray and <image> a CT. Describe the findings.", ["xray_phantom.png", "ct_phantom.nii.gz"]),
    ("Compare <image> with <image>.", ["mri_phantom.nii.gz", "ct_phantom.nii.gz"]),
]


@pytest.fixture(scope="module")
def demo(demo_model_dir):
    """The demo model in transformers (the reference) and its processor."""
    import radfm

    model, processor = radfm.load(demo_model_dir)
    model.eval()
    return model, processor


def _sampling(n: int):
    from vllm import SamplingParams

    # min_tokens keeps EOS away for n steps, as transformers' min_new_tokens does, so every step is compared;
    # log-probabilities are vLLM's raw ones (before that masking), like transformers' output_logits
    return SamplingParams(temperature=0.0, max_tokens=n, min_tokens=n, logprobs=1)


def _reference(model, input_ids: torch.Tensor, images: list[torch.Tensor], n: int) -> tuple[list[int], list[float]]:
    """transformers' greedy tokens and the log-probability of each (one prompt, no padding)."""
    out = model.generate(input_ids=input_ids, images=[images], attention_mask=torch.ones_like(input_ids),
                         max_new_tokens=n, min_new_tokens=n, output_logits=True, return_dict_in_generate=True)
    tokens = out.sequences[0, -n:].tolist()
    logprobs = [torch.log_softmax(step[0].float(), -1)[t].item() for step, t in zip(out.logits, tokens)]
    return tokens, logprobs


def _vllm_logprobs(completion) -> list[float]:
    return [step[t].logprob for step, t in zip(completion.logprobs, completion.token_ids)]


def _assert_same(completion, tokens: list[int], logprobs: list[float], where: str) -> None:
    assert list(completion.token_ids) == tokens, f"{where}: greedy tokens differ"
    worst = max(abs(a - b) for a, b in zip(_vllm_logprobs(completion), logprobs))
    assert worst <= LOGPROB_TOLERANCE, f"{where}: log-probabilities differ by {worst:.2e}"


def test_demo_model_matches_transformers_on_the_shipped_scans(demo, demo_engine, sample_scans):
    from radfm.model.vllm_radfm import prompt_token_ids

    model, processor = demo
    requests, references = [], []
    for text, names in DEMO_CASES:
        scans = [processor.image_processor.process_one(sample_scans / name).as_tensor() for name in names]
        inputs = processor(text=text, images=[scans])
        references.append((inputs["input_ids"][0].tolist(), *_reference(model, inputs["input_ids"], scans, NEW_TOKENS)))
        requests.append({"prompt_token_ids": prompt_token_ids(processor.tokenizer, text, len(scans),
                                                              base_vocab_size=processor.base_vocab_size),
                         "multi_modal_data": {"image": scans}})
    outputs = demo_engine.generate(requests, _sampling(NEW_TOKENS), use_tqdm=False)  # one batch, all prompts
    for (text, _), output, (prompt_ids, tokens, logprobs) in zip(DEMO_CASES, outputs, references):
        # vLLM's prompt update built the processor's ids: each <image> -> its 34-id block
        assert list(output.prompt_token_ids) == prompt_ids, text
        _assert_same(output.outputs[0], tokens, logprobs, text)


def test_demo_text_prompts_get_the_same_answers(demo, demo_engine, sample_scans):
    """A text prompt (vLLM tokenises it; BOS and missing placeholders added by the plugin) = the ids route."""
    model, processor = demo
    requests, expected = [], []
    for text, names in DEMO_CASES:
        scans = [processor.image_processor.process_one(sample_scans / name).as_tensor() for name in names]
        requests.append({"prompt": text, "multi_modal_data": {"image": scans}})
        expected.append(processor(text=text, images=[scans])["input_ids"][0].tolist())
    outputs = demo_engine.generate(requests, _sampling(4), use_tqdm=False)
    for (text, _), output, ids in zip(DEMO_CASES, outputs, expected):
        assert list(output.prompt_token_ids) == ids, text


@pytest.mark.parametrize("name", ["xray2d", "ct3d_two_scans"])
def test_official_fixture_matches_transformers_and_the_published_tokens(official_folder, official_engine,
                                                                       official_tiny_dir, name):
    from radfm.model.processing import block_positions
    from radfm.model.radfm import RadFM

    case = torch.load(official_tiny_dir / f"case_{name}.pt", weights_only=True)
    scans = [image.float() / 255.0 for image in case["vision_x_uint8"][0]]
    ids = case["input_ids"][0].tolist()
    vocab = 1000
    prompt = list(ids)
    for start, end in reversed(block_positions(ids, vocab)):  # the vLLM input: one <image> id per block
        prompt[start:end] = [vocab]
    published = case["greedy_new_tokens"].tolist()
    model = RadFM.from_pretrained(official_folder).eval()
    tokens, logprobs = _reference(model, case["input_ids"], scans, len(published))
    assert tokens == published
    output = official_engine.generate([{"prompt_token_ids": prompt, "multi_modal_data": {"image": scans}}],
                                      _sampling(len(published)), use_tqdm=False)[0]
    assert list(output.prompt_token_ids) == ids
    _assert_same(output.outputs[0], tokens, logprobs, name)


def test_image_ids_without_scans_do_not_break_the_engine(demo, demo_engine):
    """A prompt naming image-token ids but sent without scans skips our processor (vLLM only runs it for
    multimodal data): the ids must not index past the decoder's embedding rows, and the engine goes on."""
    from vllm import SamplingParams

    _, processor = demo
    base = processor.base_vocab_size
    last = len(processor.tokenizer) - 1  # the last <imageK> id, past vLLM's padded embedding table
    stray = {"prompt_token_ids": [processor.tokenizer.bos_token_id, base, last, base + 1]}
    plain = {"prompt_token_ids": processor(text="Is this a CT?")["input_ids"][0].tolist()}
    outputs = demo_engine.generate([stray, plain], SamplingParams(temperature=0.0, max_tokens=4, min_tokens=4),
                                   use_tqdm=False)
    assert [len(output.outputs[0].token_ids) for output in outputs] == [4, 4]
