import json

import pytest

from radfm.data.adapters import ADAPTERS, get_adapter
from radfm.data.adapters._common import AdapterError
from radfm.data.manifest import load_manifest, write_manifest
from radfm.model.processing import count_placeholders


def _by_id(samples):
    return {s.id: s for s in samples}


def test_vqa_rad(fixtures_dir):
    got = _by_id(get_adapter("vqa-rad")(fixtures_dir / "vqa_rad"))
    s = got["vqa-rad-2:vqa"]
    assert s.instruction == "<image> Where is the pneumothorax?" and s.response == "Left apex" and s.split == "test"
    assert s.images[0].path.endswith("VQA_RAD Image Folder/synpic29265.jpg")
    assert got["vqa-rad-1:vqa"].extra["closed_set"] == ["yes", "no"] and got["vqa-rad-1:vqa"].split == "train"


def test_slake_english_only_with_splits(fixtures_dir):
    got = get_adapter("slake")(fixtures_dir / "slake")
    assert [(s.split, s.response) for s in got] == [("train", "MRI"), ("test", "Yes")]
    assert got[0].images[0].modality == "MRI" and got[0].images[0].path.endswith("imgs/xmlab1/source.jpg")


def test_pmc_vqa_open_and_multiple_choice(fixtures_dir):
    open_ = get_adapter("pmc-vqa")(fixtures_dir / "pmc_vqa")
    assert open_[0].response == "Pulmonary embolism" and open_[0].instruction.endswith("based on the CT scan?")
    mc = get_adapter("pmc-vqa")(fixtures_dir / "pmc_vqa", multiple_choice=True)
    assert mc[1].extra["closed_set"] == ["CT", "MRI", "Ultrasound", "X-ray"]
    assert "Choices: A: CT. B: MRI." in mc[1].instruction and mc[1].response == "MRI"


def test_iu_xray_groups_projections(fixtures_dir):
    got = _by_id(get_adapter("iu-xray")(fixtures_dir / "iu_xray"))
    assert set(got) == {"iu-xray-1:report", "iu-xray-2:report"}  # uid 3 has no images
    s = got["iu-xray-1:report"]
    assert len(s.images) == 2 and count_placeholders(s.instruction) == 2
    assert [im.plane for im in s.images] == ["frontal", "lateral"]
    assert s.response.startswith("Findings: The cardiac silhouette") and s.response.endswith("Impression: Normal chest x-XXXX.")


def test_mimic_cxr(fixtures_dir):
    (s,) = get_adapter("mimic-cxr")(fixtures_dir / "mimic_cxr")
    assert s.id == "mimic-cxr-s50414267:report" and s.split == "train" and len(s.images) == 2
    assert s.response.endswith("Impression: No acute cardiopulmonary process.")
    assert s.images[0].plane == "PA"


def test_diagnosis_table(fixtures_dir):
    got = get_adapter("diagnosis-table")(fixtures_dir / "diagnosis" / "labels.csv")
    inductive = [s for s in got if s.task == "diagnosis_inductive"]
    assert sum(s.response == "yes" for s in inductive) == sum(s.response == "no" for s in inductive) == 3
    first = inductive[0]
    assert "pneumothorax" in first.instruction and first.response == "yes" and first.split == "train"
    opened = {s.images[0].path.rsplit("/", 1)[-1]: s.response for s in got if s.task == "diagnosis_open"}
    assert opened == {"a.png": "Pneumothorax.", "b.png": "No abnormality.", "c.png": "Pneumonia, edema."}


def test_radiopaedia_case(fixtures_dir):
    got = _by_id(get_adapter("radiopaedia")(fixtures_dir / "radiopaedia" / "cases.json"))
    report = got["rp3d-12345:report"]
    assert report.instruction.startswith("Patient: Age 35 years Gender: Male. Sudden onset chest pain.")
    assert len(report.images) == 2 and report.images[1].path.endswith("ct_axial.nii.gz")
    assert got["rp3d-12345:rationale"].response.endswith("The diagnosis is Pneumothorax.")
    assert got["rp3d-12345-s1:modality_open"].response == "CT"
    assert got["rp3d-12345:diagnosis_open"].response == "Pneumothorax."


def test_medpix(fixtures_dir):
    got = _by_id(get_adapter("medpix")(fixtures_dir / "medpix"))
    assert got["mpx-single-MPX1009_synpic46283:modality_open"].response == "CT w/contrast (IV)"
    assert got["mpx-single-MPX1009_synpic46284:report"].response == "Findings: Coronal T2 image shows the hyperintense cyst."
    multi = got["mpx-multi-MPX1009:report"]
    assert multi.instruction.startswith("70 year old man") and len(multi.images) == 2
    assert got["mpx-multi-MPX1009:diagnosis_open"].response == "Pancreatic pseudocyst."


def test_pmc_inline_links_figure_references(fixtures_dir):
    got = get_adapter("pmc-inline")(fixtures_dir / "pmc_inline")
    assert [s.id for s in got] == ["pmc-inline-PMC1234567-p0", "pmc-inline-PMC1234567-p2"]
    first, second = got
    assert first.text.endswith("right pulmonary artery (Fig. 1 <image>).") and first.task is None
    assert second.text == "Follow-up imaging (Figure 2B <image>) demonstrated resolution, compared with Fig. 1 <image>."
    assert [p.rsplit("/", 1)[-1] for p in (im.path for im in second.images)] == ["pone.0012345.g002.jpg", "pone.0012345.g001.jpg"]


def test_pmc_casereport_context(fixtures_dir):
    got = get_adapter("pmc-casereport")(fixtures_dir / "pmc_casereport" / "case_report_qa.csv")
    assert got[0].instruction.startswith("A 58-year-old woman") and got[0].instruction.endswith("What did the MRI indicate? <image>")
    assert got[0].response == "A mass in the right adnexa."
    assert len(got[1].images) == 2 and count_placeholders(got[1].instruction) == 2


@pytest.mark.parametrize("fmt", list(ADAPTERS))
def test_every_adapter_output_is_a_valid_manifest(fmt, fixtures_dir, tmp_path):
    src = {
        "vqa-rad": "vqa_rad", "slake": "slake", "pmc-vqa": "pmc_vqa", "iu-xray": "iu_xray", "mimic-cxr": "mimic_cxr",
        "diagnosis-table": "diagnosis/labels.csv", "radiopaedia": "radiopaedia/cases.json", "medpix": "medpix",
        "pmc-inline": "pmc_inline", "pmc-casereport": "pmc_casereport/case_report_qa.csv",
        "report-csv": None,
    }[fmt]
    if src is None:
        table = tmp_path / "reports.csv"
        (tmp_path / "x.png").write_bytes(b"x")
        table.write_text("image_path,findings,impression,split\nx.png,A nodule.,Nodule.,validation\n")
        src_path = table
    else:
        src_path = fixtures_dir / src
    samples = get_adapter(fmt)(src_path)
    assert samples
    out = tmp_path / "out" / "m.jsonl"
    write_manifest(samples, out)
    loaded = load_manifest(out, data_root="/")
    assert [s.id for s in loaded] == [s.id for s in samples]
    assert [im.path for s in loaded for im in s.images] == [im.path for s in samples for im in s.images]


def test_adapter_errors_name_file_and_field(tmp_path):
    bad = tmp_path / "labels.csv"
    bad.write_text("image_path,disease,label\nx.png,edema,maybe\n")
    (tmp_path / "x.png").write_bytes(b"x")
    with pytest.raises(AdapterError, match=r"labels.csv: row 2: field 'label'"):
        get_adapter("diagnosis-table")(bad)
    bad.write_text("image_path,disease\nx.png,edema\n")
    with pytest.raises(AdapterError, match=r"missing column\(s\) \['label'\]"):
        get_adapter("diagnosis-table")(bad)
    (tmp_path / "v.json").write_text(json.dumps([{"qid": 7, "image_name": "missing.jpg", "question": "q", "answer": "a"}]))
    with pytest.raises(AdapterError, match=r"v.json: row 7: image 'missing.jpg' not found"):
        get_adapter("vqa-rad")(tmp_path / "v.json")
    with pytest.raises(KeyError, match="unknown dataset format"):
        get_adapter("nope")
