"""Reading prediction files: our predictions JSONL and the published code's CSV layout.

Our JSONL (written by ``radfm evaluate``), one object per case::

    {"id", "dataset", "task", "images", "instruction", "reference", "prediction",
     "model", "error": null|str, "closed_set": null|[...]}

The published RadFM code writes CSVs with the columns ``Question, Ground Truth, Pred,
belong_to`` (``belong_to`` = dataset name); those rows get ``task = "unknown"`` and the
file's stem as model name.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from radfm.utils.io import read_text

REQUIRED_JSONL_FIELDS = ("id", "reference", "prediction")
CSV_COLUMNS = {"question": "Question", "reference": "Ground Truth", "prediction": "Pred", "dataset": "belong_to"}


@dataclass
class PredictionRecord:
    """One scored case: what was asked, the reference answer and the model's answer."""

    id: str
    dataset: str
    task: str
    reference: str
    prediction: str
    instruction: str = ""
    model: str = ""
    error: str | None = None
    closed_set: list[str] | None = None
    images: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "dataset": self.dataset, "task": self.task, "images": self.images,
                "instruction": self.instruction, "reference": self.reference, "prediction": self.prediction,
                "model": self.model, "error": self.error, "closed_set": self.closed_set}


def read_jsonl(path: str | Path, *, tolerate_truncated_tail: bool = False) -> list[PredictionRecord]:
    """Records of a predictions JSONL. A torn last line (run killed mid-write) is an error
    unless ``tolerate_truncated_tail`` (the runner's resume uses that and then repairs the file)."""
    path = Path(path)
    lines = read_text(path).splitlines()
    records: list[PredictionRecord] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as error:
            if tolerate_truncated_tail and number == len(lines):
                break
            raise ValueError(f"{path}:{number}: not valid JSON ({error.msg})") from None
        records.append(_record_from_json(data, f"{path}:{number}"))
    return records


def _record_from_json(data: Any, where: str) -> PredictionRecord:
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a JSON object per line, got {type(data).__name__}")
    missing = [name for name in REQUIRED_JSONL_FIELDS if name not in data]
    if missing:
        raise ValueError(f"{where}: missing field(s) {', '.join(missing)}; expected {', '.join(REQUIRED_JSONL_FIELDS)}")
    for name in ("reference", "prediction"):  # a list or object would be scored as its Python repr
        if isinstance(data[name], (list, dict)):
            raise ValueError(f"{where}: field {name!r} must be a string, got a JSON "
                             f"{'list' if isinstance(data[name], list) else 'object'} ({json.dumps(data[name])[:60]})")
    closed = data.get("closed_set")
    if closed is not None and (not isinstance(closed, list) or not all(isinstance(c, str) for c in closed)):
        raise ValueError(f"{where}: 'closed_set' must be null or a list of strings")
    return PredictionRecord(
        id=str(data["id"]), dataset=str(data.get("dataset") or "unknown"), task=str(data.get("task") or "unknown"),
        reference="" if data["reference"] is None else str(data["reference"]),
        prediction="" if data["prediction"] is None else str(data["prediction"]),
        instruction=str(data.get("instruction") or ""), model=str(data.get("model") or ""),
        error=None if data.get("error") is None else str(data["error"]), closed_set=closed,
        images=[str(p) for p in data.get("images") or []])


def read_csv(path: str | Path) -> list[PredictionRecord]:
    """Records of a published-layout CSV (``Question, Ground Truth, Pred, belong_to``)."""
    path = Path(path)
    import io

    with io.StringIO(read_text(path), newline="") as handle:
        reader = csv.DictReader(handle)
        header = {name.strip(): name for name in (reader.fieldnames or [])}
        missing = [column for column in CSV_COLUMNS.values() if column not in header]
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(missing)}; expected "
                             f"{', '.join(CSV_COLUMNS.values())} (got {', '.join(header) or 'no header'})")
        records = []
        for number, row in enumerate(reader):
            get = lambda key, row=row: (row.get(header[CSV_COLUMNS[key]]) or "").strip()  # noqa: E731
            records.append(PredictionRecord(id=str(number), dataset=get("dataset") or "unknown", task="unknown",
                                            reference=get("reference"), prediction=get("prediction"),
                                            instruction=get("question"), model=path.stem))
    return records


def read_predictions(path: str | Path) -> list[PredictionRecord]:
    """Read ``.jsonl``/``.json`` (ours) or ``.csv`` (published layout) by extension."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"predictions file not found: {path}")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        return read_jsonl(path)
    if suffix == ".csv":
        return read_csv(path)
    raise ValueError(f"{path}: unknown predictions format {suffix!r}; expected .jsonl (ours) or .csv (published layout)")


def deduplicate(records: list[PredictionRecord]) -> tuple[list[PredictionRecord], int]:
    """Keep one record per id (the last written), order of first appearance; returns (records, dropped)."""
    latest: dict[str, PredictionRecord] = {}
    for record in records:
        latest[record.id] = record
    return list(latest.values()), len(records) - len(latest)


def model_name(records: list[PredictionRecord], path: str | Path) -> str:
    """The records' common ``model`` field, else the file stem."""
    names = {record.model for record in records if record.model}
    return names.pop() if len(names) == 1 else Path(path).stem
