"""Task constructors (paper, Methods "Visual instruction datasets").

Each turns labelled cases into instruction ``Sample``s with a prompt drawn from the task's
bank. All randomness comes from the ``random.Random`` passed in (seeded by the caller).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from radfm.data.manifest import ImageRef, Sample
from radfm.data.prompts import sample_prompt


@dataclass
class LabelledCase:
    """A case with its scans and labels, the input to the diagnosis constructors."""

    id: str
    dataset: str
    images: list[ImageRef]
    diseases: list[str]
    split: str | None = None


def _sample(case_id: str, dataset: str, task: str, images: list[ImageRef], instruction: str, response: str,
            split: str | None, **extra) -> Sample:
    return Sample(id=f"{case_id}:{task}", dataset=dataset, images=list(images), task=task,
                  instruction=instruction, response=response, split=split, extra=extra)


def modality_inductive(case_id: str, dataset: str, images: list[ImageRef], modality: str,
                       modality_set: Sequence[str], rng: random.Random, *, positive: bool | None = None,
                       split: str | None = None) -> Sample:
    """"<image> Is this image captured by {modality}?" with a random modality; answer yes/no.

    ``positive`` forces the asked modality to be the true one (True) or another one (False);
    by default it is a fair coin. The choices come from ``modality_set``.
    """
    others = [m for m in modality_set if m.lower() != modality.lower()]
    if positive is None:
        positive = not others or rng.random() < 0.5
    if not positive and not others:
        raise ValueError(f"{case_id}: modality set {list(modality_set)} has no modality other than {modality!r}")
    asked = modality if positive else others[rng.randrange(len(others))]
    instruction = sample_prompt("modality_inductive", rng, len(images), modality=asked)
    return _sample(case_id, dataset, "modality_inductive", images, instruction, "yes" if positive else "no", split)


def modality_open(case_id: str, dataset: str, images: list[ImageRef], modality: str, rng: random.Random, *,
                  split: str | None = None) -> Sample:
    """"What's the modality of the input scan <image>?" -> the modality name."""
    instruction = sample_prompt("modality_open", rng, len(images))
    return _sample(case_id, dataset, "modality_open", images, instruction, modality, split)


def diagnosis_inductive(cases: Sequence[LabelledCase], disease_set: Sequence[str], rng: random.Random) -> list[Sample]:
    """One "Does the patient have {disease}?" sample per case, yes/no balanced over the set.

    A case with no positive disease can only give "no", one positive for every disease in
    the set only "yes"; the others are assigned so that the yes count is as close to half as
    possible. The asked disease is drawn from the case's positives (yes) or from the rest of
    ``disease_set`` (no).
    """
    diseases = list(dict.fromkeys(disease_set))
    if not diseases:
        raise ValueError("diagnosis_inductive needs a non-empty disease set")
    forced: dict[int, bool] = {}
    free: list[int] = []
    for i, case in enumerate(cases):
        positives = {d.lower() for d in case.diseases}
        can_yes = bool(positives)
        can_no = any(d.lower() not in positives for d in diseases)
        if can_yes and can_no:
            free.append(i)
        elif can_yes or can_no:
            forced[i] = can_yes
        else:
            raise ValueError(f"case {case.id}: no disease to ask about")
    yes_needed = max(0, len(cases) // 2 - sum(forced.values()))
    rng.shuffle(free)
    answers = dict(forced)
    for k, i in enumerate(free):
        answers[i] = k < yes_needed
    samples = []
    for i, case in enumerate(cases):
        positives = {d.lower() for d in case.diseases}
        if answers[i]:
            asked = case.diseases[rng.randrange(len(case.diseases))]
        else:
            negatives = [d for d in diseases if d.lower() not in positives]
            asked = negatives[rng.randrange(len(negatives))]
        instruction = sample_prompt("diagnosis_inductive", rng, len(case.images), disease=asked)
        samples.append(_sample(case.id, case.dataset, "diagnosis_inductive", case.images, instruction,
                               "yes" if answers[i] else "no", case.split))
    return samples


def format_disease_list(diseases: Sequence[str], normal_text: str = "No abnormality.") -> str:
    """``["edema", "pneumothorax"]`` -> ``"Edema, pneumothorax."`` (the paper's open-diagnosis answer)."""
    if not diseases:
        return normal_text
    text = ", ".join(d.strip() for d in diseases)
    return text[:1].upper() + text[1:] + "."


def diagnosis_open(case: LabelledCase, rng: random.Random, *, normal_text: str = "No abnormality.") -> Sample:
    """"Please make diagnosis based on the images <image> <image>." -> comma-separated diseases."""
    instruction = sample_prompt("diagnosis_open", rng, len(case.images))
    return _sample(case.id, case.dataset, "diagnosis_open", case.images, instruction,
                   format_disease_list(case.diseases, normal_text), case.split)


def vqa(case_id: str, dataset: str, images: list[ImageRef], question: str, answer: str, rng: random.Random | None = None,
        *, context: str | None = None, split: str | None = None, template: str | None = None, **extra) -> Sample:
    """A question passed through (with an optional patient-context paragraph before it).

    ``template`` (e.g. ``"{question} {images}"``) fixes the layout; otherwise ``rng`` draws
    one from the bank, and without either the plain ``"<image> {question}"`` is used.
    """
    question = question.strip()
    if context:
        question = f"{context.strip()} {question}"
    if template is not None or rng is None:
        from radfm.data.prompts import load_bank, render
        instruction = render(template or load_bank("vqa")[0], len(images), question=question)
    else:
        instruction = sample_prompt("vqa", rng, len(images), question=question)
    return _sample(case_id, dataset, "vqa", images, instruction, str(answer).strip(), split, **extra)


def format_report(findings: str | None, impression: str | None = None) -> str:
    """``"Findings: … Impression: …"`` with empty parts left out."""
    parts = []
    if findings and findings.strip():
        parts.append(f"Findings: {findings.strip()}")
    if impression and impression.strip():
        parts.append(f"Impression: {impression.strip()}")
    if not parts:
        raise ValueError("a report needs findings or an impression")
    return " ".join(parts)


def report(case_id: str, dataset: str, images: list[ImageRef], findings: str | None, rng: random.Random,
           impression: str | None = None, *, context: str | None = None, split: str | None = None) -> Sample:
    """"Please caption this scan with findings <image>" -> "Findings: … Impression: …"."""
    instruction = sample_prompt("report", rng, len(images))
    if context:
        instruction = f"{context.strip()} {instruction}"
    return _sample(case_id, dataset, "report", images, instruction, format_report(findings, impression), split)


def format_rationale(features: str, diagnosis: str) -> str:
    """Features first, diagnosis last (the RP3D-Rationale answer layout)."""
    features = features.strip()
    if features and features[-1] not in ".!?":
        features += "."
    return f"The radiographic features can be summarized as follows. {features} The diagnosis is {diagnosis.strip()}."


def rationale(case_id: str, dataset: str, images: list[ImageRef], features: str, diagnosis: str, rng: random.Random,
              *, context: str | None = None, split: str | None = None) -> Sample:
    """"Determine the disease … starting with the radiological features …" -> features, then diagnosis."""
    instruction = sample_prompt("rationale", rng, len(images))
    if context:
        instruction = f"{context.strip()} {instruction}"
    return _sample(case_id, dataset, "rationale", images, instruction, format_rationale(features, diagnosis), split)
