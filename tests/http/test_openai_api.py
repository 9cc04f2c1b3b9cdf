"""The official ``openai`` client against a real ``radfm serve`` (demo model, loopback subprocess).

A 2D PNG as ``image_url``, a 3D NIfTI as a ``file`` part and a two-scan prompt each get the
demo model's right answer (the ground truth of the shipped phantoms), streamed and not; bad
requests get 4xx answers in OpenAI's error shape.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import httpx
import pytest

openai = pytest.importorskip("openai", reason="the OpenAI-compatible API is tested with the official openai client")

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "bundles" / "radfm" / "models" / "demo"
SAMPLES = ROOT / "bundles" / "radfm" / "sample_data"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def service_url(radfm_server):
    """``radfm serve`` with the demo model on a free loopback port, as a user starts it."""
    args = ["serve", "--model", str(DEMO), "--device", "cpu", "--dtype", "float32", "--max_new_tokens_limit", "64"]
    with radfm_server(args, "/health", timeout_s=300) as url:
        yield url


@pytest.fixture(scope="module")
def client(service_url):
    return openai.OpenAI(base_url=f"{service_url}/v1", api_key="not-used", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def model_name(client) -> str:
    models = client.models.list().data
    assert len(models) == 1
    return models[0].id


def _b64(name: str) -> str:
    return base64.b64encode((SAMPLES / name).read_bytes()).decode("ascii")


def _png_part() -> dict:
    return {"type": "image_url", "image_url": {"url": "data:image/png;base64," + _b64("xray_phantom.png")}}


def _nifti_part() -> dict:
    return {"type": "file", "file": {"filename": "ct_phantom.nii.gz", "file_data": _b64("ct_phantom.nii.gz")}}


TRUTH = json.loads((SAMPLES / "truth.json").read_text(encoding="utf-8"))
CASES = {
    # 2D PNG as image_url, placed where it stands (before the text)
    "png_image_url": ([_png_part(), {"type": "text", "text": "Does the patient have cyst?"}],
                      "<image> Does the patient have cyst?",
                      lambda answer: answer.lower().startswith("yes") == ("cyst" in TRUTH["xray_phantom.png"]["diseases"])),
    # 3D NIfTI as a file part, placed by the <image> written in the text
    "nifti_file": ([{"type": "text", "text": "What is the modality of the input scan <image>?"}, _nifti_part()],
                   "What is the modality of the input scan <image>?",
                   lambda answer: answer.strip() == TRUTH["ct_phantom.nii.gz"]["modality"]),
    # two scans, 2D and 3D, in message order
    "two_scans": ([{"type": "text", "text": "What are the modalities of these scans?"}, _png_part(), _nifti_part()],
                  "What are the modalities of these scans? <image> <image>",
                  lambda answer: "X-ray" in answer and "CT" in answer and answer.index("X-ray") < answer.index("CT")),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_right_answers_streaming_and_not(client, model_name, case):
    content, expected_prompt, is_right = CASES[case]
    messages = [{"role": "user", "content": content}]
    completion = client.chat.completions.create(model=model_name, messages=messages, max_tokens=16)
    answer = completion.choices[0].message.content
    assert is_right(answer), answer
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.completion_tokens >= 1 and completion.usage.prompt_tokens > 10
    assert completion.model_extra["radfm"]["prompt"] == expected_prompt
    assert completion.model_extra["radfm"]["verification"] == "UNVERIFIED"

    pieces, finish = [], None
    stream = client.chat.completions.create(model=model_name, messages=messages, max_tokens=16, stream=True,
                                            stream_options={"include_usage": True})
    usage = None
    for chunk in stream:
        assert chunk.object == "chat.completion.chunk"
        if chunk.usage is not None:
            usage = chunk.usage
        if chunk.choices:
            if chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
            finish = chunk.choices[0].finish_reason or finish
    assert "".join(pieces) == answer  # greedy: the streamed answer is the same text
    assert finish == "stop" and usage.completion_tokens == completion.usage.completion_tokens
    if case == "two_scans":
        assert len(pieces) >= 2  # token by token, not one block


def test_sse_wire_format_and_stop(service_url, model_name):
    """Raw SSE: chat.completion.chunk lines, ending with ``data: [DONE]``; ``stop`` cuts the answer."""
    body = {"model": model_name, "max_tokens": 16, "stream": True, "stop": [" and"],
            "messages": [{"role": "user", "content": [{"type": "text", "text": "What are the modalities of these scans?"},
                                                       _png_part(), _nifti_part()]}]}
    with httpx.stream("POST", f"{service_url}/v1/chat/completions", json=body, timeout=120) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text == "X-ray"  # cut before the stop string, which is never sent
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def _error_of(call) -> tuple[int, dict]:
    with pytest.raises(openai.APIStatusError) as caught:
        call()
    return caught.value.status_code, caught.value.response.json()


@pytest.mark.parametrize("part, param", [
    ({"type": "image_url", "image_url": {"url": "data:image/png;base64,@@not base64@@"}}, "messages[0].content[1].image_url.url"),
    ({"type": "image_url", "image_url": {"url": "https://example.org/chest.png"}}, "messages[0].content[1].image_url.url"),
    ({"type": "file", "file": {"filename": "scan.nii.gz", "file_data": base64.b64encode(b"not a scan").decode()}},
     "messages[0].content[1]"),
    ({"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}, "messages[0].content[1].type"),
])
def test_malformed_part_is_a_400_in_openai_shape(client, model_name, part, param):
    status, body = _error_of(lambda: client.chat.completions.create(
        model=model_name, max_tokens=4, messages=[{"role": "user", "content": [{"type": "text", "text": "Which modality?"}, part]}]))
    assert status == 400
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["param"] == param
    assert param.split(".")[0] in body["error"]["message"]


def test_refused_parameters(client, model_name):
    messages = [{"role": "user", "content": "<image> Which modality?"}]
    status, body = _error_of(lambda: client.chat.completions.create(model=model_name, messages=messages, n=2))
    assert status == 400 and body["error"]["param"] == "n"
    status, body = _error_of(lambda: client.chat.completions.create(model=model_name, messages=messages, max_tokens=10_000))
    assert status == 400 and body["error"]["param"] == "max_tokens" and "<= 64" in body["error"]["message"]
    status, body = _error_of(lambda: client.chat.completions.create(model="gpt-4o", messages=messages))
    assert status == 404 and body["error"]["code"] == "model_not_found"
    status, body = _error_of(lambda: client.chat.completions.create(
        model=model_name, messages=[{"role": "user", "content": "<image> one placeholder, no scan"}]))
    assert status == 400 and "placeholder" in body["error"]["message"]


def test_vllm_sampling_extras_fix_the_answer_length(client, model_name):
    """Issue 29 item 3: ``min_tokens`` and ``ignore_eos`` (vLLM's sampling extras, sent as ``extra_body`` by the
    openai client) reach the engine: the demo model's short answer is stretched to a fixed length."""
    messages = [{"role": "user", "content": [_png_part(), {"type": "text", "text": "Which modality?"}]}]
    plain = client.chat.completions.create(model=model_name, messages=messages, max_tokens=24)
    assert plain.usage.completion_tokens < 24  # the demo model stops early on its own (EOS)
    fixed = client.chat.completions.create(model=model_name, messages=messages, max_tokens=24,
                                           extra_body={"ignore_eos": True})
    assert fixed.usage.completion_tokens == 24 and fixed.choices[0].finish_reason == "length"
    assert fixed.model_extra["radfm"]["generation"]["ignore_eos"] is True
    at_least = client.chat.completions.create(model=model_name, messages=messages, max_tokens=24,
                                              extra_body={"min_tokens": 16})
    assert 16 <= at_least.usage.completion_tokens <= 24
    status, body = _error_of(lambda: client.chat.completions.create(
        model=model_name, messages=messages, max_tokens=4, extra_body={"min_tokens": 8}))
    assert status == 400 and body["error"]["param"] == "min_tokens" and "max_tokens" in body["error"]["message"]
