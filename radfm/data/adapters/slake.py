"""SLAKE (Liu et al. 2021): ``train.json`` / ``validate.json`` / ``test.json`` + ``imgs/``.

Each record: ``qid``, ``img_id``, ``img_name`` (e.g. ``xmlab102/source.jpg``), ``question``,
``answer``, ``q_lang`` (en/zh), ``modality``, ``location``, ``answer_type``, ``content_type``.
English questions only by default (``languages=("en",)``).
"""

from __future__ import annotations

from pathlib import Path

from radfm.data import tasks
from radfm.data.adapters._common import AdapterError, field, image_path, read_json
from radfm.data.manifest import ImageRef, Sample

SPLIT_FILES = {"train.json": "train", "validate.json": "val", "test.json": "test"}


def convert(src: str | Path, *, image_root: str | Path | None = None, languages=("en",), check_images: bool = True) -> list[Sample]:
    src = Path(src)
    files = [src / name for name in SPLIT_FILES if (src / name).is_file()] if src.is_dir() else [src]
    if not files:
        raise AdapterError(f"{src}: no SLAKE split files ({', '.join(SPLIT_FILES)}) found")
    samples = []
    for json_path in files:
        root = Path(image_root) if image_root else json_path.parent / "imgs"
        split = SPLIT_FILES.get(json_path.name)
        records = read_json(json_path)
        if not isinstance(records, list):
            raise AdapterError(f"{json_path}: expected a JSON list of question records")
        for i, rec in enumerate(records):
            if languages and rec.get("q_lang") not in languages:
                continue
            qid = rec.get("qid", i)
            src_name = str(json_path)
            image = image_path(root, field(rec, "img_name", src_name, qid), src_name, qid, check=check_images)
            answer = field(rec, "answer", src_name, qid)
            closed = ["yes", "no"] if str(rec.get("answer_type", "")).upper() == "CLOSED" and answer.lower() in ("yes", "no") else None
            samples.append(tasks.vqa(f"slake-{split or json_path.stem}-{qid}", "slake",
                                     [ImageRef(image, modality=rec.get("modality"))], field(rec, "question", src_name, qid),
                                     answer, split=split, answer_type=str(rec.get("answer_type", "")).lower() or None,
                                     closed_set=closed, location=rec.get("location")))
    return samples
