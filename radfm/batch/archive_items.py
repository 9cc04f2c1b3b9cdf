"""The work of a batch run: one item per study/series (or manifest case), with its prompt and key.

Three sources, one item shape (a plain dict, so that Ray Data carries it as a row):

* a **manifest** (our JSONL, :func:`radfm.data.manifest.load_manifest`): one item per instruction sample,
  its own instruction as the prompt unless a prompt is given;
* a **folder tree**: every scan file the readers take (NIfTI, NRRD, MetaImage, PNG/JPEG, .npy) is one
  study; DICOM files are grouped by series from their headers, and the series rules pick the series and
  their prompts, exactly as the node does (:func:`radfm.dicom.series_rules.select_series`);
* a **DICOMweb QIDO query**, fetched through the node's guarded pull client
  (:class:`radfm.node.dicomweb_pull.DicomwebPull`: streamed, capped, one deadline) into a spool inside
  the output folder, each instance checked by the node's ``StorageSCP.ingest``; then as a DICOM folder.

An item's ``key`` is the SHA-256 of (study UID, series UID, the model's weights hash, the prompt): a rerun
skips the keys already in the output, whatever order the archive is walked in.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

BANK_PREFIX = "bank:"


class BatchInputError(ValueError):
    """A batch input (manifest, folder, rules file, prompt, query) that cannot be used; the message names it."""


def item_key(study_uid: str, series_uid: str, weights_sha256: str, prompt: str) -> str:
    """The output key of one item: same study/series, same weights and same prompt = the same row.

    Args:
        study_uid: StudyInstanceUID, or the manifest id / relative path of a non-DICOM study.
        series_uid: SeriesInstanceUID, or ``""``.
        weights_sha256: the model's weights hash (:mod:`radfm.answering.identity`).
        prompt: the prompt as sent to the model.

    Returns:
        64 hex characters.
    """
    text = json.dumps([study_uid, series_uid, weights_sha256, prompt], ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _item(study_uid: str, series_uid: str, sources: Sequence[str], prompt: str | None, *, origin: str,
          rule: str = "", modality: str = "", files: Sequence[str] = (), error: str | None = None) -> dict[str, Any]:
    """One work item (the key is added once the model's hash is known: :func:`with_keys`)."""
    return {"study_uid": study_uid, "series_uid": series_uid, "sources": json.dumps(list(sources)),
            "files": json.dumps(list(files)), "prompt": prompt or "", "rule": rule, "modality": modality,
            "origin": origin, "error": error}


def with_keys(items: Iterable[dict[str, Any]], weights_sha256: str) -> list[dict[str, Any]]:
    """Items with their ``key``; an item whose key is already listed is dropped (an archive walked twice)."""
    out, seen = [], set()
    for item in items:
        key = item_key(item["study_uid"], item["series_uid"], weights_sha256, item["prompt"])
        if key not in seen:
            seen.add(key)
            out.append({"key": key, **item})
    return out


# ---------------------------------------------------------------- prompts -----
def resolve_prompt(prompt: str | None) -> str | None:
    """``"bank:TASK[:N]"`` -> entry N (default 0) of the prompt bank of TASK, rendered for one scan; text as is.

    Raises:
        BatchInputError: an unknown bank, an entry out of range, or a template that needs more fields.
    """
    if prompt is None:
        return None
    if not isinstance(prompt, str) or not prompt.strip():
        raise BatchInputError(f"--prompt={prompt!r}: expected a question or bank:TASK[:N]")
    if not prompt.startswith(BANK_PREFIX):
        return prompt
    from radfm.data.prompts import load_bank, render

    task, _, index = prompt[len(BANK_PREFIX):].partition(":")
    try:
        bank = load_bank(task)
    except KeyError as error:
        raise BatchInputError(f"--prompt={prompt!r}: {error.args[0]}") from None
    if index and not index.isdigit():
        raise BatchInputError(f"--prompt={prompt!r}: the entry after the task is a number, got {index!r}")
    number = int(index or 0)
    if number >= len(bank):
        raise BatchInputError(f"--prompt={prompt!r}: bank {task!r} has entries 0-{len(bank) - 1}")
    try:
        return render(bank[number], 1)
    except KeyError as error:
        raise BatchInputError(f"--prompt={prompt!r}: {error.args[0]}; pick a bank without such fields "
                              "(report, modality_open, rationale) or give the question as text") from None


def load_rules(path: str | os.PathLike) -> list[Any]:
    """The series rules of a rules file, in the node's format, checked by the node's own validator.

    The file is a node config (its ``rules`` are used), ``{"rules": [...]}`` or a bare list of rules, as
    :func:`radfm.dicom.series_rules.load_series_rules` reads them
    (docs/hospital.md describes the fields).

    Raises:
        BatchInputError: the file is missing, not JSON, or a rule is wrong (the message names the field).
    """
    from radfm.dicom.series_rules import parse_series_rules
    from radfm.node.node_config import NodeConfig, NodeConfigError

    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise BatchInputError(f"{path}: cannot read the rules file ({error.strerror})") from None
    except json.JSONDecodeError as error:
        raise BatchInputError(f"{path}: not valid JSON ({error})") from None
    try:
        if isinstance(raw, dict) and "allowed_callers" in raw:  # a whole node config: checked whole, its rules used
            return NodeConfig.from_dict(raw, source=str(path)).rules
        return parse_series_rules(raw, str(path))  # the one series-rule format (radfm.dicom.series_rules)
    except (NodeConfigError, ValueError) as error:
        raise BatchInputError(str(error)) from None


# ---------------------------------------------------------------- manifest -----
def manifest_items(manifest: str | os.PathLike, prompt: str | None = None, *, split: str | None = None,
                   data_root: str | None = None) -> list[dict[str, Any]]:
    """One item per instruction sample of ``manifest`` (interleaved samples have no question: left out).

    Args:
        manifest: our JSONL manifest (docs/data.md).
        prompt: the question for every sample (or ``bank:TASK[:N]``); default: each sample's instruction.
        split: keep this split only (samples without a split are kept); ``None``: all.
        data_root: folder the image paths must stay inside (default: the manifest's folder).

    Returns:
        Items (see :func:`_item`); ``study_uid`` is the sample id.
    """
    from radfm.data.manifest import load_manifest

    question = resolve_prompt(prompt)
    items = []
    for sample in load_manifest(manifest, data_root=data_root):
        if sample.is_interleaved or sample.instruction is None:
            continue
        if split and sample.split not in (split, None):
            continue
        items.append(_item(sample.id, "", [image.path for image in sample.images], question or sample.instruction,
                           origin="manifest", modality=",".join(i.modality or "" for i in sample.images).strip(",")))
    return items


# ---------------------------------------------------------------- folder tree -----
def _dicom_header(path: Path) -> Any | None:
    """The header of a DICOM file (no pixels), ``None`` for a file that is not DICOM; raises on a damaged one."""
    import pydicom

    with path.open("rb") as handle:
        head = handle.read(132)
    if len(head) < 132 or head[128:132] != b"DICM":
        return None
    return pydicom.dcmread(path, stop_before_pixels=True,
                           specific_tags=["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "Modality",
                                          "SeriesDescription", "Rows"])


def folder_items(root: str | os.PathLike, prompt: str | None = None, rules: Sequence[Any] | None = None,
                 ) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Items for a folder tree of studies: scan files one each, DICOM series picked by the rules.

    Args:
        root: the archive folder (walked recursively, links not followed).
        prompt: the question for non-DICOM files, and for DICOM series when no rules are given.
        rules: the node's series rules (:func:`load_rules`); with rules, each DICOM study gets one item per
            rule that matches one of its series (:func:`radfm.dicom.series_rules.select_series`).

    Returns:
        ``(items, counts)``: counts of ``series_not_selected`` (no rule matched) and ``skipped_files``.
        A damaged DICOM file, or a scan file without a question, becomes an item with its ``error``.
    """
    from radfm.answering.scans import suffix_kind
    from radfm.dicom.series_rules import select_series

    root = Path(root)
    if not root.is_dir():
        raise BatchInputError(f"{root}: no such folder (expected a folder tree of studies)")
    question = resolve_prompt(prompt)
    items: list[dict[str, Any]] = []
    counts = {"series_not_selected": 0, "skipped_files": 0}
    # study -> series -> {"modality", "description", "files", "folders"}
    studies: dict[str, dict[str, dict[str, Any]]] = {}
    files_in: dict[str, int] = {}  # folder -> its files: a series is read by reference only from a folder of its own
    for folder, subfolders, names in os.walk(root):
        subfolders.sort()
        files_in[str(folder)] = len(names)
        for name in sorted(names):
            path = Path(folder) / name
            relative = path.relative_to(root).as_posix()
            if path.is_symlink() or name.startswith("."):
                counts["skipped_files"] += 1
                continue
            try:
                header = _dicom_header(path)
            except Exception as error:  # damaged: its own row, the other files carry on
                items.append(_item(relative, "", [str(path)], question, origin="folder", modality="",
                                   error=f"InvalidDicom: {relative}: not a readable DICOM file "
                                         f"({type(error).__name__})"))
                continue
            if header is None:
                found = suffix_kind(name)
                if found is None or found[1] == "dicom":
                    counts["skipped_files"] += 1
                    continue
                error = None if question else (f"NoPrompt: {relative} is a {found[1]} file: the series rules "
                                               "select DICOM series only; give --prompt for other files")
                items.append(_item(relative, "", [str(path)], question, origin="folder", error=error))
                continue
            if not header.get("SOPInstanceUID"):  # a preamble and little else: cut short or not DICOM after all
                items.append(_item(relative, "", [str(path)], question, origin="folder",
                                   error=f"InvalidDicom: {relative}: no SOPInstanceUID in its header (cut short?)"))
                continue
            if "Rows" not in header:  # an SR or other non-image instance: nothing for the model
                counts["skipped_files"] += 1
                continue
            study = str(header.get("StudyInstanceUID", "")) or relative
            series = str(header.get("SeriesInstanceUID", "")) or relative
            entry = studies.setdefault(study, {}).setdefault(series, {
                "series_uid": series, "modality": str(header.get("Modality", "")),
                "description": str(header.get("SeriesDescription", "")), "files": [], "folders": set()})
            entry["files"].append(str(path))
            entry["folders"].add(str(path.parent))
    for study, series in studies.items():
        listed = [{**s, "instances": len(s["files"])} for s in series.values()]
        if rules:
            chosen = [(s, rule.prompt, rule.name) for s, rule in select_series(listed, rules)]
            counts["series_not_selected"] += len(listed) - len(chosen)
        else:
            chosen = [(s, question, "") for s in listed]
        for entry, text, rule in chosen:
            folder = next(iter(entry["folders"]))
            alone = len(entry["folders"]) == 1 and files_in.get(folder) == len(entry["files"])
            # a folder holding this series only is read by reference; otherwise its files are listed
            # (the request path groups them into the one series)
            error = None if text else "NoPrompt: no --prompt and no --rules for this DICOM series"
            items.append(_item(study, entry["series_uid"], [folder] if alone else [], text, origin="folder",
                               rule=rule, modality=entry["modality"], files=[] if alone else sorted(entry["files"]),
                               error=error))
    return items, counts


# ---------------------------------------------------------------- DICOMweb -----
def parse_query(query: Any) -> dict[str, str]:
    """QIDO-RS study filters from ``{"ModalitiesInStudy": "CT"}`` or ``"ModalitiesInStudy=CT,StudyDate=2024"``."""
    if query is None or query == "":
        return {}
    if isinstance(query, dict):
        pairs = query.items()
    elif isinstance(query, str):
        pairs = []
        for part in query.split(","):
            name, equals, value = part.partition("=")
            if not equals or not name.strip():
                raise BatchInputError(f"--qido={query!r}: expected NAME=VALUE pairs separated by commas, "
                                      "e.g. ModalitiesInStudy=CT,StudyDate=20240101-20241231")
            pairs.append((name.strip(), value.strip()))
    else:
        raise BatchInputError(f"--qido={query!r}: expected NAME=VALUE,... or a JSON object")
    return {str(k): str(v) for k, v in pairs}


def dicomweb_items(url: str, query: Any, spool: str | os.PathLike, prompt: str | None = None,
                   rules: Sequence[Any] | None = None, *, timeout_s: float = 600.0, max_instance_mb: int = 256,
                   max_instances_per_study: int = 5000) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Fetch the studies a QIDO-RS query finds into ``spool``, through the node's guarded pull client.

    Each study is fetched once (the node's ``pulled`` table in the spool remembers it: a rerun does not
    fetch it again); each instance passes the node's checks (``StorageSCP.ingest``). The fetched studies
    are then items like a folder tree's (:func:`folder_items` on each study's folder).

    Args:
        url: the DICOMweb root, ``http(s)://HOST:PORT/dicom-web``.
        query: QIDO-RS study filters (:func:`parse_query`).
        spool: the node state folder (inside the output folder).
        prompt, rules: as for :func:`folder_items`.
        timeout_s: the deadline of the search and every fetch together.
        max_instance_mb / max_instances_per_study: the node's caps on what the server sends.

    Returns:
        ``(items, counts)``; ``counts["pull_failed"]`` studies the server did not send whole (named in the log).
    """
    from radfm.node.dicomweb_pull import DicomwebPull, PullError
    from radfm.node.job_queue import JobQueue
    from radfm.node.node_config import NodeConfig, NodeConfigError
    from radfm.node.storage_scp import StorageSCP

    try:
        config = NodeConfig.from_dict({
            "allowed_callers": [{"ae_title": "RADFM", "host": "127.0.0.1"}],  # no SCP listens: required field only
            "state_dir": str(spool), "max_instance_mb": max_instance_mb,
            "max_instances_per_study": max_instances_per_study, "max_attempts": 1,
            "pull": {"url": url, "filter": parse_query(query), "timeout_s": timeout_s}}, source="--dicomweb")
    except NodeConfigError as error:
        raise BatchInputError(str(error)) from None
    queue = JobQueue(config.state_path)
    try:
        try:
            DicomwebPull(config, StorageSCP(config, queue)).poll_once()
        except PullError as error:
            raise BatchInputError(f"--dicomweb {url}: {error}") from None
        queue.seal_stable(0.0, now=time.time() + 1.0)  # everything fetched is complete: a study per job folder
        jobs = queue.jobs(limit=1_000_000)
        failed = sum(1 for pull in queue.pulls(limit=1_000_000) if pull["state"] == "failed")
    finally:
        queue.close()
    items: list[dict[str, Any]] = []
    counts = {"series_not_selected": 0, "skipped_files": 0, "pull_failed": failed}
    for job in sorted(jobs, key=lambda j: j["id"]):
        folder = Path(config.state_path) / "jobs" / str(job["id"]) / "input"
        if not folder.is_dir():
            continue
        found, more = folder_items(folder, prompt, rules)
        for item in found:
            item["origin"] = "dicomweb"
        items.extend(found)
        for name, value in more.items():
            counts[name] = counts.get(name, 0) + value
    return items, counts
