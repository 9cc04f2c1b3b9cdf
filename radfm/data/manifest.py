"""JSONL sample manifests: one JSON object per line, validated on load.

Two kinds of sample (see ``docs/data.md`` for the full reference):

- instruction: ``{"id", "dataset", "task", "images": [{"path", "modality"?, "plane"?}],
  "instruction", "response", "split"?}``; the instruction holds one ``<image>`` placeholder
  per image, in order.
- interleaved: ``{"id", "dataset", "text", "images", "split"?}``; the text holds the
  placeholders (paper-style pretraining text such as PMC-Inline).

Image paths are stored relative to the manifest file's folder. On load they are resolved
against that folder and must stay inside the data root (``data_root`` or, by default, the
manifest's folder): a manifest cannot point at arbitrary files on the machine. A DICOM series
folder is looked into: a symbolic link inside it (to a file or a folder) must also resolve
inside the data root, since the series reader reads every file of the folder. Indirections
inside a scan are covered when the scan is read: ``radfm.transforms`` refuses a detached data
file (NRRD ``data file``, MetaImage ``ElementDataFile``) outside the header's own folder, which
lies inside the data root (see ``radfm.transforms.guards``), so a header in the data root cannot
pull in a file from outside it either.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from radfm.utils.io import atomic_write_text, read_text

TASKS = (
    "modality_inductive",
    "modality_open",
    "diagnosis_inductive",
    "diagnosis_open",
    "vqa",
    "report",
    "rationale",
)
SPLITS = ("train", "val", "test")


class ManifestError(ValueError):
    """A manifest line that does not follow the format; the message names file, line and field."""


@dataclass
class ImageRef:
    """One scan of a sample: ``path`` (absolute once loaded), optional modality and plane."""

    path: str
    modality: str | None = None
    plane: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path}
        if self.modality is not None:
            out["modality"] = self.modality
        if self.plane is not None:
            out["plane"] = self.plane
        return out


@dataclass
class Sample:
    """An instruction sample (``instruction``/``response``) or an interleaved one (``text``)."""

    id: str
    dataset: str
    images: list[ImageRef]
    task: str | None = None
    instruction: str | None = None
    response: str | None = None
    text: str | None = None
    split: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_interleaved(self) -> bool:
        return self.text is not None

    def to_json(self, *, relative_to: Path | None = None) -> dict[str, Any]:
        """The manifest object; image paths made relative to ``relative_to`` when given."""
        images = []
        for image in self.images:
            item = image.to_json()
            if relative_to is not None:
                item["path"] = Path(os.path.relpath(os.path.abspath(image.path), relative_to)).as_posix()
            images.append(item)
        out: dict[str, Any] = {"id": self.id, "dataset": self.dataset}
        if self.is_interleaved:
            out["text"] = self.text
        else:
            out.update(task=self.task, instruction=self.instruction, response=self.response)
        out["images"] = images
        if self.split is not None:
            out["split"] = self.split
        out.update(self.extra)
        return out


_KNOWN_KEYS = {"id", "dataset", "task", "images", "instruction", "response", "text", "split"}


def _fail(source: str, line: int, field_name: str, expected: str) -> ManifestError:
    return ManifestError(f"{source}:{line}: field {field_name!r}: {expected}")


def _require_str(obj: dict, key: str, source: str, line: int) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or (key != "response" and not value.strip()):
        raise _fail(source, line, key, f"expected a non-empty string, got {value!r}")
    return value


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
        return True
    except ValueError:
        return False


def _outside_link(folder: Path, root: Path) -> str | None:
    """The first symbolic link under ``folder`` (searched recursively, links not followed) resolving outside ``root``."""
    for current, dirs, files in os.walk(folder, followlinks=False):
        for name in dirs + files:
            entry = Path(current) / name
            if entry.is_symlink():
                try:
                    target = entry.resolve(strict=False)
                except (OSError, RuntimeError):  # a link loop
                    return str(entry)
                if not _inside(target, root):
                    return str(entry)
    return None


def parse_sample(obj: Any, *, source: str, line: int, base_dir: Path, data_root: Path) -> Sample:
    """Validate one decoded manifest object and resolve its image paths."""
    if not isinstance(obj, dict):
        raise _fail(source, line, "<line>", f"expected a JSON object, got {type(obj).__name__}")
    sample_id = _require_str(obj, "id", source, line)
    dataset = _require_str(obj, "dataset", source, line)
    raw_images = obj.get("images")
    if not isinstance(raw_images, list):
        raise _fail(source, line, "images", f"expected a list of {{'path': ...}} objects, got {raw_images!r}")
    images = []
    for k, item in enumerate(raw_images):
        if isinstance(item, str):  # tolerate bare path strings
            item = {"path": item}
        if not isinstance(item, dict) or not isinstance(item.get("path"), str) or not item["path"]:
            raise _fail(source, line, f"images[{k}].path", f"expected a non-empty string, got {item!r}")
        resolved = (base_dir / item["path"]).resolve()
        if not _inside(resolved, data_root):
            raise _fail(source, line, f"images[{k}].path", f"{item['path']!r} resolves outside the data root {data_root}")
        if resolved.is_dir():  # a DICOM series folder: the reader reads every file in it
            escaped = _outside_link(resolved, data_root)
            if escaped is not None:
                raise _fail(source, line, f"images[{k}].path", f"{item['path']!r} is a folder holding the link "
                            f"{os.path.relpath(escaped, resolved)!r}, which resolves outside the data root {data_root}")
        for opt in ("modality", "plane"):
            if item.get(opt) is not None and not isinstance(item[opt], str):
                raise _fail(source, line, f"images[{k}].{opt}", f"expected a string, got {item[opt]!r}")
        images.append(ImageRef(str(resolved), item.get("modality"), item.get("plane")))
    split = obj.get("split")
    if split is not None and split not in SPLITS:
        raise _fail(source, line, "split", f"expected one of {SPLITS}, got {split!r}")
    extra = {k: v for k, v in obj.items() if k not in _KNOWN_KEYS}
    from radfm.model.processing import (
        count_placeholders,  # the processor's rule; here, so `radfm data --help` skips torch
    )

    if "text" in obj:
        text = _require_str(obj, "text", source, line)
        n = count_placeholders(text)
        if n != len(images):
            raise _fail(source, line, "text", f"has {n} <image> placeholder(s) but 'images' lists {len(images)}")
        return Sample(sample_id, dataset, images, text=text, split=split, extra=extra)
    task = obj.get("task")
    if task not in TASKS:
        raise _fail(source, line, "task", f"expected one of {TASKS}, got {task!r}")
    instruction = _require_str(obj, "instruction", source, line)
    response = _require_str(obj, "response", source, line)
    n = count_placeholders(instruction)
    if n != len(images):
        raise _fail(source, line, "instruction", f"has {n} <image> placeholder(s) but 'images' lists {len(images)}")
    return Sample(sample_id, dataset, images, task=task, instruction=instruction, response=response, split=split, extra=extra)


def load_manifest(path: str | os.PathLike, *, data_root: str | os.PathLike | None = None) -> list[Sample]:
    """Read and validate a JSONL manifest; image paths come back absolute.

    Relative paths resolve against the manifest's folder; every image must lie inside
    ``data_root`` (default: that folder). Blank lines are skipped. Duplicate ids are an error.
    Raises ``ManifestError`` naming file, line and field; ``FileNotFoundError`` if missing.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path}")
    base_dir = path.resolve().parent
    root = Path(data_root).resolve() if data_root is not None else base_dir
    samples: list[Sample] = []
    seen: dict[str, int] = {}
    with io.StringIO(read_text(path)) as handle:  # not UTF-8: a ValueError naming file and line
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise _fail(str(path), line_no, "<line>", f"invalid JSON ({err.msg} at column {err.colno})") from None
            sample = parse_sample(obj, source=str(path), line=line_no, base_dir=base_dir, data_root=root)
            if sample.id in seen:
                raise _fail(str(path), line_no, "id", f"duplicate id {sample.id!r} (first on line {seen[sample.id]})")
            seen[sample.id] = line_no
            samples.append(sample)
    return samples


def write_manifest(samples: Iterable[Sample], path: str | os.PathLike) -> int:
    """Write samples as JSONL with image paths relative to the manifest's folder; returns the count."""
    path = Path(path)
    base_dir = path.resolve().parent
    lines = [json.dumps(s.to_json(relative_to=base_dir), ensure_ascii=False) for s in samples]
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return len(lines)
