"""The MONAI Deploy application on a synthesized CT series: one SR that references the input series.

The app runs in a subprocess under a Python that has the Deploy SDK (monai-deploy-app-sdk 4.0,
which pulls holoscan): ``RADFM_DEPLOY_PYTHON`` (``make test`` sets it to the ``.venv-deploy`` side
environment that ``make install-deploy`` builds), else this Python if it has the SDK (``pip install
.[deploy]``). Without either it skips on a developer's machine and fails in CI.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pydicom
import pytest

from radfm.hospital.synthetic import write_chest_xray, write_ct_series
from radfm.model.loading import demo_model_dir


def _deploy_python() -> str | None:
    """A Python interpreter that can import ``monai.deploy``, or None."""
    given = os.environ.get("RADFM_DEPLOY_PYTHON")
    if given:
        return given if os.access(given, os.X_OK) else None
    try:
        return sys.executable if importlib.util.find_spec("monai.deploy") is not None else None
    except ImportError:
        return None


DEPLOY_PYTHON = _deploy_python()
if DEPLOY_PYTHON is None and os.environ.get("CI"):
    pytest.fail("the MONAI Deploy SDK is missing in CI: `make install-deploy` builds .venv-deploy and `make test` "
                "passes it as RADFM_DEPLOY_PYTHON", pytrace=False)
pytestmark = [pytest.mark.slow, pytest.mark.skipif(DEPLOY_PYTHON is None, reason=(
    "monai-deploy-app-sdk not installed: `make install-deploy` (then RADFM_DEPLOY_PYTHON=.venv-deploy/bin/python) "
    "or pip install .[deploy]"))]


def test_the_app_answers_the_selected_ct_series_and_writes_an_sr_referencing_it(tmp_path):
    ct_files = write_ct_series(tmp_path / "in" / "ct", slices=8, size=64)
    write_chest_xray(tmp_path / "in" / "dx", size=64, study_uid=pydicom.dcmread(ct_files[0]).StudyInstanceUID)
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({"selections": [
        {"name": "ct", "conditions": {"Modality": "(?i)^CT$"},
         "prompt": "Look at the image <image> and answer: Where is the lesion?"}]}), encoding="utf-8")
    out = tmp_path / "out"
    run = subprocess.run([DEPLOY_PYTHON, "-m", "radfm.hospital.deploy_app", "-i", str(tmp_path / "in"), "-o", str(out),
                          "-m", str(demo_model_dir()), "--rules", str(rules), "--max_new_tokens", "8"],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    (sr_path,) = sorted(out.glob("radfm-sr-*.dcm"))  # only the CT series matched the rules
    sr = pydicom.dcmread(sr_path)
    source = [pydicom.dcmread(f, stop_before_pixels=True) for f in ct_files]
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0]
    assert evidence.StudyInstanceUID == source[0].StudyInstanceUID == sr.StudyInstanceUID
    assert [s.SeriesInstanceUID for s in evidence.ReferencedSeriesSequence] == [source[0].SeriesInstanceUID]
    assert sorted(i.ReferencedSOPInstanceUID for i in evidence.ReferencedSeriesSequence[0].ReferencedSOPSequence) == \
        sorted(s.SOPInstanceUID for s in source)
    assert sr.VerificationFlag == "UNVERIFIED"
    if shutil.which("dciodvfy") is None and os.environ.get("CI"):
        pytest.fail("dciodvfy (Debian's dicom3tools) is missing in CI; .ci/run installs it")
    if shutil.which("dciodvfy") is not None:
        check = subprocess.run(["dciodvfy", str(sr_path)], capture_output=True, text=True, timeout=60)
        assert [line for line in (check.stdout + check.stderr).splitlines() if line.startswith("Error")] == []


def test_the_app_writes_no_patient_data_to_its_output(tmp_path, patient_data):
    """The app's stdout and stderr (its log, the SDK's, the libraries' warnings) hold none of the patient's
    data while it answers a series, for a single-component name and a birth date that is not a DICOM date."""
    patient = patient_data.patients[0]
    ct_files = write_ct_series(tmp_path / "in" / "ct", slices=8, size=64, description="AXIAL", patient_id=patient["id"])
    patient_data.give(ct_files, patient)
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({"selections": [
        {"name": "ct", "conditions": {"Modality": "(?i)^CT$"}, "prompt": "<image> Where is the lesion?"}]}),
        encoding="utf-8")
    out = tmp_path / "out"
    run = subprocess.run([DEPLOY_PYTHON, "-m", "radfm.hospital.deploy_app", "-i", str(tmp_path / "in"), "-o", str(out),
                          "-m", str(demo_model_dir()), "--rules", str(rules), "--max_new_tokens", "4"],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path,
                         env={**os.environ, "PYTHONWARNINGS": "always"})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert patient_data.leaks(run.stdout + run.stderr, patient) == []
    (sr_path,) = sorted(out.glob("radfm-sr-*.dcm"))
    assert str(pydicom.dcmread(sr_path).PatientName) == patient["name"]
