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
