"""Helpers shared by the adapters: reading tables, resolving image paths, clear errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from radfm.utils.io import read_text


class AdapterError(ValueError):
    """Input that does not follow the published layout; names the file, row and field."""


def read_json(path: Path) -> Any:
    try:
        return json.loads(read_text(path))
    except FileNotFoundError:
        raise AdapterError(f"{path}: file not found") from None
    except json.JSONDecodeError as err:
        raise AdapterError(f"{path}: invalid JSON ({err.msg} at line {err.lineno})") from None


def read_csv(path: Path, required: tuple[str, ...] = ()) -> list[dict[str, str]]:
    """Rows of a CSV (comma or tab separated) as dicts; checks the ``required`` columns."""
    if not path.is_file():
        raise AdapterError(f"{path}: file not found")
    text = read_text(path, encoding="utf-8-sig")
    dialect = "excel-tab" if path.suffix.lower() in (".tsv", ".tab") else "excel"
    reader = csv.DictReader(text.splitlines(), dialect=dialect)
    missing = [c for c in required if c not in (reader.fieldnames or [])]
    if missing:
        raise AdapterError(f"{path}: missing column(s) {missing}; found {reader.fieldnames}")
    return list(reader)


def field(row: dict, key: str, source: str, index: int | str) -> str:
    """A non-empty string field of a row, or an ``AdapterError`` naming file, row and field."""
    value = row.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise AdapterError(f"{source}: row {index}: field {key!r} is missing or empty")
    return str(value).strip()


def image_path(root: Path, relative: str, source: str, index: int | str, *, check: bool = True) -> str:
    """``root / relative`` as an absolute path; missing files are an error when ``check``."""
    path = (root / relative).resolve()
    if check and not path.exists():
        raise AdapterError(f"{source}: row {index}: image {relative!r} not found under {root}")
    return str(path)


_SPLITS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validate": "val",
           "validation": "val", "dev": "val", "test": "test", "testing": "test"}


def normalise_split(value: str | None, source: str, index: int | str) -> str | None:
    """"validate"/"validation"/"dev" -> "val" etc.; empty -> None; anything else is an error."""
    text = (value or "").strip().lower()
    if not text:
        return None
    if text not in _SPLITS:
        raise AdapterError(f"{source}: row {index}: field 'split' must be train/val/test, got {value!r}")
    return _SPLITS[text]
