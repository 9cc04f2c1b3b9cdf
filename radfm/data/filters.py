"""RadMD filters (paper, Methods "Radiology-specific filtering"), each reporting what it kept.

Every filter takes a list of ``Sample``s and returns ``(kept_samples, FilterReport)``.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from radfm.data.manifest import Sample


@dataclass
class FilterReport:
    """Counts for one filter: samples kept and dropped, plus filter-specific counts."""

    name: str
    kept: int
    dropped: int
    details: dict[str, int] = field(default_factory=dict)

    def __str__(self) -> str:
        extra = "".join(f", {k}={v}" for k, v in self.details.items())
        return f"{self.name}: kept {self.kept}, dropped {self.dropped}{extra}"


# "mm"/"cm" as units (also "5mm", "2 x 3 cm") and decimal numbers such as "2.5".
MEASUREMENT_RE = re.compile(r"(?i)(?<![a-z])(?:mm|cm)(?![a-z])|\d+\.\d+")


def split_sentences(text: str) -> list[str]:
    """Sentences ending in . ! or ? (a decimal point such as "2.5" does not end one)."""
    # protect decimal points, split, restore
    protected = re.sub(r"(\d)\.(\d)", "\\1\u2024\\2", text)
    parts = re.findall(r"[^.!?]+[.!?]*", protected)
    return [p.replace("\u2024", ".").strip() for p in parts if p.strip()]


def has_measurement(sentence: str) -> bool:
    """True when the sentence carries mm/cm or a decimal number."""
    return MEASUREMENT_RE.search(sentence) is not None


def remove_measurement_sentences(text: str) -> tuple[str, int]:
    """``text`` without its measurement sentences, and how many were removed."""
    sentences = split_sentences(text)
    kept = [s for s in sentences if not has_measurement(s)]
    return " ".join(kept), len(sentences) - len(kept)


_SECTION_RE = re.compile(r"^(Findings:|Impression:)\s*$")


def filter_measurements(samples: Sequence[Sample]) -> tuple[list[Sample], FilterReport]:
    """Drop sentences with measurements from responses (and interleaved text without images).

    A sample whose response is left empty (or only section headers) is dropped.
    """
    kept: list[Sample] = []
    removed_sentences = 0
    changed = 0
    for sample in samples:
        if sample.is_interleaved:
            kept.append(sample)
            continue
        new_text, n = remove_measurement_sentences(sample.response or "")
        removed_sentences += n
        stripped = re.sub(r"(Findings:|Impression:)", "", new_text).strip()
        if not stripped:
            continue
        if n:
            changed += 1
            sample = Sample(**{**sample.__dict__, "response": new_text})
        kept.append(sample)
    return kept, FilterReport("measurements", len(kept), len(samples) - len(kept),
                              {"sentences_removed": removed_sentences, "responses_changed": changed})


RADIOLOGY_CAPTION_RE = re.compile(
    r"(?i)\b(mri|mr|ct|cta|x-?rays?|radiograph\w*|ultrasound|ultrasonograph\w*|sonograph\w*|us|mammogra\w*|"
    r"computed tomography|magnetic resonance|tomograph\w*|fluoroscop\w*|angiogra\w*)\b"
)


def mentions_radiology(text: str) -> bool:
    """True when the text names a radiology modality (MRI, CT, X-ray, ultrasound, mammography, ...)."""
    return RADIOLOGY_CAPTION_RE.search(text) is not None


def keep_radiology_captions(samples: Sequence[Sample], caption_field: str = "caption") -> tuple[list[Sample], FilterReport]:
    """Keep samples whose caption (``extra[caption_field]``, else the response/text) mentions radiology."""
    kept = []
    for sample in samples:
        caption = sample.extra.get(caption_field) or sample.response or sample.text or ""
        if mentions_radiology(str(caption)):
            kept.append(sample)
    return kept, FilterReport("radiology_captions", len(kept), len(samples) - len(kept))


RADIOLOGY_MODALITIES = {
    "ct", "mri", "mr", "x-ray", "xray", "radiograph", "radiography", "cr", "dx", "ultrasound", "us",
    "mammography", "mg", "pet", "pet/ct", "spect", "nuclear medicine", "nm", "fluoroscopy", "angiography",
    "dsa", "cta", "mra", "cbct", "tomosynthesis",
}


def is_radiology_modality(modality: str) -> bool:
    """True for radiology modalities (CT, MRI and sequences such as "MRI T2", X-ray, US, ...)."""
    text = modality.strip().lower()
    if text in RADIOLOGY_MODALITIES:
        return True
    return mentions_radiology(text) or text.split(" ")[0] in RADIOLOGY_MODALITIES


def drop_non_radiology(samples: Sequence[Sample]) -> tuple[list[Sample], FilterReport]:
    """Drop samples with any image whose stated modality is not radiology (histology, photo, ...).

    Images without a modality are kept (nothing says they are not radiology).
    """
    kept = []
    for sample in samples:
        mods = [im.modality for im in sample.images if im.modality]
        if all(is_radiology_modality(m) for m in mods):
            kept.append(sample)
    return kept, FilterReport("non_radiology", len(kept), len(samples) - len(kept))


NORMAL_ANSWERS = {"no", "normal", "no abnormality.", "no abnormality", "no finding", "no findings", "no disease"}


def default_is_normal(sample: Sample) -> bool:
    """Normal when the response is a negative/normal answer."""
    return (sample.response or "").strip().lower().rstrip(".") in {a.rstrip(".") for a in NORMAL_ANSWERS}


def balance_normal_abnormal(samples: Sequence[Sample], rng: random.Random,
                            is_normal: Callable[[Sample], bool] = default_is_normal) -> tuple[list[Sample], FilterReport]:
    """Downsample the larger of normal/abnormal so both are equally frequent (order kept)."""
    normal = [i for i, s in enumerate(samples) if is_normal(s)]
    abnormal = [i for i, s in enumerate(samples) if not is_normal(s)]
    n = min(len(normal), len(abnormal))
    keep = set(rng.sample(normal, n)) | set(rng.sample(abnormal, n))
    kept = [s for i, s in enumerate(samples) if i in keep]
    return kept, FilterReport("balance_normal_abnormal", len(kept), len(samples) - len(kept),
                              {"normal_before": len(normal), "abnormal_before": len(abnormal)})


def apply_radmd_filters(samples: Sequence[Sample], rng: random.Random) -> tuple[list[Sample], list[FilterReport]]:
    """The RadMD chain: drop non-radiology, drop measurement sentences, balance diagnosis sets.

    Balancing applies to the ``diagnosis_inductive`` samples only; others pass through.
    """
    reports = []
    current, rep = drop_non_radiology(samples)
    reports.append(rep)
    current, rep = filter_measurements(current)
    reports.append(rep)
    diagnosis = [s for s in current if s.task == "diagnosis_inductive"]
    if diagnosis:
        balanced, rep = balance_normal_abnormal(diagnosis, rng)
        reports.append(rep)
        keep_ids = {s.id for s in balanced}
        current = [s for s in current if s.task != "diagnosis_inductive" or s.id in keep_ids]
    return current, reports
