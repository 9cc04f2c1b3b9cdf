"""Radiopaedia-style cases (RP3D layout): a JSON list (or ``{case_id: case}`` object) of cases.

A case: ``id`` (or ``case_id``), ``title``, ``diagnosis``, ``findings``, ``impression``,
``radiographic_features``, optional ``patient`` ``{age, gender, presentation}`` and
``studies``: ``[{"modality", "plane", "images": [paths]}]`` (paths relative to the JSON file;
a path to a folder or a NIfTI is one 3D scan). Key names are matched case-insensitively.

Samples per case: report (findings + impression), rationale (features -> diagnosis),
open diagnosis, and per study open + inductive modality recognition.
"""

from __future__ import annotations

import random
from pathlib import Path

from radfm.data import tasks
from radfm.data.adapters._common import AdapterError, image_path, read_json
from radfm.data.manifest import ImageRef, Sample


def _get(case: dict, *names: str):
    lowered = {k.lower().replace(" ", "_"): v for k, v in case.items()}
    for name in names:
        value = lowered.get(name)
        if value not in (None, "", []):
            return value
    return None


def patient_context(patient: dict | None) -> str | None:
    """"Patient: Age 35 years Gender: Male. Headache for two weeks." (paper Fig. 2 layout)."""
    if not patient:
        return None
    parts = []
    age, gender, text = _get(patient, "age"), _get(patient, "gender", "sex"), _get(patient, "presentation", "history")
    if age or gender:
        parts.append("Patient:" + (f" Age {age}" if age else "") + (f" Gender: {gender}." if gender else "."))
    if text:
        parts.append(str(text).strip())
    return " ".join(parts) or None


def convert(src: str | Path, *, seed: int = 0, modality_set: tuple[str, ...] | None = None, check_images: bool = True) -> list[Sample]:
    src = Path(src)
    data = read_json(src)
    cases = list(data.values()) if isinstance(data, dict) else data
    ids = list(data.keys()) if isinstance(data, dict) else [None] * len(cases)
    if not isinstance(cases, list):
        raise AdapterError(f"{src}: expected a list of cases or an object of cases")
    rng = random.Random(seed)
    all_modalities = sorted({str(st.get("modality")) for c in cases for st in (_get(c, "studies") or []) if st.get("modality")})
    modality_set = tuple(modality_set or all_modalities)
    samples: list[Sample] = []
    for k, (key, case) in enumerate(zip(ids, cases)):
        case_id = str(_get(case, "id", "case_id") or key or k)
        where = f"{src}: case {case_id}"
        studies = _get(case, "studies")
        if not isinstance(studies, list) or not studies:
            raise AdapterError(f"{where}: field 'studies' must be a non-empty list of {{modality, images}}")
        images: list[ImageRef] = []
        for s, study in enumerate(studies):
            paths = study.get("images") or []
            if not paths:
                raise AdapterError(f"{where}: studies[{s}].images is empty")
            study_images = [ImageRef(image_path(src.parent, p, str(src), case_id, check=check_images),
                                     modality=study.get("modality"), plane=study.get("plane")) for p in paths]
            images.extend(study_images)
            modality = study.get("modality")
            if modality:
                sid = f"rp3d-{case_id}-s{s}"
                samples.append(tasks.modality_open(sid, "rp3d", study_images, modality, rng))
                if len(modality_set) > 1:
                    samples.append(tasks.modality_inductive(sid, "rp3d", study_images, modality, modality_set, rng))
        context = patient_context(_get(case, "patient"))
        findings, impression = _get(case, "findings"), _get(case, "impression")
        diagnosis = _get(case, "diagnosis", "title")
        cid = f"rp3d-{case_id}"
        if findings or impression:
            samples.append(tasks.report(cid, "rp3d", images, findings, rng, impression=impression, context=context))
        features = _get(case, "radiographic_features", "features")
        if features and diagnosis:
            samples.append(tasks.rationale(cid, "rp3d", images, features, diagnosis, rng, context=context))
        if diagnosis:
            samples.append(tasks.diagnosis_open(tasks.LabelledCase(cid, "rp3d", images, [diagnosis]), rng))
    return samples
