"""The Slicer module's plain-Python client against the running service (no Slicer needed)."""

from __future__ import annotations

import importlib.util
import socket
import sys
from pathlib import Path

import pydicom
import pytest

CLIENT_PATH = Path(__file__).resolve().parents[2] / "slicer/RadFM/RadFMLib/client.py"


@pytest.fixture(scope="module")
def client():
    spec = importlib.util.spec_from_file_location("radfm_slicer_client", CLIENT_PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def test_ask_with_dicom_files_and_nifti_then_save_sr(client, server, ct_series_dir, small_scans, tmp_path):
    files = [*sorted(ct_series_dir.iterdir()), small_scans["nifti"]]
    answer = client.ask(files, "Findings? <image> <image>", url=server.url, max_new_tokens=4, want_sr=True)
    assert answer.prompt == "Findings? <image> <image>"
    assert [s["kind"] for s in answer.scans] == ["dicom", "nifti"]
    assert answer.sr is not None and answer.sr_error is None
    path = client.save_sr(answer, tmp_path / "sr" / "report.dcm")
    sr = pydicom.dcmread(path)
    assert sr.StudyInstanceUID == pydicom.dcmread(next(ct_series_dir.iterdir())).StudyInstanceUID
    text = client.answer_text_for_node(answer)
    assert answer.text in text and "UNVERIFIED" in text and answer.model["weights_sha256"][:12] in text


def test_no_sr_for_nifti_only_says_why(client, server, small_scans, tmp_path):
    answer = client.ask([small_scans["nifti"]], "Findings?", url=server.url, max_new_tokens=2, want_sr=True)
    assert answer.sr is None and "DICOM" in answer.sr_error
    with pytest.raises(ValueError, match="DICOM"):
        client.save_sr(answer, tmp_path / "r.dcm")


def test_service_errors_carry_the_reason(client, server, tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("hello")
    with pytest.raises(client.ServiceError) as info:
        client.ask([bad], "Findings?", url=server.url)
    assert info.value.status == 415 and "notes.txt" in info.value.reason


def test_unreachable_service(client):
    with socket.socket() as probe_socket:  # a port that nothing listens on
        probe_socket.bind(("127.0.0.1", 0))
        port = probe_socket.getsockname()[1]
    with pytest.raises(client.ServiceError, match="radfm serve"):
        client.health(f"http://127.0.0.1:{port}", timeout_s=2)


def test_build_multipart_checks_inputs(client, tmp_path):
    with pytest.raises(ValueError, match="no scan files"):
        client.build_multipart([], {"prompt": "x"})
    with pytest.raises(FileNotFoundError, match="missing.nii"):
        client.build_multipart([tmp_path / "missing.nii"], {"prompt": "x"})
    with pytest.raises(client.ServiceError, match="not a JSON"):
        client.parse_answer(502, b"<html>bad gateway</html>")
