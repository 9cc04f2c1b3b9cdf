"""The MONAI Deploy application on a synthesized CT series: one SR that references the input series.

Needs the ``deploy`` extra (monai-deploy-app-sdk 4.0, which pulls holoscan); skipped without it.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys

import pydicom
import pytest

from radfm.hospital.synthetic import write_chest_xray, write_ct_series
from radfm.model.loading import demo_model_dir


def _sdk_installed() -> bool:
    try:
        return importlib.util.find_spec("monai.deploy") is not None
    except ImportError:
        return False


pytestmark = [pytest.mark.slow, pytest.mark.skipif(not _sdk_installed(),
                                                   reason="monai-deploy-app-sdk not installed (pip install .[deploy])")]


def test_the_app_answers_the_selected_ct_series_and_writes_an_sr_referencing_it(tmp_path):
    ct_files = write_ct_series(tmp_path / "in" / "ct", slices=8, size=64)
    write_chest_xray(tmp_path / "in" / "dx", size=64, study_uid=pydicom.dcmread(ct_files[0]).StudyInstanceUID)
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({"selections": [
        {"name": "ct", "conditions": {"Modality": "(?i)^CT$"},
         "prompt": "Look at the image <image> and answer: Where is the lesion?"}]}), encoding="utf-8")
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, "-m", "radfm.hospital.deploy_app", "-i", str(tmp_path / "in"), "-o", str(out),
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
    if shutil.which("dciodvfy") is not None:
        check = subprocess.run(["dciodvfy", str(sr_path)], capture_output=True, text=True, timeout=60)
        assert [line for line in (check.stdout + check.stderr).splitlines() if line.startswith("Error")] == []
