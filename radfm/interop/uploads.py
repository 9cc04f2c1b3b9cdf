"""Turn uploaded files into scans: one scan per NIfTI/PNG/JPEG/NRRD file, one per DICOM series.

Shared by the service (multipart uploads) and the Slicer client (which builds the same
request). Kinds are recognised from the bytes first (DICOM preamble, PNG/JPEG/gzip
magic) and the file name second, so a DICOM file without ``.dcm`` still works.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom

SCAN_SUFFIXES = {
    ".nii.gz": "nifti", ".nii": "nifti", ".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg",
    ".nrrd": "nrrd", ".dcm": "dicom", ".dicom": "dicom",
}
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


FILE_FIELDS = ("files", "file")  # the multipart fields that carry scans
_HEAD_BYTES = 352  # enough for the DICOM preamble and the NIfTI-1 magic at offset 344


class BodyTooLarge(Exception):
    """A request body grew past the service's byte limit while it was being read."""


class UploadError(ValueError):
    """A bad upload; ``status_code`` is the HTTP status the service answers with."""

    def __init__(self, message: str, status_code: int = 400) -> None:
        super().__init__(message)
        self.status_code = status_code


@dataclass
class Scan:
    """One image for the model: a file (NIfTI, PNG, …) or a folder holding one DICOM series."""

    kind: str
    path: Path
    names: list[str] = field(default_factory=list)  # uploaded file names that make up the scan
    series_uid: str | None = None

    def describe(self) -> dict:
        return {"kind": self.kind, "files": self.names, "series_uid": self.series_uid}


def suffix_kind(name: str) -> tuple[str, str] | None:
    """``(suffix, kind)`` from a file name, or ``None`` when the suffix is not a scan type."""
    lower = name.lower()
    for suffix, kind in SCAN_SUFFIXES.items():
        if lower.endswith(suffix):
            return suffix, kind
    return None


def detect_kind(name: str, head: bytes) -> str:
    """Scan kind of an uploaded file from its first bytes (>= 352) and its name.

    Raises :class:`UploadError` (415) naming the file when it is not a supported scan.
    """
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"NRRD"):
        return "nrrd"
    if len(head) >= 348 and head[344:348] in (b"n+1\x00", b"ni1\x00"):
        return "nifti"
    by_name = suffix_kind(name)
    if by_name is not None:
        kind = by_name[1]
        if kind == "nifti" and not head.startswith(b"\x1f\x8b") and name.lower().endswith(".gz"):
            raise UploadError(f"{name}: named .nii.gz but not gzip data", 415)
        if kind in ("nifti", "dicom"):  # DICOM without preamble, gzipped NIfTI: trust the name
            return kind
        raise UploadError(f"{name}: named like a {kind} file but its content is not {kind}", 415)
    raise UploadError(
        f"{name}: not a supported scan (expected DICOM, NIfTI .nii/.nii.gz, PNG, JPEG or NRRD)", 415
    )


_MAX_NAME_CHARS = 120  # file systems allow 255 bytes; later steps append suffixes


def safe_name(name: str, index: int) -> str:
    """A file-system safe name for upload ``index`` that keeps its scan suffix (readers go by suffix).

    Long names are shortened in the middle (the scan suffix stays), so a 300-character upload
    name cannot make the file system refuse the file.
    """
    base = _SAFE_NAME.sub("_", Path(name or "upload").name).strip("._") or "upload"
    if len(base) > _MAX_NAME_CHARS:
        kept = suffix_kind(base)
        suffix = kept[0] if kept else Path(base).suffix[:16]
        base = base[: _MAX_NAME_CHARS - len(suffix)] + suffix
    return f"{index:04d}_{base}"


def group_scans(saved: list[tuple[str, Path, str]], workdir: Path, *, max_scan_bytes: int | None = None) -> list[Scan]:
    """Group saved uploads ``(original name, path, kind)`` into scans, in upload order.

    DICOM files are moved into one folder per SeriesInstanceUID; every other file is a scan.
    A deflated DICOM file inflating beyond ``max_scan_bytes`` is refused (413) before its header is parsed.
    """
    from radfm.transforms.errors import ScanTooLargeError
    from radfm.transforms.guards import check_dicom_inflation

    scans: list[Scan] = []
    series: dict[str, Scan] = {}
    for name, path, kind in saved:
        if kind != "dicom":
            target = path
            if kind == "nifti" and not path.name.lower().endswith((".nii", ".nii.gz")):
                target = path.with_name(path.name + (".nii.gz" if _is_gzip(path) else ".nii"))
                path.rename(target)
            elif suffix_kind(path.name) is None or suffix_kind(path.name)[1] != kind:
                target = path.with_name(path.name + {"png": ".png", "jpeg": ".jpg", "nrrd": ".nrrd"}[kind])
                path.rename(target)
            scans.append(Scan(kind=kind, path=target, names=[name]))
            continue
        try:
            check_dicom_inflation(path, max_scan_bytes)  # pydicom inflates a deflated file whole
        except ScanTooLargeError as error:
            raise UploadError(f"{name}: {str(error).split(': ', 1)[-1]}", 413) from None
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True, force=True)
            series_uid = str(header.SeriesInstanceUID)
            _ = header.Rows  # an image instance, not e.g. a DICOMDIR or SR
        except Exception as error:
            raise UploadError(f"{name}: not a readable DICOM image ({type(error).__name__}: {error})", 422) from error
        if series_uid not in series:
            folder = workdir / f"series_{len(series):03d}"
            folder.mkdir()
            series[series_uid] = Scan(kind="dicom", path=folder, series_uid=series_uid)
            scans.append(series[series_uid])
        scan = series[series_uid]
        shutil.move(str(path), scan.path / (path.name if path.name.lower().endswith(".dcm") else path.name + ".dcm"))
        scan.names.append(name)
    return scans


def _is_gzip(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(2) == b"\x1f\x8b"


async def save_uploads(form, workdir: Path, limits: Any) -> list[tuple[str, Path, str]]:
    """Write every file of a multipart ``form`` to ``workdir``; ``(original name, path, kind)`` in upload order.

    ``limits``: the service's ``ServiceLimits`` (``max_files`` is checked here).
    """
    from starlette.datastructures import UploadFile

    uploads = [(key, value) for key, value in form.multi_items() if isinstance(value, UploadFile)]
    stray = [key for key, _ in uploads if key not in FILE_FIELDS]
    if stray:
        raise UploadError(f"file(s) sent in field(s) {sorted(set(stray))}; send scans in the field 'files'")
    if not uploads:
        raise UploadError("no scans uploaded: send one or more files in the multipart field 'files'")
    if len(uploads) > limits.max_files:
        raise UploadError(f"{len(uploads)} files uploaded; the limit is {limits.max_files}", 413)
    saved = []
    for index, (_, upload) in enumerate(uploads):
        name = upload.filename or f"file{index}"
        head = await upload.read(_HEAD_BYTES)
        if not head:
            raise UploadError(f"{name}: empty file")
        kind = detect_kind(name, head)
        path = workdir / safe_name(name, index)
        with path.open("wb") as handle:
            handle.write(head)
            while chunk := await upload.read(1 << 20):
                handle.write(chunk)
        saved.append((name, path, kind))
    return saved
