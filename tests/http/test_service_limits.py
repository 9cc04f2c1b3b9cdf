"""The service under hostile requests: unbounded generation, non-finite floats, long names, slow uploads."""

from __future__ import annotations

import socket
import tempfile
import time

import httpx
import pytest

from radfm.answering.answerer import GenerationTimeout, check_deadline, deadline_passed, generation_deadline
from radfm.answering.identity import ModelIdentity
from radfm.answering.limits import Limits
from radfm.answering.options import GenerationOptions
from radfm.http.http_guard import GuardLimits
from radfm.http.service import BackgroundServer, create_app


class SlowAnswerer:
    """No model: "decodes" one token per 50 ms for ``max_new_tokens`` tokens, checking the deadline like a model does."""

    identity = ModelIdentity("slow", "0", "0" * 64)
    max_images = 2

    def __init__(self) -> None:
        self.finished: list[float] = []

    def prepare(self, paths):
        return [str(p) for p in paths]

    def answer(self, prompt, images, options):
        started = time.monotonic()
        try:
            for _ in range(options.max_new_tokens):
                check_deadline()
                time.sleep(0.05)
            return "done"
        finally:
            self.finished.append(time.monotonic() - started)


@pytest.mark.parametrize("fields, reason", [
    ({"temperature": "inf", "do_sample": "true"}, "temperature=inf"),
    ({"temperature": "nan", "do_sample": "true"}, "finite"),
    ({"temperature": "1e-300", "do_sample": "true"}, "temperature"),
    ({"repetition_penalty": "inf"}, "repetition_penalty=inf"),
    ({"repetition_penalty": "1e308"}, "repetition_penalty"),
    ({"num_beams": "96"}, "num_beams=96: expected in [1, 4]"),
    ({"num_beams": "4", "max_new_tokens": "16"}, "= 64: expected at most 40"),
    ({"top_p": "nan"}, "top_p"),
    ({"seed": "-1"}, "seed=-1"),
    ({"seed": "99999999999999999999999"}, "seed="),
])
def test_unbounded_or_non_finite_options_get_422(server_limits, small_scans, fields, reason):
    png = ("files", ("chest.png", small_scans["png"].read_bytes(), "image/png"))
    response = httpx.post(f"{server_limits.url}/v1/answer", files=[png], data={"prompt": "hi", **fields}, timeout=60)
    assert response.status_code == 422, response.text
    assert reason in response.json()["error"]


@pytest.fixture(scope="module")
def server_limits(served):
    limits = Limits(max_request_bytes=2 * 1024 * 1024, max_images=3, max_new_tokens=16,
                           max_num_beams=4, max_beam_tokens=40)
    with BackgroundServer(create_app(served, limits)) as running:
        yield running


def test_validate_caps_apply_to_every_caller_by_default():
    """Routes that call ``validate(max_new_tokens_limit=...)`` only (as _parse_options did) still get the caps."""
    with pytest.raises(ValueError, match="num_beams=96"):
        GenerationOptions(num_beams=96, max_new_tokens=8).validate(max_new_tokens_limit=1024)
    with pytest.raises(ValueError, match="max_new_tokens=1024 x num_beams=8"):
        GenerationOptions(num_beams=8, max_new_tokens=1024).validate(max_new_tokens_limit=1024)
    with pytest.raises(ValueError, match="temperature=inf"):
        GenerationOptions(temperature=float("inf"), do_sample=True).validate()
    assert GenerationOptions(num_beams=4, max_new_tokens=1024).validate(max_new_tokens_limit=1024).num_beams == 4


def test_slow_generation_is_stopped_and_the_worker_freed(small_scans):
    """A 1000-token "generation" at 50 ms/token is stopped at the 0.5 s limit; the next request runs at once."""
    slow = SlowAnswerer()
    png = ("files", ("chest.png", small_scans["png"].read_bytes(), "image/png"))
    limits = Limits(max_new_tokens=1000, max_beam_tokens=1000, generation_timeout_s=0.5)
    with BackgroundServer(create_app(slow, limits)) as running:
        started = time.monotonic()
        first = httpx.post(f"{running.url}/v1/answer", files=[png], data={"prompt": "hi", "max_new_tokens": "1000"}, timeout=60)
        second = httpx.post(f"{running.url}/v1/answer", files=[png], data={"prompt": "hi", "max_new_tokens": "3"}, timeout=60)
        elapsed = time.monotonic() - started
    assert first.status_code == 504, first.text
    assert "time limit of 0.5 s" in first.json()["error"]
    assert second.status_code == 200 and second.json()["answer"] == "done"
    assert slow.finished[0] < 2.0 and elapsed < 10  # 1000 tokens would take 50 s


def test_model_answerer_stops_at_the_deadline(tiny_answerer, small_scans):
    """The real model path: the stopping criterion ends decoding and the cut-off answer is refused."""
    images = tiny_answerer.prepare([small_scans["png"]])
    with generation_deadline(0.0):
        assert deadline_passed()
        with pytest.raises(GenerationTimeout, match="time limit of 0 s"):
            tiny_answerer.answer("hi", images, GenerationOptions(max_new_tokens=8))
    assert not deadline_passed()  # the deadline ends with the block
    with generation_deadline(60):
        assert tiny_answerer.answer("hi", images, GenerationOptions(max_new_tokens=3)) is not None


def test_three_hundred_character_upload_name(server, small_scans):
    name = "a" * 296 + ".png"
    response = httpx.post(f"{server.url}/v1/answer", files=[("files", (name, small_scans["png"].read_bytes(), "image/png"))],
                          data={"prompt": "hi", "max_new_tokens": "2"}, timeout=60)
    assert response.status_code == 200, response.text
    assert response.json()["scans"][0]["files"] == [name]
    bad = httpx.post(f"{server.url}/v1/answer", files=[("files", ("b" * 300, b"hello", "text/plain"))],
                     data={"prompt": "hi"}, timeout=60)
    assert bad.status_code == 415


def test_slow_upload_body_is_dropped_and_its_temp_dir_removed(small_scans, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    slow = SlowAnswerer()
    guard = GuardLimits(header_timeout_s=1.0, body_idle_timeout_s=0.6, body_timeout_s=5)
    boundary = b"XyZ"
    part = (b"--XyZ\r\nContent-Disposition: form-data; name=\"files\"; filename=\"chest.png\"\r\n"
            b"Content-Type: image/png\r\n\r\n" + small_scans["png"].read_bytes()[:100])
    head = (b"POST /v1/answer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=" + boundary
            + b"\r\nContent-Length: 100000\r\n\r\n")
    with BackgroundServer(create_app(slow, Limits()), guard=guard) as running:
        clients = []
        for _ in range(3):
            client = socket.create_connection(("127.0.0.1", running.port), timeout=5)
            client.sendall(head + part)
            clients.append(client)
        time.sleep(0.3)
        # the request's folder is made once its body is in: a body that never completes leaves nothing
        assert not list(tmp_path.glob("radfm-request-*"))
        replies = [client.recv(4096) for client in clients]
        for client in clients:
            client.close()
        for _ in range(100):
            if not list(tmp_path.glob("radfm-request-*")):
                break
            time.sleep(0.05)
    assert all(reply.startswith(b"HTTP/1.1 408") for reply in replies), replies
    assert not list(tmp_path.glob("radfm-request-*"))


def test_service_refuses_rebinding_host(server):
    response = httpx.get(f"{server.url}/health", headers={"Host": "evil.example"})
    assert response.status_code == 403 and "DNS rebinding" in response.json()["error"]
