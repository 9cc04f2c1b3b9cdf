"""Fixtures for the hospital tests: free loopback ports, a real Orthanc PACS (Debian's), synthetic studies.

Orthanc runs in the foreground from a temp config with its own storage, on free ports of
127.0.0.1, with the DICOMweb plugin loaded. Where Orthanc is not installed the tests that need
it skip, except in CI (``CI=true``), where they fail: CI installs it (``orthanc orthanc-dicomweb``).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

LOOPBACK = "127.0.0.1"
ORTHANC_AET = "ORTHANC"
# where Debian's orthanc-dicomweb puts the plugin; RADFM_ORTHANC_PLUGIN overrides it
PLUGIN_CANDIDATES = ("/usr/share/orthanc/plugins/libOrthancDicomWeb.so", "/usr/lib/orthanc/libOrthancDicomWeb.so")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def _missing(what: str):
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{what} is missing; CI must install it (apt-get install -y orthanc orthanc-dicomweb dicom3tools)")
    pytest.skip(f"{what} is not installed (apt-get install orthanc orthanc-dicomweb)")


def orthanc_binary() -> str:
    found = shutil.which("Orthanc") or shutil.which("Orthanc", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        _missing("Orthanc")
    return found


def dicomweb_plugin() -> str:
    override = os.environ.get("RADFM_ORTHANC_PLUGIN")
    for candidate in ([override] if override else []) + list(PLUGIN_CANDIDATES):
        if candidate and Path(candidate).is_file():
            return candidate
    _missing("Orthanc's DICOMweb plugin (orthanc-dicomweb)")


class Orthanc:
    """One Orthanc process on free loopback ports; :meth:`stop` and :meth:`start` keep its storage."""

    def __init__(self, folder: Path, modalities: dict[str, list]) -> None:
        import requests

        self.folder = folder
        self.http_port, self.dicom_port = free_port(), free_port()
        self.url = f"http://{LOOPBACK}:{self.http_port}"
        self.dicomweb = f"{self.url}/dicom-web"
        self.config = folder / "orthanc.json"
        self.config.write_text(json.dumps({
            "Name": "radfm-test", "StorageDirectory": str(folder / "db"), "IndexDirectory": str(folder / "db"),
            "HttpPort": self.http_port, "DicomPort": self.dicom_port, "DicomAet": ORTHANC_AET,
            "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "HttpServerEnabled": True,
            "DicomServerEnabled": True, "DicomCheckCalledAet": False, "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowEcho": True, "DicomModalities": modalities, "Plugins": [dicomweb_plugin()],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}, "StableAge": 1, "ConcurrentJobs": 2,
            "DicomScuTimeout": 10, "HttpTimeout": 30,
        }), encoding="utf-8")
        self.session = requests.Session()
        self.process: subprocess.Popen | None = None

    def start(self, timeout_s: float = 20.0) -> None:
        self.log = (self.folder / "orthanc.log").open("ab")
        self.process = subprocess.Popen([orthanc_binary(), str(self.config)], stdout=self.log, stderr=subprocess.STDOUT,
                                        cwd=self.folder)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.process.returncode}; see {self.folder / 'orthanc.log'}")
            try:
                if self.session.get(f"{self.url}/system", timeout=1).ok:
                    return
            except Exception:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"Orthanc did not answer in {timeout_s} s; see {self.folder / 'orthanc.log'}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        if getattr(self, "log", None):
            self.log.close()

    def get(self, path: str, **params):
        response = self.session.get(f"{self.url}{path}", params=params, timeout=30)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, body) -> dict:
        response = self.session.post(f"{self.url}{path}", json=body, timeout=120)
        response.raise_for_status()
        return response.json() if response.content else {}

    def store_files(self, files: list[Path], calling_ae: str = "MODALITY") -> None:
        """C-STORE ``files`` into Orthanc with pynetdicom, as a modality would."""
        import pydicom
        from pynetdicom import AE

        datasets = [pydicom.dcmread(f) for f in files]
        ae = AE(ae_title=calling_ae)
        for sop_class in sorted({ds.SOPClassUID for ds in datasets}):
            ae.add_requested_context(sop_class)
        assoc = ae.associate(LOOPBACK, self.dicom_port, ae_title=ORTHANC_AET)
        assert assoc.is_established, "Orthanc refused the association"
        try:
            for ds in datasets:
                status = assoc.send_c_store(ds)
                assert status and status.Status == 0, f"Orthanc refused an instance: {status}"
        finally:
            assoc.release()

    def push_study(self, study_uid: str, modality: str) -> None:
        """Ask Orthanc to C-STORE a study to a modality of its config (REST ``/modalities/NAME/store``)."""
        found = self.session.post(f"{self.url}/tools/lookup", data=study_uid, timeout=30)
        found.raise_for_status()
        (orthanc_id,) = [item["ID"] for item in found.json() if item["Type"] == "Study"]
        self.post(f"/modalities/{modality}/store", {"Resources": [orthanc_id], "Synchronous": True})

    def srs_of_study(self, study_uid: str) -> list[dict]:
        """QIDO-RS: the SR instances Orthanc holds under ``study_uid`` (DICOM JSON)."""
        from dicomweb_client.api import DICOMwebClient

        client = DICOMwebClient(url=self.dicomweb)
        return client.search_for_instances(study_instance_uid=study_uid, search_filters={"Modality": "SR"})


@pytest.fixture(scope="module")
def orthanc_factory(tmp_path_factory):
    """Make Orthancs: ``orthanc_factory(modalities)`` -> a started :class:`Orthanc`; all stopped at the end."""
    made: list[Orthanc] = []

    def make(modalities: dict[str, list]) -> Orthanc:
        folder = tmp_path_factory.mktemp("orthanc")
        server = Orthanc(folder, modalities)
        made.append(server)
        server.start()
        return server

    yield make
    for server in made:
        server.stop()
