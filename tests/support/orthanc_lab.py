"""A local lab: Debian's Orthanc as a test PACS and ``radfm node run`` as a child process, on loopback ports.

Used by the node's and the Deploy app's tests (tests/node, tests/deploy, tests/batch) and its benchmark (scripts/bench_node.py); also handy to
try the node by hand. Orthanc runs in the foreground from a generated config with its own storage
folder, on free ports of 127.0.0.1, with the DICOMweb plugin loaded (``apt-get install orthanc
orthanc-dicomweb``). Nothing here listens on or connects to any address but 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

LOOPBACK = "127.0.0.1"
ORTHANC_AET = "ORTHANC"
# where Debian's orthanc-dicomweb puts the plugin; RADFM_ORTHANC_PLUGIN overrides it
PLUGIN_CANDIDATES = ("/usr/share/orthanc/plugins/libOrthancDicomWeb.so", "/usr/lib/orthanc/libOrthancDicomWeb.so")


class LabUnavailable(RuntimeError):
    """A program the lab needs is not installed; the message names it."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def orthanc_binary() -> str:
    found = shutil.which("Orthanc") or shutil.which("Orthanc", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise LabUnavailable("Orthanc")
    return found


def dicomweb_plugin() -> str:
    override = os.environ.get("RADFM_ORTHANC_PLUGIN")
    for candidate in ([override] if override else []) + list(PLUGIN_CANDIDATES):
        if candidate and Path(candidate).is_file():
            return candidate
    raise LabUnavailable("Orthanc's DICOMweb plugin (orthanc-dicomweb)")


class Orthanc:
    """One Orthanc process on free loopback ports; :meth:`stop` and :meth:`start` keep its storage."""

    def __init__(self, folder: Path, modalities: dict[str, list]) -> None:
        import requests

        self.folder = Path(folder)
        folder = self.folder
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

    def stop(self, kill: bool = False) -> None:
        """Stop Orthanc: SIGTERM (a clean shutdown), or with ``kill`` SIGKILL (a crash: gone at once)."""
        if self.process is not None and self.process.poll() is None:
            if kill:
                self.process.kill()
            else:
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
        if not assoc.is_established:
            raise RuntimeError("Orthanc refused the association")
        try:
            for ds in datasets:
                status = assoc.send_c_store(ds)
                if not status or status.Status != 0:
                    raise RuntimeError(f"Orthanc refused an instance: {status}")
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


class NodeProcess:
    """``radfm node run --config FILE`` as a child process, its log in the state folder."""

    def __init__(self, folder: Path, config: dict) -> None:
        self.folder = folder
        self.config_path = folder / "node.json"
        self.config_path.write_text(json.dumps(config), encoding="utf-8")
        self.port = config["port"]
        self.host = LOOPBACK
        self.folder = Path(folder)
        self.log_path = folder / "node.log"
        self.process: subprocess.Popen | None = None

    def start(self, timeout_s: float = 120.0) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen([sys.executable, "-m", "radfm.cli", "node", "run", "--config",
                                         str(self.config_path)], stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the node exited: {self.log_path.read_text(errors='replace')[-3000:]}")
            if self.echo():
                return
            time.sleep(0.3)
        raise RuntimeError(f"the node did not answer C-ECHO in {timeout_s} s")

    def echo(self, title: str = "TESTSCU") -> bool:
        from pynetdicom import AE

        ae = AE(ae_title=title)
        ae.add_requested_context("1.2.840.10008.1.1")
        ae.acse_timeout = ae.network_timeout = 5
        assoc = ae.associate(LOOPBACK, self.port, ae_title="RADFM")
        if not assoc.is_established:
            return False
        try:
            status = assoc.send_c_echo()
            return status is not None and status.Status == 0
        finally:
            assoc.release()

    def kill9(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def jobs(self) -> list[dict]:
        """The job table, read directly (read-only) as an operator's script would."""
        database = self.folder / "state" / "node.sqlite"
        if not database.exists():
            return []
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10) as db:
            db.row_factory = sqlite3.Row
            try:
                return [dict(row) for row in db.execute("SELECT * FROM jobs ORDER BY id")]
            except sqlite3.OperationalError:
                return []

    def job_of(self, study_uid: str) -> dict | None:
        found = [job for job in self.jobs() if job["study_uid"] == study_uid]
        return found[-1] if found else None

    def wait_for(self, study_uid: str, states=("done", "failed"), timeout_s: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            job = self.job_of(study_uid)
            if job is not None and job["state"] in states:
                return job
            time.sleep(0.1)
        raise TimeoutError(f"study {study_uid}: no job in {states} after {timeout_s} s: {self.job_of(study_uid)}; "
                             f"log: {self.log_path.read_text()[-3000:]}")
