"""The chat page's API and the shared pieces (zip intake, conversation prompt, streaming) with the tiny model."""

from __future__ import annotations

import base64
import io
import json
import zipfile
from pathlib import Path

import httpx
import pydicom
import pytest

from radfm.answering.answerer import AnswerStream
from radfm.answering.conversation import Turn, conversation_prompt
from radfm.answering.options import GenerationOptions
from radfm.answering.refusal import RequestError
from radfm.answering.scans import extract_zip_scans


def _series_zip(ct_series_dir: Path, extra: dict[str, bytes] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(ct_series_dir.iterdir()):
            archive.write(path, f"study/CT2/{path.name}")
        for name, data in (extra or {}).items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _events(response) -> list[dict]:
    return [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]


def test_zip_of_a_dicom_series_is_one_scan_and_member_names_never_become_paths(server, ct_series_dir, tmp_path):
    outside = tmp_path / "escaped.txt"
    data = _series_zip(ct_series_dir, {f"../../..{outside}": b"not a scan", "__MACOSX/._IM1": b"junk",
                                       "study/DICOMDIR": b"x" * 200})
    response = httpx.post(f"{server.url}/chat/api/scans", files=[("files", ("ct_folder.zip", data))], timeout=60)
    assert response.status_code == 200, response.text
    [scan] = response.json()["scans"]
    assert scan["kind"] == "dicom" and scan["modality"] == "CT" and scan["files"] == 4
    assert scan["original_shape"] == [16, 16, 4]
    assert not outside.exists()

    for view, depth in (("original", 4), ("model", scan["model_depth"])):
        picture = httpx.get(f"{server.url}/chat/api/scans/{scan['id']}/slice.png", params={"view": view, "slice": depth - 1})
        assert picture.status_code == 200 and picture.content.startswith(b"\x89PNG")
    lung = httpx.get(f"{server.url}/chat/api/scans/{scan['id']}/slice.png", params={"slice": 1, "window": "lung"})
    assert lung.status_code == 200
    for params, status in (({"slice": 4}, 422), ({"window": "liver"}, 422), ({"view": "both"}, 422)):
        assert httpx.get(f"{server.url}/chat/api/scans/{scan['id']}/slice.png", params=params).status_code == status
    assert httpx.get(f"{server.url}/chat/api/scans/{'0' * 24}/slice.png").status_code == 404


def test_zip_limits(tmp_path):
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("slice.dcm", b"\0" * (3 << 20))  # a few KB packed, 3 MiB unpacked
    with pytest.raises(RequestError, match="unpacked") as caught:
        extract_zip_scans(bomb, tmp_path, first_index=0, max_files=10, max_bytes=2 << 20, label="bomb.zip")
    assert caught.value.status_code == 413
    many = tmp_path / "many.zip"
    with zipfile.ZipFile(many, "w") as archive:
        for i in range(11):
            archive.writestr(f"IM{i}", b"x")
    with pytest.raises(RequestError, match="11 files") as caught:
        extract_zip_scans(many, tmp_path, first_index=0, max_files=10, max_bytes=1 << 20, label="many.zip")
    assert caught.value.status_code == 413
    nested = tmp_path / "nested.zip"
    with zipfile.ZipFile(nested, "w") as archive:
        archive.writestr("inner.zip", many.read_bytes())
    with pytest.raises(RequestError, match="nested"):
        extract_zip_scans(nested, tmp_path, first_index=0, max_files=10, max_bytes=1 << 20, label="nested.zip")


def test_ask_streams_and_exports_an_sr_for_dicom(server, ct_series_dir, small_scans):
    series = httpx.post(f"{server.url}/chat/api/scans", timeout=60,
                        files=[("files", (p.name, p.read_bytes())) for p in sorted(ct_series_dir.iterdir())]).json()["scans"]
    assert len(series) == 1 and series[0]["files"] == 4  # a multi-file selection of one series is one scan
    nifti = httpx.post(f"{server.url}/chat/api/scans", timeout=60,
                       files=[("files", ("brain.nii.gz", small_scans["nifti"].read_bytes()))]).json()["scans"][0]
    body = {"messages": [{"role": "user", "text": "<image> Compare with <image>.", "scans": [series[0]["id"], nifti["id"]]}],
            "max_new_tokens": 6}
    with httpx.stream("POST", f"{server.url}/chat/api/answer", json=body, timeout=120) as response:
        assert response.status_code == 200
        events = _events(response)
    done = events[-1]
    assert done["type"] == "done" and done["verification"] == "UNVERIFIED"
    assert "".join(e["text"] for e in events if e["type"] == "text") == done["answer"]
    assert done["prompt"] == "<image> Compare with <image>."

    exported = httpx.post(f"{server.url}/chat/api/export/sr", json=done, timeout=60)
    assert exported.status_code == 200 and exported.headers["content-type"] == "application/zip"  # the NIfTI needs a capture
    only_dicom = dict(done, scans=[series[0]["id"]])
    exported = httpx.post(f"{server.url}/chat/api/export/sr", json=only_dicom, timeout=60)
    assert exported.headers["content-type"] == "application/dicom"
    from radfm.dicom.sr import read_sr

    report = read_sr(io.BytesIO(exported.content))
    sources = sorted(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in ct_series_dir.iterdir())
    assert sorted(report["referenced_sop_instance_uids"]) == sources
    assert report["answer"] == done["answer"] and report["verification"] == "UNVERIFIED"
    assert report["study_instance_uid"] == pydicom.dcmread(next(ct_series_dir.iterdir()), stop_before_pixels=True).StudyInstanceUID


def test_ask_errors(server, small_scans):
    scan = httpx.post(f"{server.url}/chat/api/scans", timeout=60,
                      files=[("files", ("chest.png", small_scans["png"].read_bytes()))]).json()["scans"][0]
    cases = [
        ({"messages": [{"role": "user", "text": "<image> <image> two?", "scans": [scan["id"]]}]}, 422, "placeholder"),
        ({"messages": [{"role": "user", "text": "<image> which?", "scans": ["f" * 24]}]}, 404, "upload it again"),
        ({"messages": [{"role": "user", "text": "<image> which?", "scans": [scan["id"]]}], "max_new_tokens": 99}, 422, "<= 16"),
        ({"messages": [{"role": "assistant", "text": "hello", "scans": []}]}, 422, "end with a user message"),
        ({"messages": "hi"}, 400, "expected JSON"),
    ]
    for body, status, fragment in cases:
        response = httpx.post(f"{server.url}/chat/api/answer", json=body, timeout=60)
        assert response.status_code == status, (body, response.text)
        assert fragment in response.json()["error"]
    bad = httpx.post(f"{server.url}/chat/api/scans", files=[("files", ("notes.txt", b"hello" * 100))], timeout=60)
    assert bad.status_code == 415 and "notes.txt" in bad.json()["error"]


def test_page_and_static_files_are_local(server):
    page = httpx.get(server.url + "/")
    assert page.status_code == 200 and "script-src 'self'" in page.headers["content-security-policy"]
    assert "http://" not in page.text and "https://" not in page.text  # no CDN
    for asset in ("chat.js", "chat.css"):
        response = httpx.get(f"{server.url}/chat/static/{asset}")
        assert response.status_code == 200 and "https://" not in response.text
    info = httpx.get(server.url + "/chat/api/info").json()
    from radfm.transforms import WINDOW_PRESETS

    assert info["window_presets"] == {k: list(v) for k, v in WINDOW_PRESETS.items()}
    assert info["verification"] == "UNVERIFIED"


def test_every_link_on_the_page_resolves(server):
    """Issue 31 item 8: the page's links (the "API" link included) lead somewhere on this server, not to a 404."""
    import re

    page = httpx.get(server.url + "/").text
    links = re.findall(r'(?:href|src)="([^"]+)"', page)
    assert any("API" in anchor for anchor in re.findall(r"<a [^>]*>([^<]*)</a>", page))
    assert links
    for link in links:
        assert link.startswith("/"), link  # same origin only
        assert httpx.get(server.url + link).status_code == 200, link


def test_openai_zip_file_part_and_limits(server, ct_series_dir):
    """A zipped DICOM series as a ``file`` part (tiny model); the service's limits apply."""
    model = httpx.get(f"{server.url}/v1/models").json()["data"][0]["id"]
    part = {"type": "file", "file": {"filename": "ct.zip", "file_data": base64.b64encode(_series_zip(ct_series_dir)).decode()}}
    body = {"model": model, "max_tokens": 4, "messages": [{"role": "user", "content": [part, {"type": "text", "text": "Findings?"}]}]}
    response = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=120)
    assert response.status_code == 200, response.text
    assert response.json()["radfm"]["prompt"] == "<image> Findings?"
    too_many = dict(body, messages=[{"role": "user", "content": [part] * 4 + [{"type": "text", "text": "?"}]}])
    response = httpx.post(f"{server.url}/v1/chat/completions", json=too_many, timeout=120)
    assert response.status_code == 413 and response.json()["error"]["code"] == "too_many_images"  # max_images=3


def test_conversation_prompt_feeds_back_previous_turns():
    prompt, scans = conversation_prompt([
        Turn("system", "You are a radiology assistant."), Turn("user", "<image> Modality?", ["a"]),
        Turn("assistant", "CT"), Turn("user", "And <image>?", ["b"]),
    ])
    assert prompt == "You are a radiology assistant.\n<image> Modality?\nCT\nAnd <image>?"
    assert scans == ["a", "b"]
    assert conversation_prompt([Turn("user", "<image> Modality?", ["a"])])[0] == "<image> Modality?"
    with pytest.raises(ValueError, match="end with a user"):
        conversation_prompt([Turn("user", "hi"), Turn("assistant", "hello")])


def test_answer_stream_stop_strings_hold_back_and_cut():
    sent: list[str] = []
    stream = AnswerStream(on_text=sent.append, stop=["\nQ:"])
    for piece in (" The", " lesion", " is", " left.\n", "Q", ": next"):
        stream.push(piece)
    assert "".join(sent) == "The lesion is left."  # "\n" and "Q" were held back, then cut
    assert stream.should_stop()
    assert stream.finish("The lesion is left.\nQ: next", max_new_tokens=32) == "The lesion is left."
    assert stream.finish_reason == "stop"

    plain: list[str] = []
    stream = AnswerStream(on_text=plain.append)
    stream.completion_tokens = 8
    for piece in (" a", " b"):
        stream.push(piece)
    assert stream.finish("a b c", max_new_tokens=8) == "a b c"
    assert "".join(plain) == "a b c" and stream.finish_reason == "length"


def test_cancel_stops_generation_after_the_current_token(tiny_answerer, small_scans):
    images = tiny_answerer.prepare([small_scans["png"]])
    pieces: list[str] = []
    stream = AnswerStream(on_text=lambda piece: (pieces.append(piece), stream.cancel()))
    options = GenerationOptions(max_new_tokens=12, do_sample=True, top_k=0, seed=0)
    full = tiny_answerer.answer("<image> Describe.", images, GenerationOptions(max_new_tokens=12, do_sample=True, top_k=0, seed=0))
    text = tiny_answerer.answer("<image> Describe.", images, options, stream=stream)
    assert stream.cancelled and stream.completion_tokens < 12
    assert full.startswith(text) and len(text) < len(full)
