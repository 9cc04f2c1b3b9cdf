"""`radfm export-sr` is quiet: highdicom's INFO lines ("copy attributes of module ...") stay out of stderr."""

from __future__ import annotations

import logging
import os

from radfm.cli import main


def test_export_sr_does_not_log_highdicom_info(ct_series_dir, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    main(["export-sr", str(tmp_path / "report.dcm"), str(ct_series_dir), "--answer", "No finding.",
          "--prompt", "<image> Findings?", "--model_name", "RadFM-test"])
    assert (tmp_path / "report.dcm").is_file()
    noise = [r.getMessage() for r in caplog.records if r.name.startswith("highdicom") and r.levelno < logging.WARNING]
    assert noise == []
    assert logging.getLogger("highdicom").level == logging.NOTSET  # restored after the call


def _patient_copy(ct_series_dir, folder, patient, patient_data):
    """pydicom's CT series, copied to ``folder`` and given ``patient``."""
    import shutil

    copy = folder / "ct"
    shutil.copytree(ct_series_dir, copy)
    patient_data.give(sorted(copy.iterdir()), patient)
    return copy


def test_export_sr_writes_no_patient_data(ct_series_dir, tmp_path, identifying_patient, patient_data, capfd, caplog,
                                          recwarn):
    """A single-component name, a name with a space, a birth date that is not a DICOM date: none reaches
    stderr, the log or a warning (highdicom quotes the name, pydicom and highdicom quote the date)."""
    import pydicom

    caplog.set_level(logging.DEBUG)
    scans = _patient_copy(ct_series_dir, tmp_path, identifying_patient, patient_data)
    capfd.readouterr()
    recwarn.clear()
    main(["export-sr", str(tmp_path / "report.dcm"), str(scans), "--answer", "No finding.",
          "--prompt", "<image> Findings?", "--model_name", "RadFM-test"])
    assert patient_data.leaks(patient_data.emitted(capfd, caplog, recwarn), identifying_patient) == []
    sr = pydicom.dcmread(tmp_path / "report.dcm")
    assert str(sr.PatientName) == identifying_patient["name"] and sr.PatientID == identifying_patient["id"]


def test_export_sr_command_writes_no_patient_data_to_stderr(ct_series_dir, tmp_path, patient_data):
    """The real command in its own process: what the user's terminal (or a log file) gets."""
    import subprocess
    import sys

    patient = patient_data.patients[0]  # one component, and a birth date that is not a DICOM date
    scans = _patient_copy(ct_series_dir, tmp_path, patient, patient_data)
    run = subprocess.run([sys.executable, "-c", "import sys; from radfm.cli import main; main(sys.argv[1:])",
                          "export-sr", str(tmp_path / "report.dcm"), str(scans), "--answer", "No finding.",
                          "--model_name", "RadFM-test"], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONWARNINGS": "always"})
    assert run.returncode == 0, run.stderr[-2000:]
    assert "is unlikely to represent the intended person name" in run.stderr  # the warning still says what
    assert patient_data.leaks(run.stdout + run.stderr, patient) == []


def test_the_service_writes_no_patient_data_while_it_answers_an_upload_with_an_sr(
        server, ct_series_dir, tmp_path, identifying_patient, patient_data, capfd, caplog, recwarn):
    """`radfm serve`'s log (uvicorn's and ours, from the service's threads) and its warnings hold no
    patient data while an upload is answered with an SR; the SR and the answer still carry the patient."""
    import base64
    import io

    import httpx
    import pydicom

    caplog.set_level(logging.DEBUG)
    scans = _patient_copy(ct_series_dir, tmp_path, identifying_patient, patient_data)
    files = [("files", (p.name, p.read_bytes(), "application/dicom")) for p in sorted(scans.iterdir())]
    capfd.readouterr()
    recwarn.clear()
    response = httpx.post(f"{server.url}/v1/answer", files=files,
                          data={"prompt": "<image> Findings?", "max_new_tokens": "4", "sr": "true"}, timeout=120)
    assert response.status_code == 200, response.text
    body = response.json()
    assert patient_data.leaks(patient_data.emitted(capfd, caplog, recwarn), identifying_patient) == []
    sr = pydicom.dcmread(io.BytesIO(base64.b64decode(body["sr"])))
    assert str(sr.PatientName) == identifying_patient["name"] and sr.PatientID == identifying_patient["id"]
