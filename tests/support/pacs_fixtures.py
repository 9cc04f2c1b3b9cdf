"""Fixtures for the node and Deploy tests: a real Orthanc PACS (Debian's) and the node, from support.orthanc_lab.

Where Orthanc (or dciodvfy) is not installed the tests that need it skip, except in CI
(``CI=true``), where they fail: CI installs them (``orthanc orthanc-dicomweb dicom3tools``).
"""

from __future__ import annotations

import os
import shutil

import pytest

from support.orthanc_lab import LOOPBACK, ORTHANC_AET, LabUnavailable, NodeProcess, Orthanc, free_port


def _missing(what: str):
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{what} is missing; CI must install it (apt-get install -y orthanc orthanc-dicomweb dicom3tools)")
    pytest.skip(f"{what} is not installed (apt-get install orthanc orthanc-dicomweb)")


@pytest.fixture(scope="module")
def orthanc_factory(tmp_path_factory):
    """Make Orthancs: ``orthanc_factory(modalities)`` -> a started :class:`Orthanc`; all stopped at the end."""
    made: list[Orthanc] = []

    def make(modalities: dict[str, list]) -> Orthanc:
        folder = tmp_path_factory.mktemp("orthanc")
        try:
            server = Orthanc(folder, modalities)
            made.append(server)
            server.start()
        except LabUnavailable as error:
            _missing(str(error))
        return server

    yield make
    for server in made:
        server.stop()


@pytest.fixture(scope="module")
def pacs(orthanc_factory, tmp_path_factory):
    """``(orthanc, node)``: Orthanc knows the node as modality ``radfm``; the node sends reports back to it."""
    if shutil.which("dciodvfy") is None:
        _missing("dciodvfy (dicom3tools)")
    node_port = free_port()
    # AllowTranscoding false: Orthanc sends every instance as stored (JPEG 2000, RLE ...) or not at all
    orthanc = orthanc_factory({"radfm": {"AET": "RADFM", "Host": LOOPBACK, "Port": node_port,
                                         "AllowTranscoding": False}})
    folder = tmp_path_factory.mktemp("node")
    node = NodeProcess(folder, {
        "ae_title": "RADFM", "host": LOOPBACK, "port": node_port, "state_dir": "state",
        "allowed_callers": [{"ae_title": ORTHANC_AET, "host": LOOPBACK}, {"ae_title": "TESTSCU", "host": LOOPBACK}],
        "stable_after_s": 2, "max_new_tokens": 16, "retry_first_s": 0.5, "retry_max_s": 2, "max_attempts": 60,
        "max_instance_mb": 4,
        "rules": [{"name": "ct", "modalities": ["CT"], "prompt": "Look at the image <image> and answer: Where is the lesion?"},
                  {"name": "mr", "modalities": ["MR"], "prompt": "What is the modality of the input scan <image>?"},
                  {"name": "chest-xray", "modalities": ["CR", "DX"], "prompt": "What is the modality of the input scan <image>?"}],
        "destinations": [
            {"name": "orthanc-dimse", "kind": "dimse", "ae_title": ORTHANC_AET, "host": LOOPBACK, "port": orthanc.dicom_port},
            {"name": "orthanc-stow", "kind": "stow", "url": orthanc.dicomweb}],
    })
    node.start()
    yield orthanc, node
    node.stop()
