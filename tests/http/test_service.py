"""The HTTP service, exercised with a real client against uvicorn on a free loopback port."""

from __future__ import annotations

import base64
import io
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pydicom
import pytest

from radfm.answering.identity import ModelIdentity
from radfm.answering.limits import Limits
from radfm.answering.options import GenerationOptions
from radfm.http.cli import serve
from radfm.http.service import BackgroundServer, create_app

PROMPT3 = "Compare <image> with <image> and <image>."


class BlockingAnswerer:
    """No model: holds each answer until released (to fill the queue deterministically)."""

    identity = ModelIdentity("blocking", "0", "0" * 64)
    max_images = 2

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = threading.Semaphore(0)

    def prepare(self, paths):
        return [Path(p).name for p in paths]

    def answer(self, prompt, images, options):
        self.started.release()
        self.release.wait(timeout=30)
        return f"{len(images)} image(s)"


def _files(ct_series_dir: Path, small_scans: dict[str, Path]) -> list:
    files = [("files", (p.name, p.read_bytes(), "application/dicom")) for p in sorted(ct_series_dir.iterdir())]
    files.append(("files", ("brain.nii.gz", small_scans["nifti"].read_bytes(), "application/gzip")))
    files.append(("files", ("chest.png", small_scans["png"].read_bytes(), "image/png")))
    return files


def test_health(server, tiny_answerer):
    body = httpx.get(f"{server.url}/health").json()
    assert body["status"] == "ok"
    assert body["model"]["weights_sha256"] == tiny_answerer.identity.weights_sha256
    assert server.host == "127.0.0.1"


def test_answer_matches_direct_model_and_carries_sr(server, tiny_answerer, ct_series_dir, small_scans):
    response = httpx.post(f"{server.url}/v1/answer", files=_files(ct_series_dir, small_scans),
                          data={"prompt": PROMPT3, "max_new_tokens": "6", "sr": "true"}, timeout=120)
    assert response.status_code == 200, response.text
    body = response.json()
    assert [s["kind"] for s in body["scans"]] == ["dicom", "nifti", "png"]
    assert len(body["scans"][0]["files"]) == 4  # the series is one scan
    images = tiny_answerer.prepare([ct_series_dir, small_scans["nifti"], small_scans["png"]])
    expected = tiny_answerer.answer(PROMPT3, images, GenerationOptions(max_new_tokens=6))
    assert body["answer"] == expected  # greedy decoding: the service adds nothing of its own
    sr = pydicom.dcmread(io.BytesIO(base64.b64decode(body["sr"])))
    assert sr.VerificationFlag == "UNVERIFIED"
    assert len(sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence) == 4


def test_concurrent_requests_are_served_one_at_a_time(server, probe, small_scans):
    def ask(i: int) -> httpx.Response:
        files = [("files", ("chest.png", small_scans["png"].read_bytes(), "image/png"))]
        return httpx.post(f"{server.url}/v1/answer", files=files,
                          data={"prompt": f"Question {i}: what is shown?", "max_new_tokens": "4"}, timeout=120)

    before = httpx.get(f"{server.url}/health").json()["queue"]["served"]
    with ThreadPoolExecutor(max_workers=6) as pool:
        responses = list(pool.map(ask, range(6)))
    assert [r.status_code for r in responses] == [200] * 6
    assert all(r.json()["prompt"].startswith("<image>Question") for r in responses)  # placeholder prepended
    assert probe.peak == 1  # never two model calls at once
    assert httpx.get(f"{server.url}/health").json()["queue"]["served"] == before + 6


@pytest.mark.parametrize(
    ("files", "data", "status", "reason"),
    [
        ([], {"prompt": "hi"}, 400, "no scans uploaded"),
        ([("files", ("notes.txt", b"hello world", "text/plain"))], {"prompt": "hi"}, 415, "notes.txt: unsupported file type .txt"),
        ([("files", ("bad.nii.gz", b"not gzip at all", "application/gzip"))], {"prompt": "hi"}, 415, "bad.nii.gz"),
        ([("files", ("empty.png", b"", "image/png"))], {"prompt": "hi"}, 400, "empty.png: empty file"),
        ([("files", ("broken.dcm", b"\0" * 128 + b"DICM" + b"\x02\x00garbage", "application/dicom"))], {"prompt": "hi"}, 422, "broken.dcm"),
        ([("files", ("fake.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 64, "image/png"))], {"prompt": "hi"}, 422, "cannot read scan"),
        ([("upload", ("a.png", b"\x89PNG\r\n\x1a\n", "image/png"))], {"prompt": "hi"}, 400, "field 'files'"),
        ("png", {}, 400, "missing form field 'prompt'"),
        ("png", {"prompt": "<image> and <image>"}, 422, "2 <image> placeholder(s) but 1 image"),
        ("png", {"prompt": "hi", "max_new_tokens": "lots"}, 422, "max_new_tokens"),
        ("png", {"prompt": "hi", "max_new_tokens": "999"}, 422, "<= 16"),
        ("png4", {"prompt": "hi"}, 413, "4 scans sent; the limit is 3"),
        ("big", {"prompt": "hi"}, 413, "exceeds the limit"),
    ],
)
def test_bad_uploads_get_4xx_with_reason(server, small_scans, files, data, status, reason):
    png = small_scans["png"].read_bytes()
    if files == "png":
        files = [("files", ("chest.png", png, "image/png"))]
    elif files == "png4":
        files = [("files", (f"c{i}.png", png, "image/png")) for i in range(4)]
    elif files == "big":
        files = [("files", ("huge.png", png + b"\0" * (3 * 1024 * 1024), "image/png"))]
    response = httpx.post(f"{server.url}/v1/answer", files=files or None, data=data, timeout=60)
    assert response.status_code == status, response.text
    assert reason in response.json()["error"]


def test_not_multipart_is_rejected(server):
    response = httpx.post(f"{server.url}/v1/answer", json={"prompt": "hi"})
    assert response.status_code == 415 and "multipart/form-data" in response.json()["error"]


def test_full_queue_answers_503_and_then_drains(small_scans):
    blocking = BlockingAnswerer()
    png = ("files", ("chest.png", small_scans["png"].read_bytes(), "image/png"))
    with BackgroundServer(create_app(blocking, Limits(max_queue=1))) as running, ThreadPoolExecutor(2) as pool:
        ask = lambda: httpx.post(f"{running.url}/v1/answer", files=[png], data={"prompt": "hi"}, timeout=60)  # noqa: E731
        first = pool.submit(ask)
        assert blocking.started.acquire(timeout=30)  # first request is running
        second = pool.submit(ask)  # waits in the queue
        for _ in range(200):
            if httpx.get(f"{running.url}/health").json()["queue"]["waiting"] == 1:
                break
            threading.Event().wait(0.02)
        third = ask()
        assert third.status_code == 503 and "retry later" in third.json()["error"]
        blocking.release.set()
        assert first.result().status_code == 200 and second.result().status_code == 200


def test_serve_refuses_remote_bind_without_flag():
    with pytest.raises(SystemExit, match="no authentication"):
        serve(host="0.0.0.0")


def test_the_openapi_bodies_are_the_models_the_routes_validate_with(small_scans):
    """Issue 30 item 2: /openapi.json is generated from the pydantic models (a new option appears in the schema
    without a hand-written copy), and the answer form's options reach the request path parsed once."""
    from fastapi.testclient import TestClient

    from radfm.http.api_schema import AnswerForm, ChatCompletionRequest

    seen = []

    class Recording(BlockingAnswerer):
        def answer(self, prompt, images, options):
            seen.append(options)
            return "ok"

    client = TestClient(create_app(Recording(), Limits(max_new_tokens=32)))
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    form = paths["/v1/answer"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    chat = paths["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert set(form["properties"]) == set(AnswerForm.model_fields) | {"files"}
    assert set(chat["properties"]) == set(ChatCompletionRequest.model_fields)
    assert {"ignore_eos", "min_new_tokens"} <= set(form["properties"]) and {"ignore_eos", "min_tokens"} <= set(chat["properties"])
    assert form["additionalProperties"] is False and chat["additionalProperties"] is False
    assert "ChatCompletion" in schema["components"]["schemas"]  # the response body, from its model too
    png = ("files", ("chest.png", small_scans["png"].read_bytes(), "image/png"))
    reply = client.post("/v1/answer", files=[png], data={"prompt": "hi", "max_new_tokens": "8", "ignore_eos": "true"})
    assert reply.status_code == 200, reply.text
    assert reply.json()["generation"]["ignore_eos"] is True and seen[0].max_new_tokens == 8 and seen[0].ignore_eos
    refused = client.post("/v1/answer", files=[png], data={"prompt": "hi", "ignore_eso": "true"})
    assert refused.status_code == 422 and "did you mean 'ignore_eos'" in refused.json()["error"]
