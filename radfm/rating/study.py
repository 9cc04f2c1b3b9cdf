"""Build a rating study folder from prediction files of several models on the same cases.

Layout of a study folder::

    DIR/study.sqlite            cases, candidates, raters, ratings (see ``store``)
    DIR/images/c00000/0_x.nii.gz   the scans of each case, copied in (the app serves only these)

The folder is assembled under a temporary name next to ``DIR`` and renamed at the end, so
a failed ``create`` leaves nothing half-built behind.

Only scans are copied in: before anything is built, each image of the kept cases must be a
file in one of the formats of :mod:`radfm.transforms.formats` (recognised by content or name)
whose header passes that format's guard, with its data inside the file (a detached NRRD/MetaImage
data file would not come along), or a DICOM series folder, of which only the DICOM files (no
links leaving the folder) are copied. With ``data_root`` every image must also lie inside that
folder (symbolic links resolved). A path such as ``/etc/hostname`` is refused naming the
predictions file and line; a missing image is recorded and the study still built.
"""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from radfm.rating import store
from radfm.utils.io import read_text

IMAGES_DIR = "images"
REQUIRED_FIELDS = ("id", "task", "images", "instruction", "reference", "prediction")


@dataclass
class CaseRecord:
    """One case, merged across models: the shared question and each model's answer."""

    case_id: str
    dataset: str
    task: str
    instruction: str
    reference: str
    images: list[Path]
    answers: dict[str, str] = field(default_factory=dict)  # model -> answer text
    source: str = ""  # "file:line" where the case was first seen (for error messages)


def _read_predictions(path: Path) -> tuple[str, list[dict]]:
    """Rows of one predictions JSONL and its model name; raises ValueError naming file:line."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: predictions file not found")
    rows: list[dict] = []
    models: set[str] = set()
    seen: set[str] = set()
    with io.StringIO(read_text(path)) as handle:  # not UTF-8: a ValueError naming file and line
        for line_no, line in enumerate(handle, 1):
            if not line.strip():
                continue
            where = f"{path}:{line_no}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{where}: not valid JSON ({error.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{where}: expected a JSON object per line")
            missing = [name for name in REQUIRED_FIELDS if name not in row]
            if missing:
                raise ValueError(f"{where}: missing field(s) {', '.join(missing)} (Predictions contract)")
            if not isinstance(row["images"], list):
                raise ValueError(f"{where}: field 'images' must be a list of paths")
            case_id = str(row["id"])
            if case_id in seen:
                raise ValueError(f"{where}: duplicate case id {case_id!r}")
            seen.add(case_id)
            if row.get("model"):
                models.add(str(row["model"]))
            row["_where"] = where
            rows.append(row)
    if len(models) > 1:
        raise ValueError(f"{path}: field 'model' differs between lines ({sorted(models)}); one model per file")
    model = models.pop() if models else path.stem
    return model, rows


def _image_path(raw: object, predictions_file: Path, where: str) -> Path:
    """An image entry (string or {"path": ...}) as an absolute path; relative to the JSONL file."""
    value = raw.get("path") if isinstance(raw, dict) else raw
    if not isinstance(value, str) or not value:
        raise ValueError(f"{where}: each entry of 'images' must be a path string or an object with 'path'")
    path = Path(value)
    return path if path.is_absolute() else (predictions_file.parent / path).resolve()


def merge_predictions(files: list[Path], *, skip_errors: bool = True) -> tuple[list[str], list[CaseRecord]]:
    """Merge prediction files into cases; returns (model names in file order, cases in first-seen order).

    Every file must hold one model; the same case id must have the same question, reference
    and images in every file. Rows with a non-null ``error`` are left out when ``skip_errors``
    (a failed run is not an answer to rate).
    """
    models: list[str] = []
    cases: dict[str, CaseRecord] = {}
    for path in files:
        model, rows = _read_predictions(path)
        if model in models:
            raise ValueError(f"{path}: model {model!r} already given by an earlier predictions file")
        models.append(model)
        for row in rows:
            where = row["_where"]
            images = [_image_path(entry, path, where) for entry in row["images"]]
            case_id = str(row["id"])
            record = cases.get(case_id)
            if record is None:
                record = CaseRecord(
                    case_id=case_id,
                    dataset=str(row.get("dataset") or ""),
                    task=str(row["task"]),
                    instruction=str(row["instruction"]),
                    reference=str(row["reference"]),
                    images=images,
                    source=where,
                )
                cases[case_id] = record
            else:
                for name, mine, theirs in (
                    ("task", str(row["task"]), record.task),
                    ("instruction", str(row["instruction"]), record.instruction),
                    ("reference", str(row["reference"]), record.reference),
                    ("images", [str(p) for p in images], [str(p) for p in record.images]),
                ):
                    if mine != theirs:
                        raise ValueError(f"{where}: case {case_id!r} has a different {name} than at {record.source}")
            if skip_errors and row.get("error"):
                continue
            record.answers[model] = str(row["prediction"] if row["prediction"] is not None else "")
    return models, list(cases.values())


_ANY_SIZE = 1 << 62  # the size limit is the app's (--max_scan_mb); here only the header's sense is checked


def _dicom_files(folder: Path) -> list[Path]:
    """The DICOM files under ``folder`` (relative paths), links leaving the folder refused."""
    from radfm.transforms.formats import DICOM, detect_format

    root = folder.resolve()
    found = []
    for current, _dirs, files in os.walk(folder, followlinks=False):
        for name in sorted(files):
            entry = Path(current) / name
            if entry.is_symlink() and not entry.resolve().is_relative_to(root):
                raise ValueError(f"{entry}: a link to {entry.resolve()}, outside the DICOM folder {folder}")
            try:
                if detect_format(entry) is DICOM:
                    found.append(entry.relative_to(folder))
            except ValueError:  # notes, thumbnails: not copied
                continue
    return found


def check_scan(source: Path, where: str, data_root: Path | None = None) -> list[Path] | None:
    """Refuse an image that is not a scan to copy (see the module doc); ``ValueError`` naming ``where`` and the path.

    Returns the DICOM files to copy for a series folder, None for a file (or a missing path,
    which the copy records as missing).
    """
    from radfm.transforms.errors import ScanReadError
    from radfm.transforms.formats import DICOM_SERIES, METAIMAGE, NRRD, detect_format
    from radfm.transforms.guards import read_metaimage_header, read_nrrd_header

    if data_root is not None and not source.resolve().is_relative_to(data_root):
        raise ValueError(f"{where}: image {source} lies outside the data root {data_root}")
    if not source.exists() and not source.is_symlink():
        return None
    try:
        fmt = detect_format(source)
        if fmt is DICOM_SERIES:
            files = _dicom_files(source)
            if not files:
                raise ScanReadError(f"{source}: a folder without DICOM files; expected a DICOM series folder or a scan file")
            return files
        fmt.check(source, _ANY_SIZE)
        detached = (fmt is NRRD and {"data file", "datafile"} & set(read_nrrd_header(source)[0])) or (
            fmt is METAIMAGE and read_metaimage_header(source)["ElementDataFile"].upper() != "LOCAL")
        if detached:
            raise ScanReadError(f"{source}: its pixel data are in a separate file, which a study does not copy; "
                                f"save the scan as one file ({'.nrrd' if fmt is NRRD else '.mha'}) first")
    except ValueError as error:  # ScanReadError included: the message names the file
        raise ValueError(f"{where}: image not accepted: {error}") from None
    return None


def _copy_scan(source: Path, target: Path, link: bool, dicom_files: list[Path] | None = None) -> None:
    """Copy a file or the DICOM files of a series folder; with ``link`` hard-link files when possible."""
    copy = _link_or_copy if link else shutil.copy2
    if source.is_dir():
        for relative in dicom_files if dicom_files is not None else _dicom_files(source):
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            copy(source / relative, target / relative)
    elif link:
        _link_or_copy(source, target)
    else:
        shutil.copy2(source, target)


def _link_or_copy(source: str | Path, target: str | Path) -> None:
    # hard links keep the study self-contained (a symlink would point outside the folder)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _sample_per_task(cases: list[CaseRecord], per_task: int, seed: int) -> list[CaseRecord]:
    """At most ``per_task`` random cases of each task (the paper rated 400 per task), order kept."""
    rng = random.Random(seed)
    keep: set[str] = set()
    for task in sorted({c.task for c in cases}):
        ids = [c.case_id for c in cases if c.task == task]
        keep.update(rng.sample(ids, min(per_task, len(ids))))
    return [c for c in cases if c.case_id in keep]


def create_study(
    study_dir: str | Path,
    prediction_files: list[str | Path],
    *,
    tasks: list[str] | None = None,
    per_task: int | None = None,
    seed: int = 0,
    link: bool = False,
    skip_errors: bool = True,
    raters: list[str] | None = None,
    data_root: str | Path | None = None,
) -> dict:
    """Create the study folder; returns a summary dict (counts, warnings, rater tokens).

    ``tasks`` keeps only those tasks (e.g. the open-ended ``vqa``, ``report``, ``rationale``);
    ``per_task`` (a positive integer) randomly samples that many cases of each task with ``seed``;
    ``data_root``: every image must lie inside this folder. Images that are not scans are refused
    (:func:`check_scan`) before anything is written.
    """
    if per_task is not None and (isinstance(per_task, bool) or not isinstance(per_task, int) or per_task < 1):
        raise ValueError(f"per_task: expected a positive number of cases per task, got {per_task!r}")
    root = None if data_root is None else Path(data_root).expanduser().resolve()
    if root is not None and not root.is_dir():
        raise FileNotFoundError(f"{root}: data root folder not found")
    study_dir = Path(study_dir).resolve()
    if study_dir.exists() and (not study_dir.is_dir() or any(study_dir.iterdir())):
        raise FileExistsError(f"{study_dir}: already exists and is not empty; choose a new study folder")
    files = [Path(f).expanduser().resolve() for f in prediction_files]
    if not files:
        raise ValueError("predictions: expected at least one predictions JSONL file")
    models, cases = merge_predictions(files, skip_errors=skip_errors)
    if tasks:
        cases = [c for c in cases if c.task in set(tasks)]
    if per_task:
        cases = _sample_per_task(cases, int(per_task), seed)
    cases = [c for c in cases if c.answers]
    if not cases:
        raise ValueError("no case with at least one answer to rate (check --tasks and the prediction files)")
    dicom_files: dict[Path, list[Path] | None] = {}
    for case in cases:  # every image checked before anything is written
        for source in case.images:
            if source not in dicom_files:
                dicom_files[source] = check_scan(source, case.source, root)

    notes: list[str] = []
    for model in models:
        missing = sum(model not in c.answers for c in cases)
        if missing:
            notes.append(f"model {model!r} has no answer for {missing} of {len(cases)} cases")

    study_dir.parent.mkdir(parents=True, exist_ok=True)
    build_dir = Path(tempfile.mkdtemp(prefix=f".{study_dir.name}.building-", dir=study_dir.parent))
    tokens: dict[str, str] = {}
    try:
        conn = store.open_db(build_dir / store.DB_NAME, must_exist=False)
        try:
            store.init_schema(conn, models)
            _fill(conn, build_dir, cases, link, notes, dicom_files)
            for name in raters or []:
                tokens[name] = store.add_rater(conn, name)
            conn.commit()
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()
        if study_dir.exists():
            study_dir.rmdir()  # empty (checked above)
        os.replace(build_dir, study_dir)
    except BaseException:
        shutil.rmtree(build_dir, ignore_errors=True)
        raise
    for note in notes:
        warnings.warn(note, stacklevel=2)
    return {"study": str(study_dir), "models": models, "cases": len(cases), "notes": notes, "tokens": tokens}


def _fill(conn, build_dir: Path, cases: list[CaseRecord], link: bool, notes: list[str],
          dicom_files: dict[Path, list[Path] | None]) -> None:
    """Insert cases/candidates and copy each case's scans into ``build_dir/images``."""
    from tqdm.auto import tqdm

    from radfm.utils.progress import tqdm_options

    for position, case in enumerate(tqdm(cases, desc="building study", unit="case", leave=False, **tqdm_options())):
        cursor = conn.execute(
            "INSERT INTO cases(position, case_id, dataset, task, instruction, reference) VALUES (?, ?, ?, ?, ?, ?)",
            (position, case.case_id, case.dataset, case.task, case.instruction, case.reference),
        )
        case_pk = cursor.lastrowid
        case_folder = Path(IMAGES_DIR) / f"c{position:05d}"
        (build_dir / case_folder).mkdir(parents=True, exist_ok=True)
        for index, source in enumerate(case.images):
            rel = case_folder / f"{index}_{source.name}"
            error = None
            try:
                _copy_scan(source, build_dir / rel, link, dicom_files.get(source))
            except OSError as failure:
                # a batch job records the failure and carries on; the page says what is missing
                error = f"{source}: could not copy ({failure.strerror or failure})"
                notes.append(f"case {case.case_id!r} image {index}: {error}")
            conn.execute(
                "INSERT INTO case_images(case_pk, image_index, rel_path, error) VALUES (?, ?, ?, ?)",
                (case_pk, index, None if error else rel.as_posix(), error),
            )
        conn.executemany(
            "INSERT INTO candidates(case_pk, model, answer) VALUES (?, ?, ?)",
            [(case_pk, model, answer) for model, answer in case.answers.items()],
        )
