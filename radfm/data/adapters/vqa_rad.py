"""VQA-RAD (Lau et al. 2018): ``VQA_RAD Dataset Public.json`` + ``VQA_RAD Image Folder/``.

Each record: ``qid``, ``image_name``, ``image_organ``, ``question``, ``answer``,
``answer_type`` (CLOSED/OPEN), ``question_type``, ``phrase_type`` (freeform, para,
test_freeform, test_para). ``phrase_type`` starting with "test" -> test split, else train.
"""

from __future__ import annotations

from pathlib import Path

from radfm.data import tasks
from radfm.data.adapters._common import AdapterError, field, image_path, read_json
from radfm.data.manifest import ImageRef, Sample

JSON_NAME = "VQA_RAD Dataset Public.json"
IMAGE_DIR = "VQA_RAD Image Folder"


def convert(src: str | Path, *, image_root: str | Path | None = None, check_images: bool = True) -> list[Sample]:
    src = Path(src)
    json_path = src / JSON_NAME if src.is_dir() else src
    root = Path(image_root) if image_root else json_path.parent / IMAGE_DIR
    if not root.is_dir():
        root = json_path.parent
    records = read_json(json_path)
    if not isinstance(records, list):
        raise AdapterError(f"{json_path}: expected a JSON list of question records")
    samples = []
    for i, rec in enumerate(records):
        qid = rec.get("qid", i)
        image = image_path(root, field(rec, "image_name", str(json_path), qid), str(json_path), qid, check=check_images)
        answer_type = str(rec.get("answer_type", "")).strip().upper()
        closed = ["yes", "no"] if answer_type == "CLOSED" and field(rec, "answer", str(json_path), qid).lower() in ("yes", "no") else None
        split = "test" if str(rec.get("phrase_type", "")).startswith("test") else "train"
        samples.append(tasks.vqa(f"vqa-rad-{qid}", "vqa-rad", [ImageRef(image)], field(rec, "question", str(json_path), qid),
                                 field(rec, "answer", str(json_path), qid), split=split, answer_type=answer_type.lower() or None,
                                 closed_set=closed, organ=rec.get("image_organ")))
    # ids must be unique: VQA-RAD qids are, but guard against repeated records
    seen: dict[str, int] = {}
    for s in samples:
        n = seen.get(s.id, 0)
        seen[s.id] = n + 1
        if n:
            s.id = f"{s.id}-{n}"
    return samples
