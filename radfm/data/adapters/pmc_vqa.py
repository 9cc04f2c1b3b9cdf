"""PMC-VQA (Zhang et al.): ``train.csv`` / ``test.csv`` + ``images/``.

Columns: ``Figure_path``, ``Question``, ``Answer``, ``Choice A`` … ``Choice D``,
``Answer_label``. Choices are written like ``" A:CT scan "``. By default the open question
is used (response = ``Answer``); ``multiple_choice=True`` lists the choices in the
instruction and keeps them as the closed set.
"""

from __future__ import annotations

import re
from pathlib import Path

from radfm.data import tasks
from radfm.data.adapters._common import AdapterError, field, image_path, read_csv
from radfm.data.manifest import ImageRef, Sample

REQUIRED = ("Figure_path", "Question", "Answer")
SPLIT_FILES = {"train.csv": "train", "train_2.csv": "train", "test.csv": "test", "test_2.csv": "test", "test_clean.csv": "test"}
_CHOICE_PREFIX = re.compile(r"^\s*[A-D]\s*:\s*")


def convert(src: str | Path, *, image_root: str | Path | None = None, multiple_choice: bool = False,
            check_images: bool = True) -> list[Sample]:
    src = Path(src)
    files = [src / n for n in SPLIT_FILES if (src / n).is_file()] if src.is_dir() else [src]
    if not files:
        raise AdapterError(f"{src}: no PMC-VQA CSV ({', '.join(SPLIT_FILES)}) found")
    samples = []
    for csv_path in files:
        root = Path(image_root) if image_root else csv_path.parent / "images"
        if not root.is_dir():
            root = csv_path.parent
        split = SPLIT_FILES.get(csv_path.name)
        for i, row in enumerate(read_csv(csv_path, REQUIRED), start=2):  # row 1 is the header
            source = str(csv_path)
            image = image_path(root, field(row, "Figure_path", source, i), source, i, check=check_images)
            question = field(row, "Question", source, i)
            answer = _CHOICE_PREFIX.sub("", field(row, "Answer", source, i))
            choices = [_CHOICE_PREFIX.sub("", row[c]).strip() for c in ("Choice A", "Choice B", "Choice C", "Choice D")
                       if row.get(c) and row[c].strip()]
            if multiple_choice and choices:
                letters = "ABCD"
                question = question + " Choices: " + " ".join(f"{letters[k]}: {c}." for k, c in enumerate(choices))
            samples.append(tasks.vqa(f"pmc-vqa-{csv_path.stem}-{i}", "pmc-vqa", [ImageRef(image)], question, answer,
                                     split=split, closed_set=choices if multiple_choice and choices else None,
                                     answer_label=(row.get("Answer_label") or "").strip() or None))
    return samples
