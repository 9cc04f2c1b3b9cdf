"""DICOM SR export: round trip through pydicom/highdicom on pydicom's CT series."""

from __future__ import annotations

import highdicom as hd
import pydicom
import pytest

from radfm.cli import main
from radfm.dicom.sr import SRExportError, export_sr, read_sr

ANSWER = "Findings: small nodule in the right lower lobe. Impression: likely benign."
PROMPT = "<image> Please caption this scan with findings."
HASH = "0123456789abcdef" * 4


def test_sr_round_trip_references_series_and_records_model(ct_series_dir, tmp_path):
    output = tmp_path / "out" / "report.dcm"
    main(["export-sr", str(output), str(ct_series_dir), "--answer", ANSWER, "--prompt", PROMPT,
          "--model_name", "RadFM-test", "--model_version", "1.2.3", "--weights_hash", HASH])
    sources = [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(ct_series_dir.iterdir())]

    sr = pydicom.dcmread(output)
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR Storage
    assert sr.Modality == "SR"
    assert sr.VerificationFlag == "UNVERIFIED" and sr.PreliminaryFlag == "PRELIMINARY"
    assert sr.StudyInstanceUID == sources[0].StudyInstanceUID
    assert sr.PatientID == sources[0].PatientID and sr.PatientName == sources[0].PatientName
    assert sr.SeriesInstanceUID != sources[0].SeriesInstanceUID
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0]
    assert evidence.StudyInstanceUID == sources[0].StudyInstanceUID
    series = evidence.ReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == sources[0].SeriesInstanceUID
    assert {i.ReferencedSOPInstanceUID for i in series.ReferencedSOPSequence} == {s.SOPInstanceUID for s in sources}

    parsed = read_sr(output)
    assert parsed["answer"] == ANSWER and parsed["prompt"] == PROMPT
    assert parsed["device"]["Device Observer Name"] == "RadFM-test"
    assert parsed["device"]["Device Observer Model Name"] == "RadFM-test 1.2.3"
    assert parsed["device"]["Device Observer Serial Number"] == HASH
    assert f"weights_sha256={HASH}" in parsed["algorithm_parameters"]
    assert sorted(parsed["referenced_sop_instance_uids"]) == sorted(s.SOPInstanceUID for s in sources)
    assert sr.SoftwareVersions == "1.2.3"

    document = hd.sr.srread(output)  # highdicom parses it back as a Comprehensive SR
    assert isinstance(document, hd.sr.ComprehensiveSR)
    assert len(document.get_evidence()) == len(sources)
    assert not list(tmp_path.joinpath("out").glob(".*"))  # no (hidden) temp file left behind


def test_sr_needs_a_dicom_source(small_scans, tmp_path):
    with pytest.raises(SRExportError, match="none of the scans is DICOM"):
        export_sr(str(tmp_path / "r.dcm"), str(small_scans["nifti"]), answer=ANSWER, prompt=PROMPT)
    assert not (tmp_path / "r.dcm").exists()


def test_sr_mixed_inputs_record_non_dicom_names(ct_series_dir, small_scans, tmp_path):
    path = export_sr(str(tmp_path / "r.dcm"), str(ct_series_dir), str(small_scans["png"]), answer=ANSWER, prompt=PROMPT)
    assert "non_dicom_input=chest.png" in read_sr(path)["algorithm_parameters"]


def test_sr_keeps_non_latin_text(ct_series_dir, tmp_path):
    answer = "Befund: Läsion ≥ 5 mm, 結節"  # sources are ISO_IR 100; the SR is written in UTF-8
    path = export_sr(str(tmp_path / "r.dcm"), str(ct_series_dir), answer=answer, prompt=PROMPT)
    assert read_sr(path)["answer"] == answer
    assert pydicom.dcmread(path).PatientName == "Doe^Archibald"


def test_sr_rejects_empty_answer(ct_series_dir, tmp_path):
    with pytest.raises(SRExportError, match="empty"):
        export_sr(str(tmp_path / "r.dcm"), str(ct_series_dir), answer="  ", prompt=PROMPT)
