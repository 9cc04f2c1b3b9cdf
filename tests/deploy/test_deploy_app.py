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
from pathlib import Path

import pydicom
import pytest
from support.synthetic import write_chest_xray, write_ct_series

from radfm.answering.identity import ModelIdentity
from radfm.model.loading import demo_model_dir

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from hostile_files import deflated_dicom_bomb  # noqa: E402


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
needs_sdk = pytest.mark.skipif(DEPLOY_PYTHON is None, reason=(
    "monai-deploy-app-sdk not installed: `make install-deploy` (then RADFM_DEPLOY_PYTHON=.venv-deploy/bin/python)"))
pytestmark = pytest.mark.slow


@needs_sdk
def test_the_app_answers_the_selected_ct_series_and_writes_an_sr_referencing_it(tmp_path):
    ct_files = write_ct_series(tmp_path / "in" / "ct", slices=8, size=64)
    # D1: a deflate bomb beside the series is refused by radfm's guard before the SDK's loader reads anything
    (tmp_path / "in" / "other").mkdir()
    deflated_dicom_bomb(tmp_path / "in" / "other" / "bomb.dcm", 64 * 1024**2)
    write_chest_xray(tmp_path / "in" / "dx", size=64, study_uid=pydicom.dcmread(ct_files[0]).StudyInstanceUID)
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps([{"name": "ct", "modalities": ["CT"],  # the node config's rules format
                                  "prompt": "Look at the image <image> and answer: Where is the lesion?"}]),
                     encoding="utf-8")
    out = tmp_path / "out"
    run = subprocess.run([DEPLOY_PYTHON, "-m", "radfm.deploy.deploy_app", "-i", str(tmp_path / "in"), "-o", str(out),
                          "-m", str(demo_model_dir()), "--rules", str(rules), "--max_new_tokens", "8"],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "bomb.dcm: the deflated DICOM data inflate to more than" in run.stdout + run.stderr  # left out, logged
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


@needs_sdk
def test_the_app_writes_no_patient_data_to_its_output(tmp_path, patient_data):
    """The app's stdout and stderr (its log, the SDK's, the libraries' warnings) hold none of the patient's
    data while it answers a series, for a single-component name and a birth date that is not a DICOM date."""
    patient = patient_data.patients[0]
    ct_files = write_ct_series(tmp_path / "in" / "ct", slices=8, size=64, description="AXIAL", patient_id=patient["id"])
    patient_data.give(ct_files, patient)
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({"rules": [{"name": "ct", "modalities": ["CT"],
                                            "prompt": "<image> Where is the lesion?"}]}), encoding="utf-8")
    out = tmp_path / "out"
    run = subprocess.run([DEPLOY_PYTHON, "-m", "radfm.deploy.deploy_app", "-i", str(tmp_path / "in"), "-o", str(out),
                          "-m", str(demo_model_dir()), "--rules", str(rules), "--max_new_tokens", "4"],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path,
                         env={**os.environ, "PYTHONWARNINGS": "always"})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert patient_data.leaks(run.stdout + run.stderr, patient) == []
    (sr_path,) = sorted(out.glob("radfm-sr-*.dcm"))
    assert str(pydicom.dcmread(sr_path).PatientName) == patient["name"]


@needs_sdk
def test_an_input_no_rule_selects_ends_with_one_line_and_status_0_and_the_model_used_is_logged(tmp_path):
    write_chest_xray(tmp_path / "in" / "dx", size=32)
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps([{"name": "ct", "modalities": ["CT"], "prompt": "<image> Findings?"}]))
    run = subprocess.run([DEPLOY_PYTHON, "-m", "radfm.deploy.deploy_app", "-i", str(tmp_path / "in"),
                          "-o", str(tmp_path / "out"), "--rules", str(rules)],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-3000:]
    assert "Traceback" not in output
    assert f"radfm deploy app: no DICOM image in {tmp_path / 'in'} matches the series rules (ct); " \
           "nothing to answer" in run.stderr
    # no -m: the SDK says model_path=models; the demo model is what runs, and the log says so
    assert f"model: {demo_model_dir()}" in output


class _FixedAnswerer:
    """The node's answerer in process: reads the scan with our transforms, answers one sentence."""

    identity = ModelIdentity("test-model", "1", "0" * 64)
    max_images = 4

    def prepare(self, paths):
        from radfm.transforms import preprocess_scan

        return [preprocess_scan(str(p), size_2d=(32, 32), size_3d=(32, 32), max_depth=4) for p in paths]

    def answer(self, prompt, images, options):
        return "an answer"


@needs_sdk
def test_the_node_and_the_app_answer_the_same_series_with_the_same_prompt_from_one_rules_list(tmp_path):
    """One rules list, one study (a scout CT of 2 instances, a CT of 10): the node (its config's ``rules``) and
    the Deploy app (``--rules``) both answer the 10-instance series (min_instances=4), with the rule's prompt;
    the description rule is matched ignoring case by both."""
    import time

    from radfm.dicom.sr import read_sr
    from radfm.node.node_config import NodeConfig
    from radfm.node.node_runner import NodeRunner
    from radfm.node.storage_scp import StorageSCP

    ct = write_ct_series(tmp_path / "in" / "ct", slices=10, size=32, description="AXIAL 5MM")
    study = pydicom.dcmread(ct[0]).StudyInstanceUID
    scout = write_ct_series(tmp_path / "in" / "scout", slices=2, size=32, study_uid=study, description="axial scout")
    rules = [{"name": "ct", "modalities": ["CT"], "description": "axial", "min_instances": 4,
              "prompt": "Where is the lesion in <image>?"}]
    (tmp_path / "rules.json").write_text(json.dumps(rules), encoding="utf-8")

    config = NodeConfig.from_dict({"port": 0, "state_dir": str(tmp_path / "state"), "rules": rules,
                                   "allowed_callers": [{"ae_title": "TESTSCU", "host": "127.0.0.1"}]})
    node = NodeRunner(config, answerer=_FixedAnswerer())
    try:
        scp = StorageSCP(config, node.queue)
        for file in [*scout, *ct]:
            assert scp.ingest(file, "TESTSCU@127.0.0.1") == 0
        node.queue.seal_stable(0.0, now=time.time() + 1)
        assert node.run_next()
        (record,) = node.queue.jobs()
        (result,) = record["results"]
        node_sr = read_sr(result["sr_path"])
    finally:
        node.path.close()
        node.queue.close()

    out = tmp_path / "out"
    run = subprocess.run([DEPLOY_PYTHON, "-m", "radfm.deploy.deploy_app", "-i", str(tmp_path / "in"), "-o", str(out),
                          "-m", str(demo_model_dir()), "--rules", str(tmp_path / "rules.json"),
                          "--max_new_tokens", "4"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    (sr_path,) = sorted(out.glob("radfm-sr-*.dcm"))
    app_sr = read_sr(sr_path)
    series = pydicom.dcmread(ct[0], stop_before_pixels=True).SeriesInstanceUID
    assert result["series_uid"] == series and sr_path.name == f"radfm-sr-{series}.dcm"
    instances = sorted(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in ct)
    assert sorted(node_sr["referenced_sop_instance_uids"]) == instances
    assert sorted(app_sr["referenced_sop_instance_uids"]) == instances
    assert node_sr["prompt"] == app_sr["prompt"] == "Where is the lesion in <image>?"
    assert result["rule"] == "ct" and "rule=ct" in app_sr["algorithm_parameters"]


def test_without_the_sdk_the_app_says_in_one_line_what_to_run(tmp_path):
    if importlib.util.find_spec("monai.deploy") is not None:
        pytest.skip("this Python has the Deploy SDK")
    run = subprocess.run([sys.executable, "-m", "radfm.deploy.deploy_app", "-i", str(tmp_path), "-o",
                          str(tmp_path / "out")], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 1
    assert "Traceback" not in run.stderr and "ModuleNotFoundError" not in run.stderr
    (line,) = run.stderr.strip().splitlines()
    assert "make install-deploy" in line and ".venv-deploy/bin/python -m radfm.deploy.deploy_app" in line
    # one way, written once: the README and docs/hospital.md give the commands the line names
    repo = Path(__file__).resolve().parents[2]
    for page in ("README.md", "docs/hospital.md"):
        text = (repo / page).read_text(encoding="utf-8")
        assert "make install-deploy" in text and ".venv-deploy/bin/python -m radfm.deploy.deploy_app -i DICOM_DIR" \
            in text and "pip install .[deploy]" not in text, page
