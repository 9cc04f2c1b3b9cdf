import random

import pytest

from radfm.data import tasks
from radfm.data.manifest import ImageRef
from radfm.data.prompts import load_bank, sample_prompt
from radfm.model.processing import count_placeholders

ALL_TASKS = ["modality_inductive", "modality_open", "diagnosis_inductive", "diagnosis_open", "vqa", "report", "rationale"]
IMG = [ImageRef("/x/a.png")]


@pytest.mark.parametrize("task", ALL_TASKS)
def test_banks_have_ten_paraphrases(task):
    bank = load_bank(task)
    assert len(bank) >= 10 and len(set(bank)) == len(bank)


def test_paper_examples_are_in_the_banks():
    assert "{images} Is this image captured by {modality}?" in load_bank("modality_inductive")
    assert "What's the modality of the input scan {images}?" in load_bank("modality_open")
    assert "{images} Does the patient have {disease}?" in load_bank("diagnosis_inductive")
    assert "Please make diagnosis based on the images {images}." in load_bank("diagnosis_open")
    assert "Please caption this scan with findings. {images}" in load_bank("report")
    assert any(p.startswith("Determine the disease that corresponds") for p in load_bank("rationale"))


def test_sampling_is_seeded_and_places_images():
    a = [sample_prompt("report", random.Random(3), 2) for _ in range(1)]
    b = [sample_prompt("report", random.Random(3), 2) for _ in range(1)]
    assert a == b
    assert count_placeholders(a[0]) == 2
    many = {sample_prompt("report", random.Random(s), 1) for s in range(50)}
    assert len(many) > 5


def test_modality_tasks():
    rng = random.Random(0)
    yes = tasks.modality_inductive("c", "d", IMG, "CT", ["CT", "MRI", "X-ray"], rng, positive=True)
    no = tasks.modality_inductive("c", "d", IMG, "CT", ["CT", "MRI", "X-ray"], rng, positive=False)
    assert yes.response == "yes" and "CT" in yes.instruction
    assert no.response == "no" and "CT" not in no.instruction and ("MRI" in no.instruction or "X-ray" in no.instruction)
    answers = [tasks.modality_inductive("c", "d", IMG, "CT", ["CT", "MRI"], rng).response for _ in range(200)]
    assert 70 < answers.count("yes") < 130
    assert tasks.modality_open("c", "d", IMG, "MRI", rng).response == "MRI"


def test_diagnosis_inductive_is_balanced_and_correct():
    cases = [tasks.LabelledCase(f"c{i}", "d", IMG, ["pneumonia"] if i % 4 == 0 else []) for i in range(40)]
    cases += [tasks.LabelledCase(f"e{i}", "d", IMG, ["edema", "pneumothorax"]) for i in range(10)]
    samples = tasks.diagnosis_inductive(cases, ["pneumonia", "edema", "pneumothorax"], random.Random(1))
    assert len(samples) == 50
    assert sum(s.response == "yes" for s in samples) == 20  # 10 + 10 positives are all the yes-capable cases
    by_id = {c.id: c for c in cases}
    for s in samples:
        case = by_id[s.id.split(":")[0]]
        asked = next(d for d in ["pneumonia", "edema", "pneumothorax"] if d in s.instruction)
        assert (s.response == "yes") == (asked in case.diseases)
    # when enough cases can go either way, exactly half are yes
    free = [tasks.LabelledCase(f"f{i}", "d", IMG, ["edema"]) for i in range(30)]
    got = tasks.diagnosis_inductive(free, ["edema", "pneumonia"], random.Random(2))
    assert sum(s.response == "yes" for s in got) == 15


def test_open_diagnosis_report_rationale_formats():
    rng = random.Random(0)
    case = tasks.LabelledCase("c", "d", IMG + IMG, ["edema", "pneumothorax"])
    s = tasks.diagnosis_open(case, rng)
    assert s.response == "Edema, pneumothorax." and count_placeholders(s.instruction) == 2
    r = tasks.report("c", "d", IMG, "A mass.", rng, impression="Tumour.")
    assert r.response == "Findings: A mass. Impression: Tumour."
    ra = tasks.rationale("c", "d", IMG, "Hyperintense on T2", "Glioma", rng)
    assert ra.response.endswith("Hyperintense on T2. The diagnosis is Glioma.")
    q = tasks.vqa("c", "d", IMG, "Where?", "left", context="A 40-year-old man.", template="{question} {images}")
    assert q.instruction == "A 40-year-old man. Where? <image>"
