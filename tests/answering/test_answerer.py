"""The answerer behind the request path: the prompt is tokenised once and the answer decoded once per request,
both through the model's processor."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from radfm.answering.limits import Limits
from radfm.answering.request import AnswerRequest, RequestPath, ScanInput


@pytest.fixture
def counted(tiny_model_dir, counting_tokenizer):
    from radfm.answering.answerer import ModelAnswerer

    answerer = ModelAnswerer.from_model_dir(tiny_model_dir, device="cpu", dtype="float32")
    counting = counting_tokenizer(answerer.processor.tokenizer)
    answerer.processor.tokenizer = counting
    return answerer, counting


@pytest.fixture
def two_scans(tmp_path) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i, shape in enumerate(((24, 20, 10), (30, 30, 6))):
        path = tmp_path / f"scan{i}.nii.gz"
        nib.save(nib.Nifti1Image(rng.random(shape, dtype=np.float32), np.eye(4)), path)
        paths.append(path)
    return paths


def test_a_request_tokenises_the_prompt_once_and_decodes_once(counted, two_scans):
    """Through the request path (which streams: the streamer's text is the answer, nothing decodes it again)."""
    answerer, counting = counted
    path = RequestPath(answerer, Limits())
    request = AnswerRequest("Compare <image> with <image>. Findings:", [ScanInput(p.name, path=p) for p in two_scans],
                            {"max_new_tokens": 4})
    result = path.run_blocking(request)
    assert counting.encode_calls == 1  # both text segments of the prompt in one tokenizer call
    assert counting.batch_decode_calls == 0  # decoded by the streamer only
    assert isinstance(result.text, str) and result.usage["prompt_tokens"] > 2 * 34


def test_a_direct_answer_decodes_once_through_the_processor(counted, two_scans):
    from radfm.answering.options import parse_options

    answerer, counting = counted
    images = answerer.prepare(two_scans)
    assert all(tuple(i.shape[1:3]) == tuple(answerer.processor.image_processor.size_3d) for i in images)
    texts = answerer.answer_batch(["<image> left, <image> right?", "Describe <image> and <image>."], [images, images],
                                  parse_options({"max_new_tokens": 3}, Limits()))
    assert len(texts) == 2
    assert counting.encode_calls == 1 and counting.batch_decode_calls == 1  # one batch: one call each


class _EOSFirst:
    """A logits processor that makes EOS the likeliest token at every step it is allowed (a model that wants to
    stop at once); a step where generation masked EOS (-inf: ``min_new_tokens``) stays masked."""

    def __init__(self, eos_token_id: int) -> None:
        self.eos = eos_token_id

    def __call__(self, input_ids, scores):
        import torch

        allowed = ~torch.isinf(scores[:, self.eos])
        scores[:, self.eos] = torch.where(allowed, torch.full_like(scores[:, self.eos], 1e4), scores[:, self.eos])
        return scores


@pytest.fixture
def eager_to_stop(tiny_model_dir):
    from radfm.answering.answerer import ModelAnswerer

    answerer = ModelAnswerer.from_model_dir(tiny_model_dir, device="cpu", dtype="float32")
    answerer.generate_kwargs["logits_processor"] = [_EOSFirst(answerer.processor.tokenizer.eos_token_id)]
    return answerer


@pytest.mark.parametrize("options, tokens", [
    ({"max_new_tokens": 6}, 1),  # EOS at once: the answer ends there
    ({"max_new_tokens": 6, "min_new_tokens": 4}, 5),  # EOS masked for 4 tokens, then taken
    ({"max_new_tokens": 6, "ignore_eos": True}, 6),  # never stops at EOS: exactly max_new_tokens
    ({"max_new_tokens": 6, "ignore_eos": "true", "do_sample": True, "seed": 1}, 6),  # sampling too (form strings)
])
def test_min_new_tokens_and_ignore_eos_fix_the_answer_length_on_the_transformers_engine(
        eager_to_stop, two_scans, options, tokens):
    """Issue 29 item 3: vLLM's min_tokens / ignore_eos fix an answer's length (benchmarks); the transformers engine
    honours them through its GenerationConfig (min_new_tokens), counted by the stream."""
    path = RequestPath(eager_to_stop, Limits())
    result = path.run_blocking(AnswerRequest("Describe <image> and <image>.",
                                             [ScanInput(p.name, path=p) for p in two_scans], options))
    assert result.usage["completion_tokens"] == tokens
    assert result.options.ignore_eos is (options.get("ignore_eos") == "true" or options.get("ignore_eos") is True)
    if tokens == 6:
        assert result.finish_reason == "length"


def test_generation_options_become_one_generation_config():
    from radfm.answering.options import GenerationOptions

    greedy = GenerationOptions(max_new_tokens=9, ignore_eos=True, temperature=0.5).generation_config(eos_token_id=2)
    assert (greedy.max_new_tokens, greedy.min_new_tokens, greedy.do_sample, greedy.eos_token_id) == (9, 9, False, 2)
    assert greedy.temperature == 1.0  # sampling knobs only when sampling
    sampled = GenerationOptions(max_new_tokens=9, min_new_tokens=3, do_sample=True, temperature=0.5, top_k=0)
    config = sampled.generation_config()
    assert (config.min_new_tokens, config.do_sample, config.temperature, config.top_k) == (3, True, 0.5, 0)
