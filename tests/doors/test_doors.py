"""Every door goes through the one request path, and a limit set once holds on every door.

The six doors: ``POST /v1/answer``, the chat page's API, the OpenAI route, the MLflow pyfunc
model, ``radfm generate`` and ``radfm evaluate``. Each test drives a door as its user would
and checks the answer in that door's own format.
"""

from __future__ import annotations

import base64
import io
import json
import zipfile
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np
import pytest

from radfm.answering.limits import Limits
from radfm.answering.request import RequestPath
from radfm.http.service import BackgroundServer, create_app

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def big_scan(tmp_path_factory) -> Path:
    """A NIfTI whose header claims 3 MiB of voxels (128 x 128 x 48 float32); 1 MiB is the test's limit."""
    import nibabel as nib

    path = tmp_path_factory.mktemp("big") / "big.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((128, 128, 48), np.float32), np.eye(4)), path)
    return path


@pytest.fixture(scope="module")
def zipped_series(ct_series_dir, tmp_path_factory) -> Path:
    """pydicom's 4-slice CT series as one zip (with a README, as exports often have)."""
    path = tmp_path_factory.mktemp("zip") / "ct_series.zip"
    with zipfile.ZipFile(path, "w") as bundle:
        for slice_path in sorted(ct_series_dir.iterdir()):
            bundle.write(slice_path, f"CT2/{slice_path.name}")
        bundle.writestr("CT2/README.txt", "exported series")
    return path


@pytest.fixture(scope="module")
def one_mb_server(tiny_answerer):
    with BackgroundServer(create_app(tiny_answerer, Limits(max_scan_bytes=MiB, max_new_tokens=16))) as running:
        yield running


def _openai_body(name: str, data: bytes) -> dict:
    return {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "Which modality?"},
        {"type": "file", "file": {"filename": name, "file_data": base64.b64encode(data).decode()}}]}],
        "max_tokens": 3}


def _manifest(folder: Path, scan: Path) -> Path:
    line = {"id": "case1", "dataset": "doors", "task": "vqa", "instruction": "<image> Which modality?",
            "response": "CT", "images": [{"path": str(scan)}], "split": "test"}
    path = folder / "test.jsonl"
    path.write_text(json.dumps(line) + "\n")
    return path


# ---------------------------------------------------------------- one entry for six doors ----
def test_all_six_doors_call_the_request_path(monkeypatch, tiny_answerer, tiny_model_dir, small_scans, tmp_path, capsys):
    from radfm.doors.evaluate import evaluate
    from radfm.doors.generate import generate
    from radfm.doors.mlflow_model import RadFMPyfunc

    calls: list[str] = []
    real_run = RequestPath.run

    async def spy(self, request, *args, **kwargs):
        calls.append("prepare" if request.prompt is None else "answer")
        return await real_run(self, request, *args, **kwargs)

    monkeypatch.setattr(RequestPath, "run", spy)
    png = small_scans["png"].read_bytes()
    seen: dict[str, int] = {}
    with BackgroundServer(create_app(tiny_answerer, Limits(max_new_tokens=8))) as server:
        reply = httpx.post(f"{server.url}/v1/answer", data={"prompt": "Which modality?", "max_new_tokens": "2"},
                           files=[("files", ("chest.png", png))], timeout=60)
        assert reply.status_code == 200, reply.text
        seen["/v1/answer"] = len(calls)
        scans = httpx.post(f"{server.url}/chat/api/scans", files=[("files", ("chest.png", png))], timeout=60).json()
        body = {"messages": [{"role": "user", "text": "<image> Which?", "scans": [scans["scans"][0]["id"]]}],
                "max_new_tokens": 2}
        with httpx.stream("POST", f"{server.url}/chat/api/answer", json=body, timeout=60) as streamed:
            assert streamed.status_code == 200 and '"done"' in streamed.read().decode()
        seen["chat"] = len(calls)
        reply = httpx.post(f"{server.url}/v1/chat/completions", json=_openai_body("chest.png", png), timeout=60)
        assert reply.status_code == 200, reply.text
        seen["openai"] = len(calls)
    model = RadFMPyfunc()
    model.load_context(SimpleNamespace(artifacts={"model_dir": str(tiny_model_dir)}))
    frame = model.predict(None, {"prompt": ["Which modality?"], "images": [[str(small_scans["png"])]]},
                          params={"max_new_tokens": 2})
    assert frame["error"][0] is None
    seen["mlflow"] = len(calls)
    generate(str(small_scans["png"]), prompt="Which modality?", model=str(tiny_model_dir), max_new_tokens=2,
             device="cpu", dtype="float32")
    seen["generate"] = len(calls)
    evaluate(manifest=str(_manifest(tmp_path, small_scans["png"])), model=str(tiny_model_dir),
             output=str(tmp_path / "eval"), max_new_tokens=2, bertscore=False, n_resamples=10, data_root="/")
    seen["evaluate"] = len(calls)
    capsys.readouterr()
    counts = dict(zip(seen, np.diff([0, *seen.values()])))
    assert counts == {"/v1/answer": 1, "chat": 2, "openai": 1, "mlflow": 1, "generate": 1, "evaluate": 1}, counts
    assert calls.count("prepare") == 1  # the chat page's upload: read and preprocess, no generation


# ---------------------------------------------------------------- one limit on six doors ----
def test_a_one_mb_scan_limit_refuses_a_3_mb_scan_on_every_door(one_mb_server, big_scan, tiny_model_dir, tmp_path,
                                                                capsys):
    from radfm.answering.engines import load_answerer
    from radfm.cli import main
    from radfm.doors.evaluate import evaluate
    from radfm.doors.mlflow_model import RadFMPyfunc

    data = big_scan.read_bytes()
    url = one_mb_server.url
    reply = httpx.post(f"{url}/v1/answer", data={"prompt": "Which?"}, files=[("files", ("big.nii.gz", data))], timeout=60)
    assert reply.status_code == 413 and "over the limit" in reply.json()["error"], reply.text
    reply = httpx.post(f"{url}/chat/api/scans", files=[("files", ("big.nii.gz", data))], timeout=60)
    assert reply.status_code == 413 and "over the limit" in reply.json()["error"], reply.text
    reply = httpx.post(f"{url}/v1/chat/completions", json=_openai_body("big.nii.gz", data), timeout=60)
    error = reply.json()["error"]
    assert reply.status_code == 413 and set(error) == {"message", "type", "param", "code"}
    assert "over the limit" in error["message"] and error["code"] == "scan_too_large"
    assert str(big_scan.parent) not in reply.text  # the server's folders are never named

    model = RadFMPyfunc()
    model.path = RequestPath(load_answerer(tiny_model_dir, device="cpu", dtype="float32"), Limits(max_scan_bytes=MiB))
    frame = model.predict(None, {"prompt": ["Which?"], "images": [[str(big_scan)]]})
    assert frame["answer"][0] is None and "over the limit" in frame["error"][0]

    with pytest.raises(SystemExit) as exited:
        main(["generate", str(big_scan), "--prompt", "Which?", "--model", str(tiny_model_dir), "--max_scan_mb", "1",
              "--device", "cpu", "--dtype", "float32"])
    assert exited.value.code == 1 and "over the limit" in capsys.readouterr().err

    output = tmp_path / "eval"
    evaluate(manifest=str(_manifest(tmp_path, big_scan)), model=str(tiny_model_dir), output=str(output),
             max_new_tokens=2, bertscore=False, n_resamples=10, max_scan_mb=1, data_root="/")
    (row,) = [json.loads(line) for line in (output / "predictions.jsonl").read_text().splitlines()]
    assert row["id"] == "case1" and "over the limit" in row["error"] and row["prediction"] == ""


# ---------------------------------------------------------------- the same scan inputs ----
def test_a_zipped_dicom_series_works_on_v1_answer_and_generate(server, zipped_series, tiny_model_dir, capsys):
    from radfm.doors.generate import generate

    reply = httpx.post(f"{server.url}/v1/answer", data={"prompt": "Which modality?", "max_new_tokens": "2"},
                       files=[("files", ("ct_series.zip", zipped_series.read_bytes()))], timeout=60)
    assert reply.status_code == 200, reply.text
    (scan,) = reply.json()["scans"]
    assert scan["kind"] == "dicom" and len(scan["files"]) == 4  # the README is skipped
    generate(str(zipped_series), prompt="Which modality?", model=str(tiny_model_dir), max_new_tokens=2, json=True,
             device="cpu", dtype="float32")
    record = json.loads(capsys.readouterr().out)
    assert record["image_shapes"][0][0] == 3 and record["scans"] == [str(zipped_series.resolve())]


def test_unknown_form_field_names_the_nearest_one(server, small_scans):
    reply = httpx.post(f"{server.url}/v1/answer", data={"prompt": "Which?", "max_tokens": "5"},
                       files=[("files", ("chest.png", small_scans["png"].read_bytes()))], timeout=60)
    assert reply.status_code == 422
    assert "'max_tokens'" in reply.json()["error"] and "did you mean 'max_new_tokens'" in reply.json()["error"]


def test_generate_marks_its_plain_answer_unverified(tiny_model_dir, small_scans, capsys):
    from radfm.doors.generate import UNVERIFIED, generate

    generate(str(small_scans["png"]), prompt="Which modality?", model=str(tiny_model_dir), max_new_tokens=2,
             device="cpu", dtype="float32")
    lines = capsys.readouterr().out.splitlines()
    assert UNVERIFIED in lines[-1] and "demo model" not in lines[-1]


@pytest.mark.parametrize(("scans", "prompt", "message"), [
    (["png"], "<image> vs <image>", "2 <image> placeholder(s) but 1 image"),
    (["text"], "hi", "notes.txt: unsupported file type .txt"),
    (["missing"], "hi", "nope.nii.gz: no such file"),
])
def test_generate_checks_inputs_before_loading_the_model(monkeypatch, small_scans, tmp_path, scans, prompt, message):
    from radfm.answering import engines
    from radfm.answering.refusal import RequestError
    from radfm.doors import generate as door

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded before the inputs were checked")

    monkeypatch.setattr(engines, "load_answerer", no_load)  # every engine loads through it
    (tmp_path / "notes.txt").write_text("not an image")
    paths = {"png": str(small_scans["png"]), "text": str(tmp_path / "notes.txt"), "missing": str(tmp_path / "nope.nii.gz")}
    with pytest.raises(RequestError, match=message.replace("(", r"\(").replace(")", r"\)")):
        door.generate(*[paths[s] for s in scans], prompt=prompt, model=str(tmp_path / "no_model"))


@pytest.fixture(scope="module")
def deflated_3mb(tmp_path_factory) -> bytes:
    """A deflated DICOM (a few KB) whose dataset inflates to over 3 MiB (a private element of zeros)."""
    import pydicom
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    dataset = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm", download=False))
    dataset.add_new(0x00091010, "OB", b"\0" * (3 * MiB))
    dataset.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    assert len(buffer.getvalue()) < 100_000
    return buffer.getvalue()


def test_grouping_uploads_holds_the_scan_limit_on_every_http_door(one_mb_server, deflated_3mb):
    """Issue 22 M1: the grouping of uploads (which parses DICOM headers) ran without --max_scan_mb on
    the chat page and the OpenAI route; now every door's grouping is the request path's."""
    url = one_mb_server.url
    reply = httpx.post(f"{url}/v1/answer", data={"prompt": "Which?"}, files=[("files", ("ct.dcm", deflated_3mb))],
                       timeout=60)
    assert reply.status_code == 413 and "deflated DICOM data" in reply.json()["error"], reply.text
    reply = httpx.post(f"{url}/chat/api/scans", files=[("files", ("ct.dcm", deflated_3mb))], timeout=60)
    assert reply.status_code == 413 and "deflated DICOM data" in reply.json()["error"], reply.text
    reply = httpx.post(f"{url}/v1/chat/completions", json=_openai_body("ct.dcm", deflated_3mb), timeout=60)
    assert reply.status_code == 413 and "deflated DICOM data" in reply.json()["error"]["message"], reply.text


def test_reference_only_kinds_work_by_path_but_are_not_uploads(server, tiny_model_dir, tmp_path, capsys):
    """A .npy volume is a scan given by path (the readers take it); as an upload it is refused (415)."""
    from radfm.doors.generate import generate

    volume = tmp_path / "vol.npy"
    np.save(volume, np.random.default_rng(0).random((24, 24, 8), dtype=np.float32))
    generate(str(volume), prompt="Which modality?", model=str(tiny_model_dir), max_new_tokens=2, json=True,
             device="cpu", dtype="float32")
    assert json.loads(capsys.readouterr().out)["scans"] == [str(volume.resolve())]
    reply = httpx.post(f"{server.url}/v1/answer", data={"prompt": "Which?"},
                       files=[("files", ("vol.npy", volume.read_bytes()))], timeout=60)
    assert reply.status_code == 415 and "vol.npy: a NumPy array (.npy) is not accepted here" in reply.json()["error"]


def test_a_dicom_object_without_pixels_gets_the_readers_error_on_every_door(server, tiny_model_dir, capsys):
    """Issue 31 item 8: pydicom's RT Plan answered ``AttributeError: ... 'Rows'`` on the HTTP doors while
    ``radfm generate`` said "DICOM object without pixel data (SOP class ...)"; now every door says the latter."""
    import pydicom

    from radfm.cli import main

    plan = Path(pydicom.data.get_testdata_file("rtplan.dcm", download=False))
    expected = "rtplan.dcm: DICOM object without pixel data (SOP class 1.2.840.10008.5.1.4.1.1.481.5); expected an image"
    with pytest.raises(SystemExit) as exited:
        main(["generate", str(plan), "--prompt", "Which?", "--model", str(tiny_model_dir), "--device", "cpu"])
    assert exited.value.code == 1 and expected in capsys.readouterr().err
    data = plan.read_bytes()
    reply = httpx.post(f"{server.url}/v1/answer", data={"prompt": "Which?"}, files=[("files", ("rtplan.dcm", data))],
                       timeout=60)
    assert reply.status_code == 422 and reply.json()["error"] == expected, reply.text
    reply = httpx.post(f"{server.url}/chat/api/scans", files=[("files", ("rtplan.dcm", data))], timeout=60)
    assert reply.status_code == 422 and reply.json()["error"] == expected, reply.text
    reply = httpx.post(f"{server.url}/v1/chat/completions", json=_openai_body("rtplan.dcm", data), timeout=60)
    assert reply.status_code == 400 and reply.json()["error"]["message"].endswith(expected), reply.text  # OpenAI: 400


# ---------------------------------------------------------------- one volume of a 4D upload ----
@pytest.fixture(scope="module")
def four_d_scan(tmp_path_factory) -> Path:
    """A 4D NIfTI of 3 random volumes (16 x 16 x 8), each different from the others."""
    import nibabel as nib

    path = tmp_path_factory.mktemp("fourd") / "fmri.nii.gz"
    data = np.random.default_rng(3).random((16, 16, 8, 3), dtype=np.float32)
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    return path


def test_an_upload_named_with_a_volume_suffix_reads_that_volume_on_every_door(monkeypatch, server, tiny_answerer,
                                                                               four_d_scan):
    """Issue 31 item 9: ``fmri.nii.gz[1]`` as an upload's file name picks volume 1, as it does on a path."""
    from radfm.doors.mlflow_model import RadFMPyfunc

    images: list = []
    real_run = RequestPath.run

    async def keep_images(self, request, *args, **kwargs):
        result = await real_run(self, request, *args, **kwargs)
        images.extend(result.images)
        return result

    monkeypatch.setattr(RequestPath, "run", keep_images)
    data, name = four_d_scan.read_bytes(), "fmri.nii.gz[1]"
    reply = httpx.post(f"{server.url}/v1/answer", data={"prompt": "Which?", "max_new_tokens": "2"},
                       files=[("files", (name, data))], timeout=60)
    assert reply.status_code == 200 and reply.json()["scans"][0]["files"] == [name], reply.text
    reply = httpx.post(f"{server.url}/chat/api/scans", files=[("files", (name, data))], timeout=60)
    assert reply.status_code == 200, reply.text
    scan_id = reply.json()["scans"][0]["id"]  # the kept upload is shown as that volume too
    shown = httpx.get(f"{server.url}/chat/api/scans/{scan_id}/slice.png", params={"view": "original"}, timeout=60)
    assert shown.status_code == 200 and shown.content.startswith(b"\x89PNG"), shown.text
    reply = httpx.post(f"{server.url}/v1/chat/completions", json=_openai_body(name, data), timeout=60)
    assert reply.status_code == 200, reply.text
    model = RadFMPyfunc()
    model.path = RequestPath(tiny_answerer, Limits())
    frame = model.predict(None, {"prompt": ["Which?"], "images": [[f"{four_d_scan}[1]"]]}, params={"max_new_tokens": 2})
    assert frame["error"][0] is None
    (one,), (zero,) = tiny_answerer.prepare([f"{four_d_scan}[1]"]), tiny_answerer.prepare([f"{four_d_scan}[0]"])
    assert len(images) == 4 and all(np.array_equal(np.asarray(image), np.asarray(one)) for image in images)
    assert not np.array_equal(np.asarray(one), np.asarray(zero))  # the volume picked matters


def test_a_4d_upload_without_a_suffix_or_out_of_range_names_the_rule_on_every_http_door(server, four_d_scan):
    """Without ``[t]`` the refusal says to add it to the file name; past the last volume it names the count."""
    data = four_d_scan.read_bytes()
    cases = {"fmri.nii.gz": ("fmri.nii.gz: 4D image of shape (16, 16, 8, 3)",
                             "[t] suffix on the path or the upload's file name, t from 0 to 2 (fmri.nii.gz[0];"),
             "fmri.nii.gz[3]": ("fmri.nii.gz[3]: image of shape (16, 16, 8, 3) has 3 volumes (0 to 2)", "")}
    for name, expected in cases.items():
        for door in ("/v1/answer", "/chat/api/scans", "/v1/chat/completions"):
            if door == "/v1/chat/completions":
                reply = httpx.post(f"{server.url}{door}", json=_openai_body(name, data), timeout=60)
                status, message = reply.status_code, reply.json()["error"]["message"]
            else:
                reply = httpx.post(f"{server.url}{door}", data={"prompt": "Which?"} if door == "/v1/answer" else {},
                                   files=[("files", (name, data))], timeout=60)
                status, message = reply.status_code, reply.json()["error"]
            assert 400 <= status < 500 and all(part in message for part in expected), (door, name, message)
            assert "0000_" not in message  # the name as sent, not the server's file


def test_a_volume_suffix_on_an_upload_that_is_not_a_nifti_is_refused(server, small_scans):
    reply = httpx.post(f"{server.url}/v1/answer", data={"prompt": "Which?"},
                       files=[("files", ("../../chest.png[0]", small_scans["png"].read_bytes()))], timeout=60)
    assert reply.status_code == 422, reply.text
    assert "chest.png[0]: a [t] suffix picks one volume of a 4D NIfTI; this is a png file" in reply.json()["error"]
    long_suffix = "fmri.nii.gz[" + "1" * 5000 + "]"  # too many digits for a volume: a name without one, not a 500
    reply = httpx.post(f"{server.url}/v1/chat/completions", json=_openai_body(long_suffix, b"\0" * 400), timeout=60)
    assert reply.status_code == 400 and "unsupported file type" in reply.json()["error"]["message"], reply.text
