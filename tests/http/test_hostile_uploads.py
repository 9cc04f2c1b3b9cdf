"""Hostile uploads to ``radfm serve`` (the real HTTP stack with the tiny model).

A header pointing at a planted secret must not leak the file (not its bytes, not its size);
a small upload whose header claims gigabytes is refused with 413 before anything is inflated.
"""

from __future__ import annotations

import gzip

import httpx
import numpy as np
import pytest

from radfm.answering.limits import Limits
from radfm.http.service import BackgroundServer, create_app

SECRET = b"root:x:0:0:planted-secret-for-the-service-test\n" * 16


@pytest.fixture(scope="module")
def secret_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("host") / "passwd"
    path.write_bytes(SECRET)
    return path


def _nrrd_pointing_at(target: str) -> bytes:
    side = int(len(SECRET) ** 0.5)
    return (f"NRRD0004\ntype: uint8\ndimension: 2\nspace dimension: 2\nspace directions: (1,0) (0,1)\n"
            f"space origin: (0,0)\nsizes: {side} {side}\nencoding: raw\nbyte skip: -1\n"
            f"data file: {target}\n").encode()


def _post(url: str, name: str, content: bytes) -> httpx.Response:
    return httpx.post(f"{url}/v1/answer", files=[("files", (name, content, "application/octet-stream"))],
                      data={"prompt": "Describe <image>.", "max_new_tokens": "2"}, timeout=120)


@pytest.mark.parametrize("how", ["absolute", "relative"])
def test_nrrd_header_pointing_at_a_host_file_is_refused(server, secret_file, how):
    target = str(secret_file) if how == "absolute" else "../" * 12 + str(secret_file).lstrip("/")
    response = _post(server.url, "attack.nrrd", _nrrd_pointing_at(target))
    assert response.status_code == 422, response.text
    detail = response.json()["error"] if "error" in response.json() else response.text
    assert "outside the header's folder" in response.text, detail
    assert b"planted-secret" not in response.content
    assert str(len(SECRET)) not in response.text  # not even the file's size leaks


def test_upload_claiming_gigabytes_is_refused_with_413(server):
    import nibabel as nib

    header = nib.Nifti1Header()
    header.set_data_dtype(np.int16)
    header["dim"] = [3, 2048, 1024, 1024, 1, 1, 1, 1]
    header["vox_offset"] = 352
    bomb = gzip.compress(header.binaryblock + b"\x00" * 4 + bytes(1024**2))  # ~1 KB on the wire, claims 4 GiB
    response = _post(server.url, "bomb.nii.gz", bomb)
    assert response.status_code == 413, response.text
    assert "claims 4,294,967,648 bytes" in response.text and "max_scan_bytes" in response.text


def test_service_limit_is_configurable(probe, small_scans):
    with BackgroundServer(create_app(probe, Limits(max_scan_bytes=10_000, max_images=3))) as running:
        small = _post(running.url, "chest.png", small_scans["png"].read_bytes())  # 40 x 50 = 2000 bytes
        assert small.status_code == 200, small.text
        nifti = _post(running.url, "brain.nii.gz", small_scans["nifti"].read_bytes())  # 20 x 24 x 12 float32
        assert nifti.status_code == 413, nifti.text
        assert "limit of 10,000 bytes" in nifti.text
