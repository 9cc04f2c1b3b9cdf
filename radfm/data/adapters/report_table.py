"""Report tables -> report-generation samples ("Findings: … Impression: …").

- ``iu-xray``: Open-i Indiana University chest X-rays as published on Kaggle:
  ``indiana_reports.csv`` (``uid, MeSH, Problems, image, indication, comparison, findings,
  impression``) + ``indiana_projections.csv`` (``uid, filename, projection``) + ``images/``
  (also ``images/images_normalized/``). All projections of a report form one sample.
- ``mimic-cxr``: MIMIC-CXR-JPG: ``mimic-cxr-2.0.0-metadata.csv`` (``dicom_id, subject_id,
  study_id, ViewPosition``), the section file ``mimic_cxr_sectioned.csv`` (``study,
  impression, findings``, from the official section parser), optional
  ``mimic-cxr-2.0.0-split.csv`` (``dicom_id, split``), images under
  ``files/p10/p10000032/s50414267/<dicom_id>.jpg``.
- ``report-csv``: any table with ``image_path`` (``;``-separated for several images),
  ``findings`` and/or ``impression``, optional ``split`` and ``id``.
"""

from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path

from radfm.data import tasks
from radfm.data.adapters._common import AdapterError, field, image_path, normalise_split, read_csv
from radfm.data.manifest import ImageRef, Sample

_SPLIT_NAMES = {"train": "train", "validate": "val", "val": "val", "valid": "val", "test": "test"}


def _report_sample(case_id, dataset, images, findings, impression, rng, split) -> Sample | None:
    if not (findings or "").strip() and not (impression or "").strip():
        return None
    return tasks.report(case_id, dataset, images, findings or None, rng, impression=impression or None, split=split)


def convert_iu_xray(src: str | Path, *, seed: int = 0, check_images: bool = True) -> list[Sample]:
    src = Path(src)
    reports = read_csv(src / "indiana_reports.csv", ("uid", "findings", "impression"))
    projections = read_csv(src / "indiana_projections.csv", ("uid", "filename"))
    root = src / "images" / "images_normalized" if (src / "images" / "images_normalized").is_dir() else src / "images"
    files = defaultdict(list)
    for i, row in enumerate(projections, start=2):
        uid = field(row, "uid", "indiana_projections.csv", i)
        files[uid].append(ImageRef(image_path(root, field(row, "filename", "indiana_projections.csv", i),
                                              str(src / "indiana_projections.csv"), i, check=check_images),
                                   modality="X-ray", plane=(row.get("projection") or "").strip().lower() or None))
    rng = random.Random(seed)
    samples = []
    for i, row in enumerate(reports, start=2):
        uid = field(row, "uid", "indiana_reports.csv", i)
        if not files.get(uid):
            continue  # a report without images cannot be a training sample
        sample = _report_sample(f"iu-xray-{uid}", "iu-xray", files[uid], row.get("findings"), row.get("impression"), rng, None)
        if sample:
            samples.append(sample)
    return samples


def convert_mimic_cxr(src: str | Path, *, seed: int = 0, check_images: bool = True) -> list[Sample]:
    src = Path(src)
    meta = read_csv(src / "mimic-cxr-2.0.0-metadata.csv", ("dicom_id", "subject_id", "study_id"))
    sections = read_csv(src / "mimic_cxr_sectioned.csv", ("study",))
    split_of = {}
    if (src / "mimic-cxr-2.0.0-split.csv").is_file():
        split_of = {r["dicom_id"]: _SPLIT_NAMES.get(r.get("split", "").strip()) for r in read_csv(src / "mimic-cxr-2.0.0-split.csv", ("dicom_id", "split"))}
    by_study = {r["study"].strip().lstrip("s"): r for r in sections}
    studies = defaultdict(list)
    for i, row in enumerate(meta, start=2):
        subject, study, dicom = row["subject_id"].strip(), row["study_id"].strip(), row["dicom_id"].strip()
        rel = f"files/p{subject[:2]}/p{subject}/s{study}/{dicom}.jpg"
        studies[study].append((ImageRef(image_path(src, rel, str(src / "mimic-cxr-2.0.0-metadata.csv"), i, check=check_images),
                                        modality="X-ray", plane=(row.get("ViewPosition") or "").strip() or None),
                               split_of.get(dicom)))
    rng = random.Random(seed)
    samples = []
    for study, items in studies.items():
        section = by_study.get(study)
        if section is None:
            continue
        split = items[0][1]
        sample = _report_sample(f"mimic-cxr-s{study}", "mimic-cxr", [im for im, _ in items], section.get("findings"),
                                section.get("impression"), rng, split)
        if sample:
            samples.append(sample)
    return samples


def convert_report_csv(src: str | Path, *, dataset: str | None = None, seed: int = 0, check_images: bool = True) -> list[Sample]:
    src = Path(src)
    rows = read_csv(src, ("image_path",))
    if rows and "findings" not in rows[0] and "impression" not in rows[0]:
        raise AdapterError(f"{src}: needs a 'findings' and/or 'impression' column")
    dataset = dataset or src.stem
    rng = random.Random(seed)
    samples = []
    first_row: dict[str, int] = {}
    for i, row in enumerate(rows, start=2):
        case_id = (row.get("id") or "").strip() or f"{dataset}-{i}"
        if case_id in first_row:  # the manifest would not load (ids must be unique)
            raise AdapterError(f"{src}: row {i}: duplicate id {case_id!r} (first on row {first_row[case_id]})")
        first_row[case_id] = i
        images = [ImageRef(image_path(src.parent, p.strip(), str(src), i, check=check_images), modality=row.get("modality") or None)
                  for p in field(row, "image_path", str(src), i).split(";") if p.strip()]
        split = normalise_split(row.get("split"), str(src), i)
        sample = _report_sample(case_id, dataset, images, row.get("findings"), row.get("impression"), rng, split)
        if sample is None:
            raise AdapterError(f"{src}: row {i}: both 'findings' and 'impression' are empty")
        samples.append(sample)
    return samples
