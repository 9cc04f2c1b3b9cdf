"""The vLLM engine behind the request path (radfm/answering/vllm_engine.py): continuous batching with the
same answers, queue limit, deadline, stream and cancellation as the transformers model thread.

Runs in the vLLM environment (tests/vllm/conftest.py: not collected without vLLM, an error in CI).
One engine on a tiny model for the module (its heads are 32 wide: vLLM's CPU attention has no 16).
"""

from __future__ import annotations

import asyncio
import time

import pytest

from radfm.answering.answerer import AnswerStream
from radfm.answering.limits import Limits
from radfm.answering.options import GenerationOptions
from radfm.answering.refusal import RequestError
from radfm.answering.request import AnswerRequest, RequestPath, ScanInput
from radfm.answering.vllm_engine import VLLMAnswerer, VLLMEngine

PROMPTS = ["<image> Which modality?", "Describe <image>.", "<image> Where is the lesion?", "Is <image> normal?"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    import torch

    from radfm import RadFMConfig, RadFMForConditionalGeneration
    from radfm.model.loading import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    torch.manual_seed(0)
    config = RadFMConfig.preset("tiny", vocab_size=tokenizer.convert_tokens_to_ids("<image>"), num_hidden_layers=4,
                                num_attention_heads=2, num_key_value_heads=2)
    folder = tmp_path_factory.mktemp("engine") / "tiny32"
    RadFMForConditionalGeneration(config).eval().save_pretrained(folder, tokenizer=tokenizer)
    return folder


@pytest.fixture(scope="module")
def answerer(model_dir):
    from radfm.answering.engines import load_answerer

    answerer = load_answerer(model_dir, "vllm", dtype="float32")
    yield answerer
    VLLMAnswerer.close_shared()


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    import nibabel as nib
    import numpy as np

    path = tmp_path_factory.mktemp("scans") / "ct.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((32, 32, 8), dtype=np.float32), np.eye(4)), path)
    return path


def long_options(tokens: int) -> GenerationOptions:
    """``tokens`` new tokens exactly: EOS ignored (``ignore_eos``, one of the options' vLLM extras)."""
    try:
        return GenerationOptions(max_new_tokens=tokens, ignore_eos=True)
    except TypeError:  # options without the extras yet (they land with the pydantic options): set it as parsed
        options = GenerationOptions(max_new_tokens=tokens)
        options.ignore_eos = True
        return options


def test_concurrent_requests_batch_and_answer_as_the_transformers_engine_does(answerer, model_dir, scan):
    from radfm.answering.answerer import ModelAnswerer

    path = RequestPath(answerer, Limits())
    assert isinstance(path.engine, VLLMEngine)
    peak = 0

    async def watch(done: asyncio.Event) -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, path.counters()["running"])
            await asyncio.sleep(0.005)

    async def run_all():
        done = asyncio.Event()
        watcher = asyncio.ensure_future(watch(done))
        results = await asyncio.gather(*(path.run(AnswerRequest(prompt, [ScanInput("ct.nii.gz", path=scan)],
                                                                {"max_new_tokens": 6})) for prompt in PROMPTS))
        done.set()
        await watcher
        return results

    try:
        results = asyncio.run(run_all())
    finally:
        path.close()
    assert peak > 1  # several requests were in vLLM at once (the model thread never has more than 1)
    reference = ModelAnswerer.from_model_dir(model_dir, device="cpu", dtype="float32")
    images = reference.prepare([scan])
    expected = reference.answer_batch(PROMPTS, [images] * len(PROMPTS), GenerationOptions(max_new_tokens=6))
    assert [r.text for r in results] == expected  # greedy: the same answers as transformers' generate
    assert all(r.usage["completion_tokens"] >= 1 and r.usage["prompt_tokens"] > 34 for r in results)


def test_the_queue_limit_answers_503_beyond_what_vllm_runs(answerer, scan):
    engine = VLLMEngine(answerer, Limits(max_queue=1), max_running=1)  # a second request waits, a third is refused
    images = answerer.prepare([scan])

    async def scenario():
        first = asyncio.ensure_future(engine.answer(PROMPTS[0], images, long_options(8), None))
        second = asyncio.ensure_future(engine.answer(PROMPTS[1], images, long_options(8), None))
        await asyncio.sleep(0)  # both are handed to vLLM (counted) before they first wait
        assert engine.counters() == {"waiting": 1, "running": 1, "served": 0}
        with pytest.raises(RequestError) as refused:
            await engine.answer(PROMPTS[2], images, long_options(8), None)
        return refused.value, await first, await second

    refused, first, second = asyncio.run(scenario())
    assert refused.status_code == 503 and refused.code == "queue_full"
    assert first[0] and second[0] and engine.counters()["served"] == 2


def test_the_deadline_stops_generation_with_504_and_frees_the_engine(answerer, scan):
    images = answerer.prepare([scan])
    engine = VLLMEngine(answerer, Limits(generation_timeout_s=0.05))

    async def scenario():
        with pytest.raises(RequestError) as late:
            await engine.answer(PROMPTS[0], images, long_options(1500), None)
        return late.value

    started = time.monotonic()
    error = asyncio.run(scenario())
    assert error.status_code == 504 and error.code == "timeout" and "time limit of 0.05 s" in str(error)
    assert time.monotonic() - started < 30  # not the 1500 tokens
    deadline = time.monotonic() + 10
    while answerer.loop.llm.get_num_unfinished_requests() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert answerer.loop.llm.get_num_unfinished_requests() == 0  # the request was aborted in vLLM


def test_streaming_pieces_and_cancellation_abort_the_vllm_request(answerer, scan):
    images = answerer.prepare([scan])
    engine = VLLMEngine(answerer, Limits())
    pieces: list[str] = []

    async def scenario():
        loop = asyncio.get_running_loop()
        got_three = asyncio.Event()

        def on_text(piece: str) -> None:
            pieces.append(piece)
            if len(pieces) == 3:
                loop.call_soon_threadsafe(got_three.set)

        stream = AnswerStream(on_text=on_text)
        task = asyncio.ensure_future(engine.answer(PROMPTS[0], images, long_options(1500), stream))
        await got_three.wait()
        task.cancel()  # the client is gone
        with pytest.raises(asyncio.CancelledError):
            await task
        return stream

    stream = asyncio.run(scenario())
    assert len(pieces) >= 3 and stream.cancelled and stream.completion_tokens < 1500
    deadline = time.monotonic() + 10
    while answerer.loop.llm.get_num_unfinished_requests() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert answerer.loop.llm.get_num_unfinished_requests() == 0
    assert engine.counters() == {"waiting": 0, "running": 0, "served": 1}


def test_a_stop_string_ends_the_vllm_request_with_the_text_before_it(answerer, scan):
    images = answerer.prepare([scan])
    engine = VLLMEngine(answerer, Limits())
    whole = asyncio.run(engine.answer(PROMPTS[0], images, GenerationOptions(max_new_tokens=12), AnswerStream()))[0]
    assert len(whole) > 4
    stop = whole[2:4]
    stream = AnswerStream(stop=[stop])
    text = asyncio.run(engine.answer(PROMPTS[0], images, GenerationOptions(max_new_tokens=12), stream))[0]
    assert text == whole[: whole.index(stop)].rstrip() and stream.finish_reason == "stop"


def test_beam_search_is_refused_naming_the_engine(answerer, scan):
    engine = VLLMEngine(answerer, Limits())
    with pytest.raises(RequestError) as refused:
        asyncio.run(engine.answer(PROMPTS[0], answerer.prepare([scan]), GenerationOptions(num_beams=2), None))
    assert refused.value.status_code == 422 and "num_beams=2" in str(refused.value) and "vllm" in str(refused.value)
