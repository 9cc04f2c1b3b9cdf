"""The MONAI Deploy app's series rules: the node's rules (:mod:`radfm.dicom.series_rules`), one choice.

The app reads the node's rules format (``--rules FILE``: a list of :class:`SeriesRule`, or
``{"rules": [...]}``; default :data:`DEFAULT_RULES`) and chooses the series the node would
choose for the same study, with the same prompt:

- :func:`sdk_selections` is the one translation of our rules into the SDK's
  ``DICOMSeriesSelectorOperator`` selections (``Modality`` from ``modalities``,
  ``SeriesDescription`` from ``description``). The SDK compares text as "equal ignoring case,
  else ``re.search`` ignoring case" and fails a condition on a missing attribute, so each
  selection matches every series our rule matches (and maybe more): a candidate filter only.
- The choice is :func:`select_series` itself, on the SDK's series objects
  (:func:`select_sdk_series`; ``deploy_app.RadFMSeriesSelector`` calls it on the SDK's
  candidates). We decide rather than post-filter the SDK's pick because the SDK's selector
  knows neither ``min_instances`` nor "the series with the most instances, each series used by
  the first rule it matches": applying those after its first-match choice could keep a scout
  the node skips. One function deciding for both is the only way they cannot drift apart.
- :func:`stage_input` asks :func:`select_series` too: per file (:func:`_may_match`, modality and
  description, before a deflated file is inflated), then per study on the checked files' series, so
  the SDK's loader reads only the series the node would answer about (and a study whose only CT
  is a scout ends with "nothing to answer" rather than the SDK's volume operator failing on an
  empty selection).

Kept apart from ``deploy_app`` so that the rules and the staging of the app's input folder through
radfm's scan guards run and are tested without the SDK installed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from radfm.dicom.series_rules import MAX_INSTANCES_PER_STUDY, SeriesRule, select_series


def sdk_selections(rules: Sequence[SeriesRule]) -> dict[str, Any]:
    """Our rules as the SDK selector's rules (``{"selections": [{"name", "conditions"}]}``), one per rule.

    ``Modality``: ``(?i)^(CT|MR)$`` from ``modalities``; ``SeriesDescription``: the rule's
    ``description`` as written (the SDK searches it ignoring case, as :func:`select_series` does),
    left out when the rule has none or when it matches an empty description (the SDK fails a
    condition on a missing attribute; ours searches ``""``). Each selection thus matches at least
    the series its rule matches.

    Args:
        rules: the series rules.

    Returns:
        The SDK's selection rules (``json.dumps`` them for ``DICOMSeriesSelectorOperator(rules=...)``).
    """
    selections = []
    for rule in rules:
        conditions = {"Modality": "(?i)^(" + "|".join(re.escape(m) for m in rule.modalities) + ")$"}
        if rule.description and not re.search(rule.description, "", re.IGNORECASE):
            conditions["SeriesDescription"] = rule.description
        selections.append({"name": rule.name, "conditions": conditions})
    return {"selections": selections}


def select_sdk_series(series: Iterable[Any], rules: Sequence[SeriesRule]) -> list[tuple[Any, SeriesRule]]:
    """The SDK's series objects (``DICOMSeries``) the node's :func:`select_series` chooses, each with its rule.

    Args:
        series: one study's series (each with ``SeriesInstanceUID``, ``Modality``, ``SeriesDescription``
            and ``get_sop_instances()``); a series given twice counts once.
        rules: the series rules, in order.

    Returns:
        ``[(series object, rule)]`` in the rules' order.
    """
    summaries: dict[str, dict[str, Any]] = {}
    for one in series:
        uid = str(one.SeriesInstanceUID)
        summaries.setdefault(uid, {"series_uid": uid, "modality": str(one.Modality or ""),
                                   "description": str(one.SeriesDescription or ""),
                                   "instances": len(one.get_sop_instances()), "object": one})
    return [(chosen["object"], rule) for chosen, rule in select_series(list(summaries.values()), rules)]


def _may_match(header: Any, rules: Sequence[SeriesRule]) -> bool:
    """Whether a file's series may be chosen: :func:`select_series` on its header's modality and description
    (its series' instance count is not known yet, so ``min_instances`` is not checked here)."""
    summary = {"series_uid": "", "modality": str(header.get("Modality") or ""),
               "description": str(header.get("SeriesDescription") or ""), "instances": MAX_INSTANCES_PER_STUDY}
    return bool(select_series([summary], rules))


@dataclass
class StagedInput:
    """What :func:`stage_input` kept and why it left the rest out (reasons name files and guards, never patients)."""

    kept: int = 0
    skipped: list[str] = field(default_factory=list)


def stage_input(folder: str | os.PathLike, rules: Sequence[SeriesRule], target: str | os.PathLike,
                max_scan_bytes: int | None = None) -> StagedInput:
    """Check each file of the app's input folder with radfm's scan guards and stage the series the rules choose.

    The SDK's DICOM loader reads every file of its folder whole (a deflated one inflated in memory)
    before any rule selects a series. So, before it runs, each file goes through the guards the
    service uses (``radfm.transforms.guards``: the deflate guard, the pixel-size claim within
    ``max_scan_bytes``), reading headers only; files that are not DICOM images, are refused, or that
    no rule can match (:func:`_may_match`) are left out, and of the rest only the series
    :func:`select_series` chooses per study (``min_instances``, the most instances) are kept. Kept
    files are linked into ``target``; a deflated one is inflated once, in pieces, to a plain copy
    there, so the loader never inflates it in memory.

    Args:
        folder: the input folder (searched recursively).
        rules: the series rules (the node's; :func:`~radfm.dicom.series_rules.load_series_rules`).
        target: an empty folder for the staged input.
        max_scan_bytes: the decoded-size limit per file (None: the guards' default, 2 GiB).

    Returns:
        The count kept and one reason per file left out.
    """
    import pydicom

    from radfm.transforms.errors import ScanReadError
    from radfm.transforms.guards import (
        DICOM_INFLATED_HEADER_BYTES,
        check_claimed_size,
        check_dicom_inflation,
        dicom_pixel_bytes,
        effective_limit,
        write_inflated_dicom,
    )

    staged = StagedInput()
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    limit = effective_limit(max_scan_bytes)
    passed: list[tuple[Path, Path, Path, str, str]] = []  # (name, copy, source, study, series) of checked files
    series: dict[tuple[str, str], dict[str, Any]] = {}  # (study, series) -> select_series' summary
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
            if not _may_match(header, rules):
                raise ScanReadError(f"{name}: no series rule matches it")
        except (ScanReadError, OSError) as error:  # ScanTooLargeError included
            copy.unlink(missing_ok=True)
            staged.skipped.append(str(error))
            continue
        key = (str(header.get("StudyInstanceUID", "")), str(header.get("SeriesInstanceUID", "")))
        series.setdefault(key, {"series_uid": key[1], "modality": str(header.get("Modality") or ""),
                                "description": str(header.get("SeriesDescription") or ""), "instances": 0})
        series[key]["instances"] += 1
        passed.append((name, copy, source, *key))
    # the series the rules choose, per study, as the node chooses them (select_series): only these are staged
    studies = {study for study, _ in series}
    chosen = {(study, s["series_uid"]) for study in studies
              for s, _ in select_series([v for k, v in series.items() if k[0] == study], rules)}
    for name, copy, source, study, series_uid in passed:
        if (study, series_uid) not in chosen:
            copy.unlink(missing_ok=True)
            staged.skipped.append(f"{name}: its series is not the one the series rules choose "
                                  "(fewer instances than min_instances, or another series has more)")
            continue
        if source != copy:
            os.symlink(os.path.abspath(source), copy)
        staged.kept += 1
    return staged
