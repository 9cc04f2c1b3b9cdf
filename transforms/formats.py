"""The one registry of scan formats: each format declared once.

A :class:`ScanFormat` says how a format is recognised (magic bytes at the start of the file,
file-name suffixes), whether it holds 2D images, 3D volumes or either, what its guard checks
before any imaging library touches it (:mod:`radfm.transforms.guards`: detached data files,
decoded-size limit, inflation bounds), which reader reads it (its ``reader`` family, whose read
function is ``radfm.transforms.readers.READERS[family]``), the
label shown to people (chat page, rating app, error messages) and whether the HTTP service
takes it as an upload. The readers, the guards, the DICOM ``ImageReader``, the rating app and
the service's uploads all ask this module, so a format is added or changed in one place.

Recognition (:func:`detect_format` for a path, :func:`detect_upload` for a name and the first
:data:`HEAD_BYTES` bytes): the content decides when it carries a known magic (DICOM ``DICM``
at byte 128, PNG, JPEG, NRRD, NIfTI-1/2, ``.npy``); the name decides otherwise (MetaImage has no
magic, DICOM files may lack the preamble, ``.nii.gz`` is gzip). A file whose name and content
name two different readers (a ``.png`` holding an NRRD header, a ``.dcm`` holding a PNG) is
refused: it is damaged or crafted, and reading it either way would be a guess. PNG and JPEG
share one reader, so a ``.png`` holding a JPEG is read as the JPEG it is.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import guards
from .errors import ScanReadError
from .volumes import split_volume

HEAD_BYTES = 352  # enough for the DICOM preamble (132) and the NIfTI-1 magic at offset 344


def _dicom_magic(head: bytes) -> bool:
    return len(head) >= 132 and head[128:132] == b"DICM"


def _nifti_magic(head: bytes) -> bool:
    return (len(head) >= 348 and head[344:348] in (b"n+1\x00", b"ni1\x00")) or head[4:12] in (
        b"n+2\x00\r\n\x1a\n", b"ni2\x00\r\n\x1a\n")


@dataclass(frozen=True)
class ScanFormat:
    """One scan format.

    ``name``: stable id (``nifti``, ``dicom``, ``dicom_series``, ``nrrd``, ``metaimage``, ``png``,
    ``jpeg``, ``numpy``); the upload kinds of the service are these names. ``reader``: the reader
    family (``nifti``, ``dicom``, ``dicom_series``, ``nrrd``, ``itk``, ``image``, ``numpy``), what
    :func:`radfm.transforms.scan_format` returns and ``meta["source_format"]`` records.
    The reader of each family is ``radfm.transforms.readers.READERS[reader]``
    (``read(path, series_uid=, defer_rescale=, max_scan_bytes=) -> (array [C, *spatial], meta)``).
    ``suffixes``: lower-case, the first is the one a file is given when renamed. ``dims``: the
    spatial dimensions files of this format may have. ``magic``: recognises the content from the
    first :data:`HEAD_BYTES` bytes (None: no reliable magic). ``guard``: ``guard(path, max_scan_bytes)``,
    header-only checks run before any library reads the file (None: the reader checks as it reads,
    see ``reader_checks``). ``upload``: the service accepts it as an uploaded file.
    """

    name: str
    label: str
    reader: str
    suffixes: tuple[str, ...]
    dims: tuple[int, ...]
    magic: Callable[[bytes], bool] | None
    guard: Callable[..., Any] | None
    upload: bool = False
    reader_checks: bool = False  # the reader runs the guard itself (per slice, or with the header it parses)

    def check(self, path: str | os.PathLike, max_scan_bytes: int | None = None) -> guards.HeaderCheck | None:
        """Run this format's guard on ``path`` (:class:`ScanReadError` / ``ScanTooLargeError`` naming the file).

        Returns what the guard learned (:class:`~radfm.transforms.guards.HeaderCheck`: the parsed
        header the reader goes on with, the claimed bytes), or None for a format without a guard.
        """
        guards.effective_limit(max_scan_bytes)  # a bad limit fails before any file is opened
        return None if self.guard is None else self.guard(path, max_scan_bytes)


NIFTI = ScanFormat("nifti", "NIfTI volume", "nifti", (".nii.gz", ".nii"), (2, 3), _nifti_magic,
                   guards.check_nifti, upload=True)
DICOM = ScanFormat("dicom", "DICOM file", "dicom", (".dcm", ".dicom", ".ima"), (2, 3), _dicom_magic,
                   guards.check_dicom, upload=True, reader_checks=True)
DICOM_SERIES = ScanFormat("dicom_series", "DICOM series (folder)", "dicom_series", (), (2, 3), None, None,
                          reader_checks=True)
NRRD = ScanFormat("nrrd", "NRRD volume", "nrrd", (".nrrd", ".nhdr"), (2, 3), lambda head: head.startswith(b"NRRD"),
                  guards.check_nrrd, upload=True)
METAIMAGE = ScanFormat("metaimage", "MetaImage volume", "itk", (".mha", ".mhd"), (2, 3), None,
                       guards.check_metaimage)
PNG = ScanFormat("png", "PNG image (2D)", "image", (".png",), (2,), lambda head: head.startswith(b"\x89PNG\r\n\x1a\n"),
                 guards.check_picture, upload=True)
JPEG = ScanFormat("jpeg", "JPEG image (2D)", "image", (".jpg", ".jpeg"), (2,), lambda head: head.startswith(b"\xff\xd8\xff"),
                  guards.check_picture, upload=True)
NUMPY = ScanFormat("numpy", "NumPy array (.npy)", "numpy", (".npy",), (2, 3), lambda head: head.startswith(b"\x93NUMPY"),
                   guards.check_numpy)

# content checks run in this order: DICOM first (its 128-byte preamble may start like anything)
FORMATS: tuple[ScanFormat, ...] = (DICOM, NIFTI, NRRD, PNG, JPEG, NUMPY, METAIMAGE, DICOM_SERIES)
BY_NAME: dict[str, ScanFormat] = {fmt.name: fmt for fmt in FORMATS}
UPLOAD_FORMATS: tuple[ScanFormat, ...] = tuple(fmt for fmt in FORMATS if fmt.upload)
# suffix -> format, longest suffix first (".nii.gz" before any ".gz")
SCAN_SUFFIXES: dict[str, ScanFormat] = dict(sorted(((suffix, fmt) for fmt in FORMATS for suffix in fmt.suffixes),
                                                   key=lambda item: -len(item[0])))
UPLOAD_SUFFIXES: dict[str, ScanFormat] = {suffix: fmt for suffix, fmt in SCAN_SUFFIXES.items() if fmt.upload}


def supported_text(formats: tuple[ScanFormat, ...] = FORMATS) -> str:
    """``"a DICOM series folder, .dcm, .dicom, ..."``: what error messages say is expected."""
    suffixes = [suffix for fmt in formats for suffix in fmt.suffixes]
    folder = "a DICOM series folder, " if DICOM_SERIES in formats else ""
    return folder + ", ".join(suffixes)


def format_by_suffix(name: str, formats: dict[str, ScanFormat] = SCAN_SUFFIXES) -> tuple[str, ScanFormat] | None:
    """``(suffix, format)`` from a file name (case ignored), or None."""
    lower = name.lower()
    for suffix, fmt in formats.items():
        if lower.endswith(suffix):
            return suffix, fmt
    return None


def format_by_content(head: bytes) -> ScanFormat | None:
    """The format whose magic the first bytes carry, or None."""
    return next((fmt for fmt in FORMATS if fmt.magic is not None and fmt.magic(head)), None)


def _decide(where: str, name: str, head: bytes, suffixes: dict[str, ScanFormat],
            expected: str, strict: bool = False) -> ScanFormat:
    by_content = format_by_content(head)
    named = format_by_suffix(name, suffixes)
    by_name = named[1] if named else None
    if by_content is not None and by_name is not None and by_content.reader != by_name.reader:
        raise ScanReadError(f"{where}: named like a {by_name.label} ({named[0]}) but its content is a "
                            f"{by_content.label}; refusing a file whose name and content disagree (rename it "
                            "or check where it came from)")
    if by_content is not None:
        if suffixes is UPLOAD_SUFFIXES and not by_content.upload:
            raise ScanReadError(f"{where}: a {by_content.label} is not accepted here; expected {expected}")
        return by_content
    if by_name is not None:
        if by_name is NIFTI and named[0].endswith(".gz") and not head.startswith(b"\x1f\x8b"):
            raise ScanReadError(f"{where}: named {named[0]} but not gzip data; expected a gzip-compressed NIfTI file")
        if strict and by_name.magic is not None and by_name not in (NIFTI, DICOM):
            # gzipped NIfTI and DICOM without its preamble have no magic to check; the others must show theirs
            raise ScanReadError(f"{where}: named like a {by_name.label} ({named[0]}) but its content is not one")
        return by_name
    shown = "".join(Path(name).suffixes) or "(no extension)"
    raise ScanReadError(f"{where}: unsupported file type {shown}; expected {expected}")


def detect_format(path: str | os.PathLike) -> ScanFormat:
    """The format of a scan on disk: a folder is a DICOM series; a file by its content, then its name.

    Raises :class:`ScanReadError` naming the path: missing, not a regular file (a FIFO or device
    would block the reader), unsupported, or name and content that disagree (see the module doc).
    Reads the first :data:`HEAD_BYTES` bytes only.
    """
    path = Path(split_volume(path)[0])  # `scan.nii.gz[t]`: one volume of that file
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise ScanReadError(f"{path}: no such file or folder") from None
    except OSError as error:
        raise ScanReadError(f"{path}: cannot be opened ({error.strerror or type(error).__name__})") from None
    except ValueError:  # an embedded NUL byte
        raise ScanReadError(f"{str(path)!r}: not a valid path (it holds a NUL byte)") from None
    if stat.S_ISDIR(mode):
        return DICOM_SERIES
    if not stat.S_ISREG(mode):
        raise ScanReadError(f"{path}: not a regular file (a FIFO, socket or device); expected a scan file")
    try:
        with open(path, "rb") as handle:
            head = handle.read(HEAD_BYTES)
    except OSError as error:
        raise ScanReadError(f"{path}: cannot be read ({error.strerror or type(error).__name__})") from None
    return _decide(str(path), path.name, head, SCAN_SUFFIXES, supported_text())


def detect_upload(name: str, head: bytes) -> ScanFormat:
    """The format of an uploaded file from its name and first bytes (at least :data:`HEAD_BYTES`, or all of it).

    Only formats with ``upload=True`` (:data:`UPLOAD_FORMATS`); :class:`ScanReadError` naming the
    upload otherwise (the service answers 415). Stricter than :func:`detect_format`: a name with
    a magic-bearing suffix (``.png``, ``.nrrd`` ...) whose content lacks the magic is refused here
    (on disk the reader reports the damaged file instead).
    """
    if not head:
        raise ScanReadError(f"{name}: empty file")
    labels = ", ".join(fmt.label.split(" (")[0] for fmt in UPLOAD_FORMATS)
    return _decide(name, name, head, UPLOAD_SUFFIXES, f"one of {labels} ({', '.join(UPLOAD_SUFFIXES)})",
                   strict=True)


def label_of(name: str) -> str:
    """The label of a format by its name (``"png"`` -> ``"PNG image (2D)"``)."""
    try:
        return BY_NAME[name].label
    except KeyError:
        raise ValueError(f"unknown scan format {name!r}; expected one of {sorted(BY_NAME)}") from None


def check_scan_file(path: str | os.PathLike, fmt: str, max_scan_bytes: int | None = None) -> None:
    """Run the guard of the format whose reader family is ``fmt`` (as ``scan_format`` names it) on ``path``.

    A DICOM series folder is checked by the series reader (per file while listing, then the
    whole volume); NRRD and DICOM files by their readers too, which is where this guard runs.
    """
    by_reader(fmt).check(path, max_scan_bytes)


def by_reader(reader: str) -> ScanFormat:
    """The first format read by the reader family ``reader`` (``"itk"`` -> MetaImage)."""
    for fmt in FORMATS:
        if fmt.reader == reader:
            return fmt
    raise ValueError(f"unknown reader {reader!r}; expected one of {sorted({f.reader for f in FORMATS})}")


@dataclass(frozen=True)
class InspectedScan:
    """A scan file as its format's check saw it: what the request path and the reader reuse.

    ``format``: the registry entry (:func:`detect_format`); ``checked``: what its guard learned
    (the parsed header the reader reads on with, the claimed bytes), None when the reader runs the
    guard itself (``reader_checks``: DICOM) or the format has none; ``limit``: the
    ``max_scan_bytes`` it was checked against; ``stamp``: the file's identity and size when
    checked (device, inode, size, mtime), so a file changed since is checked again.
    """

    path: str
    format: ScanFormat
    checked: guards.HeaderCheck | None
    limit: int
    stamp: tuple[int, int, int, int]  # Stamp

    @property
    def claimed_bytes(self) -> int | None:
        """Bytes of image data the header claims (None: not read from a header here)."""
        return None if self.checked is None else self.checked.claimed


Stamp = tuple[int, int, int, int]  # device, inode, size, mtime (ns): the same file, unchanged, even if moved
_inspected: contextvars.ContextVar[dict[Stamp, InspectedScan] | None] = contextvars.ContextVar(
    "radfm_inspected_scans", default=None)


def file_stamp(path: str | os.PathLike) -> Stamp:
    """``(device, inode, size, mtime ns)`` of ``path``: the same file unchanged, wherever it was moved."""
    info = os.stat(path)
    return info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns


@contextlib.contextmanager
def inspected_scans() -> Iterator[dict[Stamp, InspectedScan]]:
    """Within the block, what :func:`inspect_scan` (and :func:`remember`) learn is kept and given back.

    The request path opens one such block per request: the memory budget's claim inspects each
    scan file, and the reader (``read_scan`` behind the answerer) reuses that inspection instead of
    parsing the header again. An entry is used only for the same file unchanged (device, inode,
    size, mtime: a file moved into a series folder is still found) checked against the same limit;
    anything else is inspected anew.
    """
    token = _inspected.set({})
    try:
        yield _inspected.get()
    finally:
        _inspected.reset(token)


def recall(path: str | os.PathLike, max_scan_bytes: int | None = None) -> InspectedScan | None:
    """The inspection of ``path`` kept in this :func:`inspected_scans` block (same file, same limit), or None."""
    cache = _inspected.get()
    if not cache:
        return None
    try:
        kept = cache.get(file_stamp(path))
    except (OSError, ValueError):
        return None
    return kept if kept is not None and kept.limit == guards.effective_limit(max_scan_bytes) else None


def remember(inspected: InspectedScan) -> InspectedScan:
    """Keep ``inspected`` for the rest of this :func:`inspected_scans` block (no-op outside one)."""
    cache = _inspected.get()
    if cache is not None and inspected.format is not DICOM_SERIES:
        cache[inspected.stamp] = inspected
    return inspected


def inspect_scan(path: str | os.PathLike, max_scan_bytes: int | None = None) -> InspectedScan:
    """Detect the format of ``path`` and run its guard (unless its reader runs it): one header parse.

    Raises what :func:`detect_format` and the guard raise (:class:`ScanReadError`,
    ``ScanTooLargeError``). Inside :func:`inspected_scans`, a file inspected before (unchanged,
    same limit) is not read again.
    """
    path = split_volume(path)[0]  # `scan.nii.gz[t]`: the header of that file
    limit = guards.effective_limit(max_scan_bytes)
    kept = recall(path, limit)
    if kept is not None:
        return kept
    fmt = detect_format(path)
    stamp = (0, 0, 0, 0) if fmt is DICOM_SERIES else file_stamp(path)
    checked = None if fmt.reader_checks else fmt.check(path, limit)
    return remember(InspectedScan(str(path), fmt, checked, limit, stamp))


__all__ = ["BY_NAME", "DICOM", "DICOM_SERIES", "FORMATS", "HEAD_BYTES", "JPEG", "METAIMAGE", "NIFTI", "NRRD", "NUMPY",
           "PNG", "SCAN_SUFFIXES", "UPLOAD_FORMATS", "UPLOAD_SUFFIXES", "InspectedScan", "ScanFormat", "by_reader",
           "check_scan_file", "detect_format", "detect_upload", "format_by_content", "format_by_suffix", "inspect_scan",
           "file_stamp", "inspected_scans", "label_of", "recall", "remember", "supported_text"]
