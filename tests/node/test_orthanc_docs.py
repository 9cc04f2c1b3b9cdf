"""docs/hospital.md's ready-to-copy Orthanc configuration: valid JSON, the settings the tests' Orthanc runs with,
and the node config of the same page on the other end; its REST calls are the ones the lab makes."""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path

from support import orthanc_lab

DOC = (Path(__file__).resolve().parents[2] / "docs" / "hospital.md").read_text(encoding="utf-8")


def _block_after(marker: str) -> str:
    match = re.search(re.escape(marker) + r"\n```json\n(.*?)```", DOC, flags=re.S)
    assert match, f"no JSON block after {marker} in docs/hospital.md"
    return match.group(1)


def _node_config() -> dict:
    match = re.search(r"## The config file.*?```json\n(.*?)```", DOC, flags=re.S)
    return json.loads(match.group(1))


def test_the_documented_orthanc_config_is_the_labs(tmp_path, monkeypatch):
    documented = json.loads(_block_after("<!-- orthanc.json -->"))
    plugin = tmp_path / "libOrthancDicomWeb.so"
    plugin.write_bytes(b"")
    monkeypatch.setenv("RADFM_ORTHANC_PLUGIN", str(plugin))
    lab = orthanc_lab.Orthanc(tmp_path, documented["DicomModalities"])
    written = json.loads(lab.config.read_text())
    for key in ("DicomAet", "DicomModalities", "DicomAlwaysAllowStore", "DicomAlwaysAllowEcho", "DicomWeb"):
        assert documented[key] == written[key], key
    assert documented["Plugins"][0] in orthanc_lab.PLUGIN_CANDIDATES  # where Debian's orthanc-dicomweb puts it
    # the node of the same page: Orthanc calls it, the node lets Orthanc in and sends back to it
    node = _node_config()
    ae_title, host, port = documented["DicomModalities"]["radfm"]
    assert (ae_title, host, port) == (node["ae_title"], node["host"], node["port"])
    assert {"ae_title": documented["DicomAet"], "host": host} in node["allowed_callers"]
    dimse = next(d for d in node["destinations"] if d["kind"] == "dimse")
    assert (dimse["ae_title"], dimse["port"]) == (documented["DicomAet"], documented["DicomPort"])
    stow = next(d for d in node["destinations"] if d["kind"] == "stow")
    assert stow["url"] == f"http://127.0.0.1:{documented['HttpPort']}{documented['DicomWeb']['Root'].rstrip('/')}"


def test_the_documented_rest_calls_are_the_labs():
    lab_calls = inspect.getsource(orthanc_lab.Orthanc.push_study)
    for path in ("/tools/lookup", "/modalities/{modality}/store"):
        assert path in lab_calls
    assert "curl -s -X POST http://127.0.0.1:8042/tools/lookup" in DOC
    assert "curl -s -X POST http://127.0.0.1:8042/modalities/radfm/store -d '{\"Resources\": [\"ORTHANC_STUDY_ID\"], " \
           "\"Synchronous\": true}'" in DOC
    assert '"Synchronous": True' in lab_calls
    assert "dicom-web/studies/$STUDY_UID/instances?Modality=SR" in DOC  # the lab's srs_of_study (QIDO-RS)
