"""MedPix 2.0 layout: ``Case_topic.json`` + ``Descriptions.json`` + ``images/<image>.png``.

``Case_topic.json``: ``[{"U_id", "Case": {"Title", "History", "Findings", "Case Diagnosis", ...},
"TAC": [image ids], "MRI": [image ids]}]``. ``Descriptions.json``: ``[{"U_id", "image",
"Type", "Description": {"Caption", "Modality", "Plane", "Age", "Sex", ...}, "Location"}]``.

MPx-Single (per image): modality open question and the caption as a report.
MPx-Multi (per case): findings as a report with the history as context; open diagnosis.
"""

from __future__ import annotations

import random
from pathlib import Path

from radfm.data import tasks
from radfm.data.adapters._common import AdapterError, read_json
from radfm.data.manifest import ImageRef, Sample

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _find_image(root: Path, image_id: str, where: str, check: bool) -> str:
    for suffix in IMAGE_SUFFIXES:
        if (root / f"{image_id}{suffix}").is_file():
            return str((root / f"{image_id}{suffix}").resolve())
    if check:
        raise AdapterError(f"{where}: image {image_id!r} not found under {root} (tried {', '.join(IMAGE_SUFFIXES)})")
    return str((root / f"{image_id}.png").resolve())


def convert(src: str | Path, *, seed: int = 0, check_images: bool = True) -> list[Sample]:
    src = Path(src)
    cases = read_json(src / "Case_topic.json")
    descriptions = read_json(src / "Descriptions.json")
    if not isinstance(cases, list) or not isinstance(descriptions, list):
        raise AdapterError(f"{src}: Case_topic.json and Descriptions.json must both be JSON lists")
    root = src / "images"
    rng = random.Random(seed)
    samples: list[Sample] = []
    image_refs: dict[str, ImageRef] = {}
    for k, desc in enumerate(descriptions):
        image_id = desc.get("image")
        if not image_id:
            raise AdapterError(f"{src / 'Descriptions.json'}: entry {k}: field 'image' is missing")
        info = desc.get("Description") or {}
        modality = (info.get("Modality") or desc.get("Type") or "").strip() or None
        ref = ImageRef(_find_image(root, image_id, f"{src / 'Descriptions.json'}: entry {k}", check_images),
                       modality=modality, plane=(info.get("Plane") or "").strip() or None)
        image_refs[image_id] = ref
        sid = f"mpx-single-{image_id}"
        if modality:
            samples.append(tasks.modality_open(sid, "mpx-single", [ref], modality, rng))
        caption = (info.get("Caption") or "").strip()
        if caption:
            samples.append(tasks.report(sid, "mpx-single", [ref], caption, rng))
    for k, entry in enumerate(cases):
        uid = entry.get("U_id") or str(k)
        case = entry.get("Case") or {}
        ids = list(entry.get("TAC") or []) + list(entry.get("MRI") or [])
        images = [image_refs[i] for i in ids if i in image_refs]
        if not images:
            continue
        history = (case.get("History") or "").strip() or None
        sid = f"mpx-multi-{uid}"
        findings = (case.get("Findings") or "").strip()
        if findings:
            samples.append(tasks.report(sid, "mpx-multi", images, findings, rng, context=history))
        diagnosis = (case.get("Case Diagnosis") or case.get("Diagnosis") or "").strip()
        if diagnosis:
            samples.append(tasks.diagnosis_open(tasks.LabelledCase(sid, "mpx-multi", images, [diagnosis]), rng))
    return samples
