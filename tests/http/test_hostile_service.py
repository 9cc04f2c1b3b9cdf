"""Hostile input on the service: issue 22 (bodies, kept uploads, temp folders, flags, /docs) and issue 28
(S1: JSON depth and huge numbers; S4: kept display volumes)."""

from __future__ import annotations

import errno
import json
import os
import socket
import time

import httpx
import numpy as np
import pytest

from radfm.answering.limits import Limits
from radfm.http.cli import serve
from radfm.http.service import BackgroundServer, create_app

MiB = 1024 * 1024


def _chunked(total: int, multipart: bool, piece: int = 64 * 1024):
    """A well-formed beginning of a body that goes on past ``total`` bytes, without Content-Length (chunked)."""
    yield (b'--x\r\nContent-Disposition: form-data; name="files"; filename="a.nii"\r\n\r\n' if multipart
           else b'{"messages": "')
    sent = 0
    while sent < total:
        yield b"a" * piece
        sent += piece


# ---------------------------------------------------------------- L1: chunked bodies ----
@pytest.mark.parametrize("route", ["/v1/answer", "/chat/api/scans", "/chat/api/answer", "/chat/api/export/sr",
                                   "/v1/chat/completions"])
def test_chunked_body_over_the_limit_is_413_on_every_route(server, route):
    multipart = route in ("/v1/answer", "/chat/api/scans")
    content_type = "multipart/form-data; boundary=x" if multipart else "application/json"
    reply = httpx.post(f"{server.url}{route}", content=_chunked(3 * MiB, multipart), headers={"Content-Type": content_type},
                       timeout=60)
    assert reply.status_code == 413, reply.text
    error = reply.json()["error"]
    if route == "/v1/chat/completions":  # OpenAI's error shape
        assert error["code"] == "request_too_large" and "exceeds the limit" in error["message"]
    else:
        assert "exceeds the limit" in error


# ---------------------------------------------------------------- M2: kept scans have a byte budget ----
def test_kept_chat_scans_stay_within_a_byte_budget_oldest_dropped(tiny_answerer, small_scans, tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    png = small_scans["png"].read_bytes()  # each kept scan: its [3, H, W, D] model input (~MBs) and the file
    with BackgroundServer(create_app(tiny_answerer, Limits(max_kept_scan_bytes=40 * MiB))) as running:
        ids = []
        for index in range(12):
            reply = httpx.post(f"{running.url}/chat/api/scans", files=[("files", (f"c{index}.png", png))], timeout=60)
            assert reply.status_code == 200, reply.text
            ids.append(reply.json()["scans"][0]["id"])
        kept = [i for i in ids if httpx.get(f"{running.url}/chat/api/scans/{i}/slice.png", timeout=30).status_code == 200]
        assert 0 < len(kept) < len(ids) and kept == ids[-len(kept):]  # the oldest went first
        folders = list(tmp_path.glob("radfm-request-*"))
        assert len(folders) == len(kept)  # a dropped upload's folder is removed with it


def _kept_array_bytes(service) -> int:
    """What the chat page holds in memory, measured: the nbytes of every array each kept scan references."""
    total = 0
    for item in service.chat_scans._items.values():
        for array in (item.image, getattr(item._display, "data", None)):
            if array is not None:
                total += int(np.asarray(array).nbytes)
    return total


def test_kept_chat_scans_count_their_display_volumes(tiny_answerer, tmp_path):
    """S4 (issue 28): a small .nii.gz whose display volume is 16 MiB of float32; four uploads, a 112 MiB budget.

    Each kept scan holds its model input (48 MiB at the tiny model's 256² x 64 grid) and its
    display volume (read at upload to describe it): both count against the budget, so one
    scan is kept (two hold 128 MiB) and the arrays held stay under it.
    """
    import nibabel as nib

    from radfm.http.service import InferenceService

    volume = np.zeros((256, 256, 64), np.int16)
    volume[96:160, 96:160, 16:48] = 400  # a cube: compresses to a few KiB
    path = tmp_path / "big.nii.gz"
    nib.save(nib.Nifti1Image(volume, np.eye(4)), path)
    budget = 112 * MiB
    service = InferenceService(tiny_answerer, Limits(max_kept_scan_bytes=budget))
    try:
        with BackgroundServer(service.app) as running:
            for index in range(4):
                reply = httpx.post(f"{running.url}/chat/api/scans", files=[("files", (f"b{index}.nii.gz", path.read_bytes()))],
                                   timeout=120)
                assert reply.status_code == 200, reply.text
                assert _kept_array_bytes(service) <= budget
            assert len(service.chat_scans._items) == 1
    finally:
        service.close()


def test_one_upload_larger_than_the_whole_budget_is_refused(tiny_answerer, small_scans):
    with BackgroundServer(create_app(tiny_answerer, Limits(max_kept_scan_bytes=1024))) as running:
        reply = httpx.post(f"{running.url}/chat/api/scans", files=[("files", ("c.png", small_scans["png"].read_bytes()))],
                           timeout=60)
    assert reply.status_code == 413 and "keeps at most 1024 bytes" in reply.json()["error"]


# ---------------------------------------------------------------- M3: temp folders ----
def test_a_client_gone_mid_body_leaves_no_folder_and_no_traceback(tiny_answerer, tmp_path, monkeypatch, caplog):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 200000\r\n\r\n" + b'{"messages": [{"role": "user", "content": "' + b"x" * 5000)
    with BackgroundServer(create_app(tiny_answerer, Limits())) as running:
        for _ in range(3):
            client = socket.create_connection(("127.0.0.1", running.port), timeout=5)
            client.sendall(head)
            time.sleep(0.1)
            client.close()
        time.sleep(0.5)
        assert httpx.get(f"{running.url}/health", timeout=10).status_code == 200
    assert not list(tmp_path.glob("radfm-request-*"))
    assert "Traceback" not in caplog.text and "Exception in ASGI application" not in caplog.text


def test_a_full_temp_disk_is_507_naming_nothing_of_the_host(tiny_answerer, small_scans, tmp_path, monkeypatch):
    import tempfile

    import radfm.answering.scans as scans

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "secret" / "path"))

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(scans, "_copy", full)
    with BackgroundServer(create_app(tiny_answerer, Limits())) as running:
        reply = httpx.post(f"{running.url}/v1/answer", data={"prompt": "Which?"},
                           files=[("files", ("c.png", small_scans["png"].read_bytes()))], timeout=60)
    assert reply.status_code == 507 and "no space left" in reply.json()["error"]
    assert str(tmp_path) not in reply.text and "secret" not in reply.text
    assert not list(tmp_path.glob("radfm-request-*"))


def test_twenty_uploads_then_sigterm_leave_no_folder(radfm_server, tiny_model_dir, small_scans, tmp_path, monkeypatch):
    """The real CLI server: 20 uploads (kept chat scans and answers), SIGTERM (the fixture's exit), an
    empty TMPDIR; a stale folder of a dead earlier process is removed at start, a live process's is not."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    stale = temp / "radfm-request-999999999-old"  # no such pid
    stale.mkdir()
    (stale / "slice.dcm").write_bytes(b"x" * 1000)
    alive = temp / f"radfm-request-{os.getpid()}-busy"  # this test process: alive
    alive.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))
    args = ["serve", "--model", str(tiny_model_dir), "--device", "cpu", "--dtype", "float32"]
    with radfm_server(args, "/health", timeout_s=120) as url:
        assert not stale.exists() and alive.exists()
        png = small_scans["png"].read_bytes()
        for index in range(20):
            if index % 2:
                reply = httpx.post(f"{url}/chat/api/scans", files=[("files", (f"c{index}.png", png))], timeout=60)
            else:
                reply = httpx.post(f"{url}/v1/answer", data={"prompt": "Which?", "max_new_tokens": "2"},
                                   files=[("files", (f"c{index}.png", png))], timeout=60)
            assert reply.status_code == 200, reply.text
        assert len(list(temp.glob("radfm-request-*"))) == 11  # ten kept chat uploads + the live process's
    assert [p.name for p in temp.glob("radfm-request-*")] == [alive.name]  # after SIGTERM


# ---------------------------------------------------------------- L2: flags refused before any work ----
@pytest.mark.parametrize(("flags", "message"), [
    ({"max_request_mb": 0}, "--max_request_mb"),
    ({"max_queue": -1}, "--max_queue"),
    ({"max_scan_mb": -5}, "--max_scan_mb"),
    ({"header_timeout_s": -1}, "--header_timeout_s"),
    ({"port": -1}, "--port"),
    ({"port": 70000}, "--port"),
    ({"max_new_tokens_limit": 0}, "--max_new_tokens_limit"),
])
def test_serve_refuses_bad_flags_before_loading_the_model(tmp_path, flags, message):
    from radfm.utils.cli import UsageError

    with pytest.raises(UsageError, match=message):  # the model folder does not exist: never looked at
        serve(model=str(tmp_path / "no_model"), **flags)


def test_serve_on_a_port_in_use_exits_1_with_one_line_before_loading_the_model(tiny_model_dir, capsys):
    """Issue 31 item 8: the port is checked before the model loads; one line on stderr, exit 1 (a runtime error)."""
    from radfm.cli import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SystemExit) as exited:
            main(["serve", "--model", str(tiny_model_dir), "--port", str(port), "--device", "cpu"])
    out, err = capsys.readouterr()
    # SystemExit("radfm serve: error: ...") is what the CLI turns every runtime error into: Python exits 1 with it
    assert str(exited.value.code).startswith("radfm serve: error: ")
    message = str(exited.value.code)
    assert f"127.0.0.1:{port}" in message and "another process" in message and "\n" not in message
    assert "loading" not in out and "RadFM service on" not in out  # refused before the model loads


@pytest.mark.parametrize(("command", "flags", "message"), [
    ("generate", ["--max_new_tokens", "0"], "max_new_tokens"),
    ("generate", ["--max_scan_mb", "-5"], "--max_scan_mb"),
    ("evaluate", ["--limit", "-1"], "--limit"),
    ("evaluate", ["--max_new_tokens", "0"], "--max_new_tokens"),
    ("evaluate", ["--batch_size", "0"], "--batch_size"),
])
def test_generate_and_evaluate_refuse_bad_flags_before_any_work(tmp_path, small_scans, capsys, command, flags, message):
    from radfm.cli import main

    if command == "generate":
        args = ["generate", str(small_scans["png"]), "--prompt", "Which?", "--model", str(tmp_path / "no_model")]
    else:
        args = ["evaluate", "--manifest", str(tmp_path / "none.jsonl"), "--model", str(tmp_path / "no_model"),
                "--output", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as exited:
        main(args + flags)
    err = capsys.readouterr().err
    assert exited.value.code == 2 and message in err and "no_model" not in err and "none.jsonl" not in err


# ---------------------------------------------------------------- L3 and the schema ----
def test_docs_load_nothing_from_a_cdn_and_the_schema_documents_every_route(server):
    assert httpx.get(f"{server.url}/docs", timeout=10).status_code == 404
    schema = httpx.get(f"{server.url}/openapi.json", timeout=10).json()
    paths = schema["paths"]
    for route in ("/v1/answer", "/chat/api/answer", "/chat/api/scans", "/chat/api/export/sr", "/v1/chat/completions"):
        body = paths[route]["post"]["requestBody"]["content"]
        (media,) = body
        assert body[media]["schema"]["properties"], route
    assert "messages" in paths["/chat/api/answer"]["post"]["requestBody"]["content"]["application/json"]["schema"]["required"]
    assert "max_new_tokens" in paths["/v1/answer"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
    assert np.all([route in paths for route in ("/health", "/v1/models", "/chat/api/info")])
    assert json.dumps(schema).count("cdn") == 0


def test_a_full_queue_is_a_503_before_a_stream_starts(small_scans):
    """The streaming doors (OpenAI, chat) answer a full queue with 503 in their format, not mid-stream."""
    import base64
    import threading

    from radfm.answering.identity import ModelIdentity

    release = threading.Event()

    class Blocking:
        identity, max_images = ModelIdentity(), 3

        def prepare(self, paths):
            return [np.zeros((3, 4, 4, 4), np.float32) for _ in paths]

        def answer(self, prompt, images, options):
            release.wait(30)
            return "done"

    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "Which?"}, {"type": "image_url",
            "image_url": {"url": "data:image/png;base64," + base64.b64encode(small_scans["png"].read_bytes()).decode()}}]}],
            "stream": True}
    with BackgroundServer(create_app(Blocking(), Limits(max_queue=1))) as running:
        first = threading.Thread(target=lambda: httpx.post(f"{running.url}/v1/chat/completions", json=body, timeout=60))
        first.start()
        for _ in range(100):  # the first request holds the model thread
            if httpx.get(f"{running.url}/health", timeout=5).json()["queue"]["running"] == 1:
                break
            time.sleep(0.05)
        second = threading.Thread(target=lambda: httpx.post(f"{running.url}/v1/chat/completions", json=body, timeout=60))
        second.start()
        for _ in range(100):  # the second one waits
            if httpx.get(f"{running.url}/health", timeout=5).json()["queue"]["waiting"] == 1:
                break
            time.sleep(0.05)
        reply = httpx.post(f"{running.url}/v1/chat/completions", json=body, timeout=60)
        release.set()
        first.join()
        second.join()
    assert reply.status_code == 503 and reply.json()["error"]["code"] == "queue_full"


# ---------------------------------------------------------------- S1 (issue 28): JSON depth, huge numbers ----
DEEP = 100_000
HUGE = "1" + "0" * 400  # a 401-digit integer: no float holds it
JSON_ROUTES = ("/v1/chat/completions", "/chat/api/answer", "/chat/api/export/sr")


def _refusal_text(reply) -> str:
    """The error message of a refusal in either shape (OpenAI's ``{"error": {"message"}}`` or ``{"error"}``)."""
    error = reply.json()["error"]
    return error["message"] if isinstance(error, dict) else error


@pytest.mark.parametrize("route", JSON_ROUTES)
def test_json_nested_100000_deep_is_a_400_not_a_traceback(server, route):
    body = b'{"messages": ' + b"[" * DEEP + b"]" * DEEP + b"}"
    reply = httpx.post(f"{server.url}{route}", content=body, headers={"Content-Type": "application/json"}, timeout=60)
    assert reply.status_code == 400, reply.text[:300]
    assert "nested" in _refusal_text(reply) and "Traceback" not in reply.text


@pytest.mark.parametrize(("route", "field", "value"), [
    ("/v1/chat/completions", "max_tokens", HUGE), ("/v1/chat/completions", "seed", HUGE),
    ("/v1/chat/completions", "temperature", HUGE), ("/v1/chat/completions", "top_p", "-" + HUGE),
    ("/v1/chat/completions", "n", HUGE),
    ("/chat/api/answer", "max_new_tokens", HUGE), ("/chat/api/answer", "temperature", HUGE),
    ("/chat/api/answer", "top_k", HUGE),
])
def test_a_400_digit_number_in_json_is_refused_naming_its_field(server, route, field, value):
    text = {"/v1/chat/completions": '"content": "Which?"', "/chat/api/answer": '"text": "Which?", "scans": []'}[route]
    body = f'{{"messages": [{{"role": "user", {text}}}], "{field}": {value}}}'
    reply = httpx.post(f"{server.url}{route}", content=body, headers={"Content-Type": "application/json"}, timeout=60)
    assert reply.status_code in (400, 422), reply.text[:300]
    assert field in _refusal_text(reply) and "Traceback" not in reply.text
    if route == "/v1/chat/completions":
        assert reply.json()["error"]["param"] in (field, "max_new_tokens")


@pytest.mark.parametrize("field", ["max_new_tokens", "top_k", "num_beams"])
def test_a_400_digit_number_in_the_answer_form_is_a_422_naming_its_field(server, small_scans, field):
    reply = httpx.post(f"{server.url}/v1/answer", data={"prompt": "Which?", field: HUGE},
                       files=[("files", ("c.png", small_scans["png"].read_bytes()))], timeout=60)
    assert reply.status_code == 422, reply.text[:300]
    assert field in reply.json()["error"] and "Traceback" not in reply.text


def test_json_numbers_beyond_what_the_parser_takes_and_nan_literals_are_400(server):
    """More digits than Python converts (4300) and the non-JSON NaN/Infinity literals: 400 with a reason."""
    for value in ("1" + "0" * 5000, "NaN", "Infinity", "-Infinity"):
        body = f'{{"messages": [{{"role": "user", "content": "Which?"}}], "temperature": {value}}}'
        reply = httpx.post(f"{server.url}/v1/chat/completions", content=body,
                           headers={"Content-Type": "application/json"}, timeout=60)
        assert reply.status_code == 400 and "not valid JSON" in _refusal_text(reply), (value[:10], reply.text[:300])
