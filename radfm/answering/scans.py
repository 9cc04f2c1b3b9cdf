"""Scan inputs -> scans: upload format detection, zips, DICOM series grouping, header claims.

One scan per NIfTI/PNG/JPEG/NRRD file, one per DICOM series. Uploaded kinds are recognised
from the bytes first (DICOM preamble, PNG/JPEG/NRRD/NIfTI magic) and the file name second
(:func:`detect_kind`, the one place that decides what an upload is), so a DICOM file without
``.dcm`` still works. Zips (a DICOM series, or several scans) are read member by member with
bounded count and decompressed size; member names never become paths.

Everything here reads files, so the request path runs it inside its bounded worker pool.
"""

from __future__ import annotations

import re
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from radfm.answering.refusal import RequestError
from radfm.transforms import formats
from radfm.transforms.errors import ScanReadError
from radfm.transforms.volumes import split_suffix, split_volume

HEAD_BYTES = formats.HEAD_BYTES  # enough for the DICOM preamble and the NIfTI-1 magic at offset 344
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_NAME_CHARS = 120  # file systems allow 255 bytes; later steps append suffixes
_ZIP_MAGIC = b"PK\x03\x04"
_SKIPPED_MEMBERS = re.compile(r"(^|/)(__MACOSX/|\.)|(^|/)(DICOMDIR|Thumbs\.db)$", re.IGNORECASE)
SavedFile = tuple[str, Path, str]  # (name as sent, path in the workspace, kind)


@dataclass
class Scan:
    """One image for the model: a file (NIfTI, PNG, …) or a folder holding one DICOM series."""

    kind: str
    path: Path
    names: list[str] = field(default_factory=list)  # file names as sent that make up the scan
    series_uid: str | None = None

    def describe(self) -> dict:
        return {"kind": self.kind, "files": self.names, "series_uid": self.series_uid}


def suffix_kind(name: str) -> tuple[str, str] | None:
    """``(suffix, kind)`` from a file name, or ``None`` when the suffix is not an upload scan type."""
    found = formats.format_by_suffix(name, formats.UPLOAD_SUFFIXES)
    return (found[0], found[1].name) if found else None


def is_zip(head: bytes) -> bool:
    return head.startswith(_ZIP_MAGIC)


def detect_kind(name: str, head: bytes) -> str:
    """Kind of an uploaded file from its first bytes (>= 352) and its name: the registry's decision.

    The kinds are the names of :mod:`radfm.transforms.formats` (``dicom``, ``nifti``, ``png``,
    ``jpeg``, ``nrrd``). Raises :class:`RequestError` (415) naming the file when it is not an
    upload scan type, or when its name and content disagree.
    """
    try:
        return formats.detect_upload(name, head).name
    except ScanReadError as error:
        raise RequestError(str(error), 415, code="invalid_scan") from None


def safe_name(name: str, index: int) -> str:
    """A file-system safe name for file ``index`` that keeps its scan suffix (readers go by suffix).

    Long names are shortened in the middle (the scan suffix stays), so a 300-character upload
    name cannot make the file system refuse the file.
    """
    base = _SAFE_NAME.sub("_", Path(name or "upload").name).strip("._") or "upload"
    if len(base) > _MAX_NAME_CHARS:
        kept = suffix_kind(base)
        suffix = kept[0] if kept else Path(base).suffix[:16]
        base = base[: _MAX_NAME_CHARS - len(suffix)] + suffix
    return f"{index:04d}_{base}"


def _target_name(name: str, kind: str, index: int, head: bytes) -> str:
    """The saved file's name: safe, and ending with the suffix its reader expects for ``kind``."""
    base = safe_name(name, index)
    if kind != "dicom" and (suffix_kind(base) is None or suffix_kind(base)[1] != kind):
        if kind == "nifti":
            base += ".nii.gz" if head.startswith(b"\x1f\x8b") else ".nii"
        else:
            base += formats.BY_NAME[kind].suffixes[0]
    return base


def save_scan(name: str, source: bytes | IO[bytes], workdir: Path, *, first_index: int, max_files: int,
              max_bytes: int) -> list[SavedFile]:
    """One file as sent (bytes or a readable binary file), or the scans of a zip, written under ``workdir``.

    The kind is detected from the first bytes before anything is written; the file lands under
    its final name (no rename, no second sniff). A name ending in ``[t]`` (``fmri.nii.gz[3]``)
    picks volume ``t`` of a 4D NIfTI, as on a path: the file is saved without the suffix and its
    returned path carries it (``0003_fmri.nii.gz[3]``, which the readers read as that volume).
    """
    sent, volume = split_suffix(name)  # every upload door names its files here: one rule for all of them
    reader = _Reader(source)
    head = reader.read(HEAD_BYTES)
    if not head:
        raise RequestError(f"{name}: empty file", 400, code="invalid_scan")
    if volume is not None and is_zip(head):
        raise RequestError(f"{name}: a [t] suffix picks one volume of a 4D NIfTI; this is a zip", 422,
                           code="invalid_scan")
    if is_zip(head):
        archive = workdir / f"{first_index:04d}_upload.zip"
        _copy(head, reader, archive)
        try:
            return extract_zip_scans(archive, workdir, first_index=first_index, max_files=max_files,
                                     max_bytes=max_bytes, label=name)
        finally:
            archive.unlink(missing_ok=True)
    kind = detect_kind(sent, head)
    if volume is not None and kind != "nifti":
        raise RequestError(f"{name}: a [t] suffix picks one volume of a 4D NIfTI; this is a {kind} file", 422,
                           code="invalid_scan")
    path = workdir / _target_name(sent, kind, first_index, head)
    _copy(head, reader, path)
    return [(name, path if volume is None else path.with_name(f"{path.name}[{volume}]"), kind)]


class _Reader:
    def __init__(self, source: bytes | IO[bytes]) -> None:
        self.data, self.file, self.offset = (source, None, 0) if isinstance(source, (bytes, bytearray)) else (None, source, 0)

    def read(self, size: int) -> bytes:
        if self.file is not None:
            return self.file.read(size)
        piece = bytes(self.data[self.offset:self.offset + size])
        self.offset += len(piece)
        return piece


def _copy(head: bytes, reader: _Reader, path: Path) -> None:
    with path.open("wb") as handle:
        handle.write(head)
        while chunk := reader.read(1 << 20):
            handle.write(chunk)


def extract_zip_scans(archive: Path, workdir: Path, *, first_index: int, max_files: int, max_bytes: int,
                      label: str) -> list[SavedFile]:
    """Members of a zip (a DICOM series, or several scans) saved as ``(name, path, kind)``.

    Safe by construction: members are written under generated names (``safe_name``), never
    under their own paths; at most ``max_files`` members and ``max_bytes`` decompressed bytes
    (counted while inflating, not trusted from the header); encrypted members and nested
    archives are refused; hidden files, ``__MACOSX``, ``DICOMDIR`` and non-scan files are skipped.
    """
    try:
        bundle = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as error:
        raise RequestError(f"{label}: not a readable zip file ({error})", 400, code="invalid_scan") from None
    saved: list[SavedFile] = []
    total = 0
    with bundle:
        members = [m for m in bundle.infolist() if not m.is_dir() and not _SKIPPED_MEMBERS.search(m.filename)]
        if len(members) > max_files:
            raise RequestError(f"{label}: {len(members)} files in the zip; the limit is {max_files}", 413,
                               code="too_many_files")
        for member in members:
            if member.flag_bits & 0x1:
                raise RequestError(f"{label}: member {member.filename!r} is encrypted", 400, code="invalid_scan")
            total += member.file_size
            if total > max_bytes:
                raise RequestError(f"{label}: more than {max_bytes} bytes when unpacked; the limit is {max_bytes}",
                                   413, code="too_large")
            index = first_index + len(saved)
            written = 0
            with bundle.open(member) as source:
                head = source.read(HEAD_BYTES)  # detected before anything is written: one write, to its final name
                if not head:
                    continue
                if is_zip(head):
                    raise RequestError(f"{label}: member {member.filename!r} is itself a zip; nested archives are not "
                                       "read", 400, code="invalid_scan")
                try:
                    kind = detect_kind(member.filename, head)
                except RequestError:
                    continue  # a README or a report next to the slices: not a scan
                path = workdir / _target_name(Path(member.filename).name, kind, index, head)
                with path.open("wb") as target:
                    chunk = head
                    while chunk:
                        written += len(chunk)
                        if written > member.file_size:
                            raise RequestError(f"{label}: member {member.filename!r} inflates past its declared size",
                                               413, code="too_large")
                        target.write(chunk)
                        chunk = source.read(1 << 20)
            saved.append((f"{label}/{member.filename}", path, kind))
    if not saved:
        raise RequestError(f"{label}: the zip holds no scan (DICOM, NIfTI, NRRD, PNG or JPEG)", 415, code="invalid_scan")
    return saved


def group_scans(saved: list[SavedFile], workdir: Path, *, max_scan_bytes: int) -> list[Scan]:
    """Group saved files ``(name, path, kind)`` into scans, in the order sent.

    DICOM files are moved into one folder per SeriesInstanceUID; every other file is a scan.
    A deflated DICOM file inflating beyond ``max_scan_bytes`` is refused (413) before its header
    is parsed (pydicom inflates a deflated file whole, even for its header).
    """
    import pydicom

    from radfm.transforms.errors import ScanTooLargeError
    from radfm.transforms.guards import check_dicom_inflation

    scans: list[Scan] = []
    series: dict[str, Scan] = {}
    for name, path, kind in saved:
        if kind != "dicom":
            scans.append(Scan(kind=kind, path=path, names=[name]))
            continue
        try:
            check_dicom_inflation(path, max_scan_bytes)
            inflated = inflate_to_disk(path, max_scan_bytes)  # pydicom would inflate a deflated file whole, per read
        except ScanTooLargeError as error:
            raise RequestError(f"{name}: {str(error).split(': ', 1)[-1]}", 413, code="scan_too_large") from None
        kept = None if inflated else formats.recall(path, max_scan_bytes)  # the claim's parse of this header
        try:
            header = kept.checked.header if kept is not None and kept.checked is not None else pydicom.dcmread(
                path, stop_before_pixels=True, force=True, defer_size="1 MB")
            series_uid = str(header.SeriesInstanceUID)
        except Exception as error:
            raise RequestError(f"{name}: not a readable DICOM image ({type(error).__name__}: {error})", 422,
                               code="invalid_scan") from None
        if "Rows" not in header:  # not an image (an RT Plan, an SR, a DICOMDIR): the reader's words, on every door
            raise RequestError(f"{name}: DICOM object without pixel data (SOP class {header.get('SOPClassUID', '?')}); "
                               "expected an image", 422, code="invalid_scan")
        if series_uid not in series:
            folder = workdir / f"series_{len(series):03d}"
            while folder.exists():
                folder = folder.with_name(folder.name + "_")
            folder.mkdir()
            series[series_uid] = Scan(kind="dicom", path=folder, series_uid=series_uid)
            scans.append(series[series_uid])
        scan = series[series_uid]
        shutil.move(str(path), scan.path / (path.name if path.name.lower().endswith(".dcm") else path.name + ".dcm"))
        scan.names.append(name)
    return scans


def inflate_to_disk(path: Path, max_scan_bytes: int) -> bool:
    """Rewrite a Deflated Explicit VR Little Endian file in place as plain Explicit VR Little Endian.

    ``radfm.transforms.guards.write_inflated_dicom`` (inflated in pieces straight to disk and
    counted: over ``max_scan_bytes`` ``ScanTooLargeError``), then moved over ``path``. Returns
    whether the file was deflated.
    """
    from radfm.transforms.guards import write_inflated_dicom

    target = path.with_name(path.name + ".inflated")
    if not write_inflated_dicom(path, target, max_scan_bytes, name=path.name):
        return False
    target.replace(path)
    return True


def reference_scan(path: Path, name: str) -> Scan | None:
    """A scan given by path (CLI, manifests): a DICOM folder, or a file of a kind the readers take.

    Returns ``None`` for a zip (the caller extracts it into its workspace). Raises
    :class:`RequestError` naming the path when it is missing, unreadable or not a scan.
    """
    if path.is_dir():
        return Scan(kind="dicom", path=path, names=[name])
    file = Path(split_volume(path)[0])  # `scan.nii.gz[t]`: the readers pick volume t of that file
    if not file.is_file():
        raise RequestError(f"{name}: no such file or folder", 404 if not file.exists() else 415, code="not_found")
    try:
        with file.open("rb") as handle:
            head = handle.read(HEAD_BYTES)
    except OSError as error:
        raise RequestError(f"{name}: cannot be read ({error.strerror})", 403, code="unreadable") from None
    if is_zip(head):
        return None
    if not head:
        raise RequestError(f"{name}: empty file", 400, code="invalid_scan")
    try:  # by path the readers take every registered format (MetaImage, .npy too)
        kind = formats.detect_format(path).name
    except ScanReadError as error:
        raise RequestError(str(error).replace(str(path), name, 1), 415, code="invalid_scan") from None
    return Scan(kind=kind, path=path, names=[name])


def claimed_bytes(path: Path, kind: str, limit: int) -> int:
    """Bytes of image data a scan file (or DICOM folder) claims, for admission to the reading pool (<= ``limit``).

    Read from headers only, by the format's own check (:func:`radfm.transforms.formats.inspect_scan`:
    NIfTI, NRRD and .npy dims x type, MetaImage DimSize x type, picture width x height x bands;
    DICOM rows x columns x frames x bits, summed over a folder, by
    :func:`radfm.transforms.dicom.inspect_dicom_file`). Inside the request's
    ``formats.inspected_scans()`` block that parse is kept: grouping and the reader reuse it
    instead of reading the header again. A deflated DICOM, or a header that does not pass its
    check, counts as ``limit``: the reader refuses it with its own message.
    """
    from radfm.transforms.dicom import inspect_dicom_file

    try:
        if kind == "dicom":
            claims = ((file, inspect_dicom_file(file, limit)) for file in _files(path))
            return min(limit, sum(_forced_dicom_claim(file, limit) if found is None else found.claimed_bytes
                                  for file, found in claims))
        claimed = formats.inspect_scan(path, limit).claimed_bytes
    except Exception:  # the reader reports a broken header with its own message
        return limit
    return limit if claimed is None else min(limit, claimed)


def _files(path: Path) -> list[Path]:
    return [p for p in sorted(path.iterdir()) if p.is_file()] if path.is_dir() else [path]


def _forced_dicom_claim(path: Path, limit: int) -> int:
    """The claim of a DICOM file :func:`inspect_dicom_file` does not keep: deflated (``limit``), or without preamble."""
    import pydicom

    from radfm.transforms.guards import _deflated_stream_start, dicom_pixel_bytes

    if _deflated_stream_start(path) is not None:  # inflating it to read its header is the guard's job, later
        return limit
    return dicom_pixel_bytes(pydicom.dcmread(str(path), stop_before_pixels=True, force=True, defer_size="1 MB"))
