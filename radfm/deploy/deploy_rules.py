"""Series selection rules of the MONAI Deploy app: the SDK's "selections", each with the prompt for its series.

Kept apart from ``deploy_app`` so that the rules, and the staging of the app's input folder through
radfm's scan guards (:func:`stage_input`), run and are tested without the SDK installed.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_RULES = {
    "selections": [
        {"name": "ct", "conditions": {"Modality": "(?i)^CT$"},
         "prompt": "<image> Describe the findings of this CT scan."},
        {"name": "mr", "conditions": {"Modality": "(?i)^MR$"},
         "prompt": "<image> Describe the findings of this MRI scan."},
        {"name": "chest-xray", "conditions": {"Modality": "(?i)^(CR|DX)$"},
         "prompt": "<image> Describe the findings of this chest X-ray."},
    ]
}


def load_rules(path: str | os.PathLike | None) -> dict[str, Any]:
    """The selection rules (the SDK's format; each selection may add ``prompt``), checked."""
    if path is None:
        return DEFAULT_RULES
    try:
        rules = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not a readable rules JSON file ({error})") from None
    selections = rules.get("selections") if isinstance(rules, dict) else None
    if not isinstance(selections, list) or not selections:
        raise ValueError(f"{path}: expected {{\"selections\": [{{\"name\", \"conditions\", \"prompt\"}}, ...]}}")
    for i, selection in enumerate(selections):
        if not isinstance(selection, dict) or not isinstance(selection.get("conditions"), dict):
            raise ValueError(f"{path}: selections[{i}]: expected an object with \"conditions\"")
        prompt = selection.get("prompt")
        if prompt is not None and (not isinstance(prompt, str) or prompt.count("<image>") > 1):
            raise ValueError(f"{path}: selections[{i}].prompt: expected a question with at most one <image>")
    return rules


def _may_match(header: Any, conditions: dict[str, Any]) -> bool:
    """False only when a plain-text attribute of ``header`` plainly fails a condition, as the SDK's selector tests
    text (equal ignoring case, else ``re.search`` ignoring case); anything else may match (the SDK decides)."""
    for key, wanted in conditions.items():
        value = header.get(key) if isinstance(key, str) and key.isidentifier() else None
        value = getattr(value, "value", value)
        if not wanted or not isinstance(wanted, str) or not isinstance(value, str) or not value:
            continue
        try:
            if value.casefold() != wanted.casefold() and not re.search(wanted, value, re.IGNORECASE):
                return False
        except re.error:
            continue
    return True


@dataclass
class StagedInput:
    """What :func:`stage_input` kept and why it left the rest out (reasons name files and guards, never patients)."""

    kept: int = 0
    skipped: list[str] = field(default_factory=list)


def stage_input(folder: str | os.PathLike, rules: dict[str, Any], target: str | os.PathLike,
                max_scan_bytes: int | None = None) -> StagedInput:
    """Check each file of the app's input folder with radfm's scan guards and stage the ones a rule may select.

    The SDK's DICOM loader reads every file of its folder whole (a deflated one inflated in memory)
    before any rule selects a series. So, before it runs, each file goes through the guards the
    service uses (``radfm.transforms.guards``: the deflate guard, the pixel-size claim within
    ``max_scan_bytes``), reading headers only; files that are not DICOM images, are refused, or that
    no selection can match (:func:`_may_match`, a conservative pre-filter: the SDK's selector
    still decides) are left out. Kept files are linked into ``target``; a deflated one is inflated
    once, in pieces, to a plain copy there, so the loader never inflates it in memory.

    Args:
        folder: the input folder (searched recursively).
        rules: the selection rules (:func:`load_rules`).
        target: an empty folder for the staged input.
        max_scan_bytes: the decoded-size limit per file (None: the guards' default, 2 GiB).

    Returns:
        The count kept and one reason per file left out.
    """
    import pydicom

    from radfm.transforms.errors import ScanReadError
    from radfm.transforms.guards import (DICOM_INFLATED_HEADER_BYTES, check_claimed_size, check_dicom_inflation,
                                         dicom_pixel_bytes, effective_limit, write_inflated_dicom)

    staged = StagedInput()
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    limit = effective_limit(max_scan_bytes)
    selections = [s.get("conditions") or {} for s in rules["selections"]]
    for number, path in enumerate(sorted(Path(folder).rglob("*"))):
        if not path.is_file() or path.name.upper() == "DICOMDIR":
            continue
        name = path.relative_to(folder)
        copy = target / f"{number:06d}.dcm"
        try:
            check_dicom_inflation(path, limit)
            source = copy if write_inflated_dicom(path, copy, DICOM_INFLATED_HEADER_BYTES + limit + (1 << 20),
                                                  name=str(name)) else path
            try:
                header = pydicom.dcmread(source, stop_before_pixels=True)
            except Exception:
                raise ScanReadError(f"{name}: not DICOM") from None
            check_claimed_size(name, dicom_pixel_bytes(header), "the DICOM header", limit)
            if "Rows" not in header:
                raise ScanReadError(f"{name}: not an image")
            if not any(_may_match(header, conditions) for conditions in selections):
                raise ScanReadError(f"{name}: no selection rule matches it")
        except (ScanReadError, OSError) as error:  # ScanTooLargeError included
            copy.unlink(missing_ok=True)
            staged.skipped.append(str(error))
            continue
        if source is path:
            os.symlink(os.path.abspath(path), copy)
        staged.kept += 1
    return staged
