"""Binary diagnosis tables: CSV ``image_path, disease, label`` (label 1/0, yes/no, true/false).

One row per (image, disease). Each row becomes an inductive sample ("Does the patient have
{disease}?" -> yes/no); with ``balance=True`` (default) the larger of yes/no is downsampled
(RadMD balancing). Each image with at least one row also gives an open-diagnosis sample
(its positive diseases, comma separated; "No abnormality." when none). Optional columns:
``split``, ``modality``.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from pathlib import Path

from radfm.data import tasks
from radfm.data.adapters._common import AdapterError, field, image_path, normalise_split, read_csv
from radfm.data.filters import balance_normal_abnormal
from radfm.data.manifest import ImageRef, Sample
from radfm.data.prompts import sample_prompt

_TRUE = {"1", "yes", "true", "positive", "1.0"}
_FALSE = {"0", "no", "false", "negative", "0.0"}


def convert(src: str | Path, *, dataset: str | None = None, seed: int = 0, balance: bool = True,
            open_diagnosis: bool = True, check_images: bool = True) -> list[Sample]:
    src = Path(src)
    rows = read_csv(src, ("image_path", "disease", "label"))
    dataset = dataset or src.stem
    rng = random.Random(seed)
    inductive: list[Sample] = []
    positives: OrderedDict[str, tuple[ImageRef, list[str], str | None]] = OrderedDict()
    for i, row in enumerate(rows, start=2):
        rel = field(row, "image_path", str(src), i)
        disease = field(row, "disease", str(src), i)
        label = field(row, "label", str(src), i).lower()
        if label not in _TRUE | _FALSE:
            raise AdapterError(f"{src}: row {i}: field 'label' must be 1/0 or yes/no, got {row['label']!r}")
        split = normalise_split(row.get("split"), str(src), i)
        image = ImageRef(image_path(src.parent, rel, str(src), i, check=check_images), modality=(row.get("modality") or "").strip() or None)
        entry = positives.setdefault(rel, (image, [], split))
        if label in _TRUE and disease not in entry[1]:
            entry[1].append(disease)
        instruction = sample_prompt("diagnosis_inductive", rng, 1, disease=disease)
        inductive.append(Sample(id=f"{dataset}-{i}:diagnosis_inductive", dataset=dataset, images=[image],
                                task="diagnosis_inductive", instruction=instruction,
                                response="yes" if label in _TRUE else "no", split=split, extra={"closed_set": ["yes", "no"]}))
    if balance:
        inductive, _ = balance_normal_abnormal(inductive, rng)
    samples = list(inductive)
    if open_diagnosis:
        for k, (_rel, (image, diseases, split)) in enumerate(positives.items()):
            case = tasks.LabelledCase(f"{dataset}-img{k}", dataset, [image], diseases, split)
            samples.append(tasks.diagnosis_open(case, rng))
    return samples
