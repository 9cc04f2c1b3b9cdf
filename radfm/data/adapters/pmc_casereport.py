"""PMC-CaseReport QA tables: patient context + question + answer + figure(s).

CSV columns: ``context`` (the case history), ``question``, ``answer`` and the image(s) in
``image`` / ``img_ref`` / ``Figure_path`` (several separated by ``;`` or given as a JSON list);
optional ``PMC_id``, ``split``. The instruction is "{context} {question} <image>…" (the
paper's contextual VQA); the answer is the response.
"""

from __future__ import annotations

import json
from pathlib import Path

from radfm.data import tasks
from radfm.data.adapters._common import AdapterError, field, image_path, normalise_split, read_csv
from radfm.data.manifest import ImageRef, Sample

IMAGE_COLUMNS = ("image", "img_ref", "Figure_path", "image_path")


def _image_list(value: str) -> list[str]:
    value = value.strip()
    if value.startswith("["):
        return [str(v) for v in json.loads(value)]
    return [v.strip() for v in value.split(";") if v.strip()]


def convert(src: str | Path, *, image_root: str | Path | None = None, check_images: bool = True) -> list[Sample]:
    src = Path(src)
    rows = read_csv(src, ("context", "question", "answer"))
    column = next((c for c in IMAGE_COLUMNS if rows and c in rows[0]), None)
    if rows and column is None:
        raise AdapterError(f"{src}: needs an image column, one of {IMAGE_COLUMNS}")
    root = Path(image_root) if image_root else (src.parent / "images" if (src.parent / "images").is_dir() else src.parent)
    samples = []
    for i, row in enumerate(rows, start=2):
        paths = _image_list(field(row, column, str(src), i))
        images = [ImageRef(image_path(root, p, str(src), i, check=check_images)) for p in paths]
        pmc = (row.get("PMC_id") or "").strip()
        samples.append(tasks.vqa(f"pmc-casereport-{pmc + '-' if pmc else ''}{i}", "pmc-casereport", images,
                                 field(row, "question", str(src), i), field(row, "answer", str(src), i),
                                 context=field(row, "context", str(src), i), template="{question} {images}",
                                 split=normalise_split(row.get("split"), str(src), i)))
    return samples
