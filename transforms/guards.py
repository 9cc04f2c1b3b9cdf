"""Checks that run before any imaging library touches a scan file (hostile or careless input).

The guard of each format is declared in :mod:`radfm.transforms.formats` and run by every
reader of ``radfm.transforms`` (and so by the rating app, the CLI and the manifests' datasets)
before ITK, nibabel, pynrrd, pydicom or Pillow reads pixel data. Three rules:

1. **Headers are read as the reader reads them, and refused when not fully understood (fail
   closed).** Each guard returns what it parsed (:class:`HeaderCheck`) and the reader reads on
   from that parse: NIfTI headers are parsed as ``nibabel.load`` parses them, once; NRRD headers
   by pynrrd's own ``read_header`` (the parser of our NRRD reader, run once); MetaImage headers, which ITK's MetaIO reads
   leniently (``:`` as well as ``=``, unknown keys skipped), by a strict parser that refuses any
   line it does not fully understand. Either way a header longer than :data:`MAX_HEADER_BYTES`
   (1 MiB, comment lines included), a byte that is not printable ASCII (a BOM or anything before
   the ``NRRD`` magic, ``data\x80 file``), a misspelled or repeated field, or a data-file form
   the reader does not implement is refused with :class:`ScanReadError` naming the file.
2. **No detached data outside the header's folder.** The NRRD data file (one name: pynrrd
   reads no ``LIST`` or pattern, so those are refused) and MetaImage ``ElementDataFile`` (a
   name, a ``%d`` pattern with min/max/step, or ``LIST``) must resolve (symlinks and ``..``)
   inside the header's folder and be regular files. So ``data file: /etc/passwd`` cannot turn
   a host file into pixels, and no error message states the size of a file outside.
3. **Decoded and inflated sizes are bounded.** The size the header claims (dims x sample
   size: NIfTI, NRRD, MetaImage, DICOM rows x columns x frames x samples x bits, PNG/JPEG width x
   height x bands, ``.npy`` shape x dtype) must not exceed ``max_scan_bytes`` (default
   :data:`DEFAULT_MAX_SCAN_BYTES`, 2 GiB: a 512 x 512 x 4000 int16 CT fits). Compressed forms
   inflate no further than the header describes, whatever the file's size: NRRD gzip/bzip2
   bodies are inflated only up to the claimed size; a deflated DICOM data set may inflate to
   its elements before the pixel data (at most 16 MiB) + the claimed pixel data + 1 MiB,
   counted before pydicom inflates it; gzip NIfTI is read to the claimed size only; compressed
   DICOM pixel data and PNG/JPEG are decoded into arrays of the claimed size. Refusals raise
   :class:`ScanTooLargeError` naming the file, the claimed size and the limit.

The limit is per call (``max_scan_bytes=`` on ``read_scan``/``preprocess_scan``/``LoadScan``) or
for a block of code (``with scan_size_limit(n): ...``, used by the service for its uploads).
"""

from __future__ import annotations

import contextlib
import contextvars
import gzip
import os
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ScanReadError, ScanTooLargeError

DEFAULT_MAX_SCAN_BYTES = 2 * 1024**3  # 2 GiB of decoded voxels
MAX_HEADER_BYTES = 1 << 20  # an NRRD or MetaImage text header longer than this (1 MiB) is refused
_MAX_PATTERN_FILES = 10_000  # a MetaImage data-file pattern or LIST naming more files than this is refused

_current_limit: contextvars.ContextVar[int | None] = contextvars.ContextVar("radfm_max_scan_bytes", default=None)


def effective_limit(max_scan_bytes: int | None = None) -> int:
    """The limit in force: the explicit value, else the one set by :func:`scan_size_limit`, else the default."""
    if max_scan_bytes is None:
        max_scan_bytes = _current_limit.get()
    if max_scan_bytes is None:
        return DEFAULT_MAX_SCAN_BYTES
    if int(max_scan_bytes) < 1:
        raise ValueError(f"max_scan_bytes={max_scan_bytes!r}: expected a positive number of bytes")
    return int(max_scan_bytes)


@contextlib.contextmanager
def scan_size_limit(max_scan_bytes: int | None) -> Iterator[None]:
    """Within the block, readers called without ``max_scan_bytes`` use this limit (None: the default)."""
    token = _current_limit.set(None if max_scan_bytes is None else effective_limit(max_scan_bytes))
    try:
        yield
    finally:
        _current_limit.reset(token)


def _unreadable(path: str | os.PathLike, fmt: str, error: BaseException) -> ScanReadError:
    """The readers' wording for a corrupt file (same text whether the guard or the library notices)."""
    return ScanReadError(f"{path}: cannot read as {fmt} ({type(error).__name__}: {error}); expected a valid {fmt} file")


def _size_text(n: int) -> str:
    return f"{n:,} bytes ({n / 1024**3:.2f} GiB)" if n >= 1024**3 else f"{n:,} bytes ({n / 1024**2:.1f} MiB)"


def check_claimed_size(path: str | os.PathLike, claimed: int, what: str, max_scan_bytes: int | None = None) -> None:
    """Raise :class:`ScanTooLargeError` when ``claimed`` bytes (described by ``what``) exceed the limit."""
    limit = effective_limit(max_scan_bytes)
    if claimed > limit:
        raise ScanTooLargeError(f"{path}: {what} claims {_size_text(claimed)} of image data, over the limit of "
                                f"{_size_text(limit)} (max_scan_bytes); refusing to read it")


@dataclass(frozen=True)
class HeaderCheck:
    """What a guard learned from a header: the parse the reader goes on with, and the bytes it claims.

    ``header``: the parsed header the format's reader uses instead of parsing it again (a nibabel
    ``Nifti1Header``/``Nifti2Header``, pynrrd's header dict, the MetaImage fields, a DICOM
    dataset without pixels) or None; ``claimed``: bytes of decoded image data the header states
    (already checked against the limit); ``header_bytes``: where the data start (NRRD).
    """

    header: Any
    claimed: int
    header_bytes: int = 0


def inflate_bounded(decompressor, source, wanted: int, path: str | os.PathLike, what: str,
                    max_scan_bytes: int | None = None, chunk: int = 1 << 20) -> bytes:
    """Inflate from file ``source`` with ``decompressor`` until ``wanted`` bytes come out, never more.

    Raises :class:`ScanTooLargeError` when ``wanted`` is over the limit; returns fewer bytes when
    the stream ends early. Memory stays at ``wanted`` plus one chunk, whatever the stream holds.
    """
    check_claimed_size(path, wanted, what, max_scan_bytes)
    out = bytearray()
    pending = b""
    while len(out) < wanted:
        if not pending:
            pending = source.read(chunk)
            if not pending:
                break
        room = wanted - len(out)
        if hasattr(decompressor, "unconsumed_tail"):  # zlib
            out += decompressor.decompress(pending, room)
            pending = decompressor.unconsumed_tail
            if decompressor.eof:
                break
        else:  # bz2 / lzma decompressors: max_length plus needs_input
            out += decompressor.decompress(pending, room)
            pending = b""
            if getattr(decompressor, "eof", False):
                break
            while len(out) < wanted and not getattr(decompressor, "needs_input", True):
                out += decompressor.decompress(b"", wanted - len(out))
    return bytes(out)


def count_inflated(decompressor, source, limit: int, chunk: int = 1 << 20) -> int:
    """Bytes the stream inflates to, counting at most ``limit + 1`` (nothing is kept)."""
    total = 0
    pending = b""
    while total <= limit:
        if not pending:
            pending = source.read(chunk)
            if not pending:
                break
        piece = decompressor.decompress(pending, chunk)
        pending = decompressor.unconsumed_tail
        total += len(piece)
        if decompressor.eof:
            break
    return total


# ---------------------------------------------------------------------------------------------
# text headers (NRRD, MetaImage): parsed as the reader parses them, refused when not understood
# ---------------------------------------------------------------------------------------------

def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _header_folder(header: Path) -> Path:
    return Path(os.path.dirname(os.path.abspath(header))).resolve()


def _check_data_names(header: Path, names: list[str], field: str) -> None:
    """Every detached data file must be a regular file (or missing) that resolves inside the header's folder.

    ``names`` are as the reader joins them: absolute, or relative to the header's folder.
    """
    folder = _header_folder(header)
    if not names:
        raise ScanReadError(f"{header}: header field {field} names no data file")
    for name in names:
        if not name.strip():
            raise ScanReadError(f"{header}: header field {field} has an empty file name")
        target = Path(name) if os.path.isabs(name) else Path(os.path.dirname(os.path.abspath(header))) / name
        try:
            resolved = target.resolve()
        except (OSError, RuntimeError, ValueError) as error:  # symlink loops, embedded NUL bytes and the like
            raise ScanReadError(f"{header}: header field {field} names {name!r}, which cannot be resolved "
                                f"({type(error).__name__})") from None
        if not _inside(resolved, folder):
            raise ScanReadError(f"{header}: header field {field} names the data file {name!r}, outside the "
                                "header's folder; refusing to read it (keep detached data next to its header)")
        if resolved.exists() and not resolved.is_file():  # a FIFO or device would block or never end
            raise ScanReadError(f"{header}: header field {field} names {name!r}, which is not a regular file; "
                                "refusing to read it")


class _HeaderTooLong(Exception):
    pass


class _CappedLines:
    """Binary lines of a file as ``iter(file)`` gives them, at most ``cap`` bytes in all (then ``_HeaderTooLong``).

    Hands pynrrd's own header parser the same lines it would read from the file, and keeps them
    so the guard can check every byte the parser saw.
    """

    def __init__(self, handle, cap: int) -> None:
        self.handle, self.cap, self.used, self.lines = handle, cap, 0, []

    def __iter__(self):
        while True:
            line = self.handle.readline(self.cap - self.used + 1)
            if not line:
                return
            self.used += len(line)
            if self.used > self.cap:
                raise _HeaderTooLong
            self.lines.append(line)
            yield line


# bytes a header line may hold besides printable ASCII: a tab, and the line end (LF, or CR LF)
_HEADER_LINE = re.compile(rb"[\x20-\x7e\t]*\r?\n?")


def _bad_header_line(path: Path, what: str, number: int, line: bytes, why: str) -> ScanReadError:
    shown = line[:60].decode("ascii", "backslashreplace")
    return ScanReadError(f"{path}: {what} header line {number} ({shown!r}) {why}; refusing a header "
                         f"that is not fully understood (expected a valid {what} header)")


def _check_header_bytes(path: Path, what: str, lines: list[bytes], first: int = 1) -> None:
    """Every header line printable ASCII (tab allowed), ending in LF or CR LF: nothing a parser could read two ways."""
    for number, line in enumerate(lines, start=first):
        if not _HEADER_LINE.fullmatch(line):
            raise _bad_header_line(path, what, number, line, "holds a byte that is not printable ASCII "
                                   "(a BOM, a control character or a non-ASCII letter)")


# NRRD fields as pynrrd and the NRRD0005 format define them ("field: value"); anything else must be
# a "key:=value" pair, which no reader acts on
_NRRD_FIELDS = frozenset({
    "dimension", "type", "encoding", "sizes", "endian", "content", "min", "max", "oldmin", "old min", "oldmax",
    "old max", "lineskip", "line skip", "byteskip", "byte skip", "datafile", "data file", "space",
    "space dimension", "sample units", "spacings", "thicknesses", "axismins", "axis mins", "axismaxs",
    "axis maxs", "kinds", "centerings", "labels", "units", "space units", "space origin", "measurement frame",
    "space directions", "block size", "blocksize", "number",
})
_NRRD_MAGIC = re.compile(rb"NRRD000[1-5]\r?\n")


def _squash(name: str) -> str:
    """A field name without case, spaces, dashes or underscores (``Data_File`` -> ``datafile``)."""
    return re.sub(r"[\s_\-]", "", name).lower()


def read_nrrd_header(path: str | os.PathLike) -> tuple[dict, int]:
    """NRRD header parsed by pynrrd's own parser, checked; returns ``(header, header bytes)``.

    Refused with :class:`ScanReadError` (fail closed): a file not starting with the ``NRRD000N``
    magic line (a BOM or any byte before it), a header longer than :data:`MAX_HEADER_BYTES`
    (comment lines count), any byte that is not printable ASCII, a ``field: value`` line whose
    field NRRD does not define (custom fields must be ``key:=value``), a duplicate field, a
    spelling of the data-file field other than ``data file``/``datafile`` (both at once too),
    and a detached data file given as ``LIST`` or a file-name pattern (pynrrd reads one file only).
    A single data file must resolve inside the header's folder (see :func:`_check_data_names`).
    """
    import nrrd

    path = Path(path)
    with open(path, "rb") as handle:
        first = handle.read(8)
        handle.seek(0)
        if not first.startswith(b"NRRD"):
            raise ScanReadError(f"{path}: not an NRRD file: it does not start with the magic 'NRRD' "
                                f"(found {first!r}); refusing it (expected an NRRD header with nothing before the magic)")
        lines = _CappedLines(handle, MAX_HEADER_BYTES)
        try:
            header = nrrd.read_header(iter(lines))
        except _HeaderTooLong:
            raise ScanReadError(f"{path}: the NRRD header is longer than {MAX_HEADER_BYTES:,} bytes (comment "
                                "lines included); refusing it (expected a header that ends with a blank line "
                                "within that size)") from None
        except Exception as error:  # pynrrd's own refusals (duplicate field, bad number, no ':' ...)
            raise _unreadable(path, "nrrd", error) from None
    if not _NRRD_MAGIC.fullmatch(lines.lines[0]):
        raise _bad_header_line(path, "NRRD", 1, lines.lines[0], "is not a magic line NRRD0001 to NRRD0005")
    _check_header_bytes(path, "NRRD", lines.lines)
    seen: set[str] = set()
    for number, raw in enumerate(lines.lines[1:], start=2):
        line = raw.decode("ascii").rstrip()
        if not line or line.startswith("#"):
            continue
        match = re.match(r"([^:]*):(=?)(.*)", line)  # pynrrd splits at the first ':' or ':='
        field, pair = match.group(1).strip(), match.group(2) == "="
        if _squash(field) == "datafile" and field not in ("data file", "datafile"):
            raise _bad_header_line(path, "NRRD", number, raw, f"spells the data-file field as {field!r}; "
                                   "only 'data file' and 'datafile' are understood")
        if not pair and field not in _NRRD_FIELDS:
            raise _bad_header_line(path, "NRRD", number, raw, f"has the field {field!r}, which NRRD does not "
                                   "define (custom fields are written 'key:=value')")
        if field in seen:
            raise _bad_header_line(path, "NRRD", number, raw, f"repeats the field {field!r}")
        seen.add(field)
    if "data file" in header and "datafile" in header:
        raise ScanReadError(f"{path}: the NRRD header has both 'data file' and 'datafile'; refusing it")
    data_file = header.get("datafile", header.get("data file"))  # what pynrrd's read_data opens
    if data_file is not None:
        label = "'datafile'" if "datafile" in header else "'data file'"
        value = str(data_file)
        if value.upper().startswith("LIST") or "%" in value or len(value.split()) > 1:
            raise ScanReadError(f"{path}: header field {label} is {value!r}: a LIST or a file-name pattern is "
                                "not supported (pynrrd reads one data file); keep one data file next to the header")
        _check_data_names(path, [value], label)
    return header, lines.used


# MetaImage (MetaIO) fields as ITK spells them; MetaIO matches keys exactly (case included)
_META_FIELDS = frozenset({
    "Comment", "ObjectType", "ObjectSubType", "TransformType", "NDims", "Name", "ID", "ParentID", "CompressedData",
    "CompressedDataSize", "BinaryData", "BinaryDataByteOrderMSB", "ElementByteOrderMSB", "Color", "Position",
    "Offset", "Origin", "Orientation", "Rotation", "TransformMatrix", "CenterOfRotation", "AnatomicalOrientation",
    "ElementSpacing", "DimSize", "HeaderSize", "HeaderSizePerSlice", "Modality", "SequenceID", "ElementMin",
    "ElementMax", "ElementNumberOfChannels", "ElementSize", "ElementType", "ElementDataFile", "AcquisitionDate",
    "FileFormatVersion", "ElementSizeValid", "APIVersion",
})
_META_SQUASHED = {name.lower(): name for name in _META_FIELDS}
# the value may not start with another '=' or ':' (MetaIO skips those: "Key == /x" reads "/x")
_META_LINE = re.compile(r"[ \t]*([A-Za-z][A-Za-z0-9_]{0,63})[ \t]*=[ \t]*((?:[^=:\s].*?)?)[ \t]*")
_META_PATTERN = re.compile(r"(\S*%0?\d*d\S*)\s+(-?\d+)\s+(-?\d+)\s+(-?\d+)(?:\s+\d+)?")
_META_SIZES = {"CHAR": 1, "UCHAR": 1, "SHORT": 2, "USHORT": 2, "INT": 4, "UINT": 4, "LONG": 8, "ULONG": 8,
               "LONG_LONG": 8, "ULONG_LONG": 8, "FLOAT": 4, "DOUBLE": 8}


def read_metaimage_header(path: str | os.PathLike) -> dict[str, str]:
    """MetaImage (.mha/.mhd) header by a strict parser; returns ``{field: value}`` (ITK's spelling).

    ITK's MetaIO reads ``Key = value`` and also ``Key : value``, skips unknown keys and ends
    the header at ``ElementDataFile``. Here every line up to that field must be printable ASCII
    of the form ``Key = value`` (blank lines allowed); a ``:`` separator, a key that is a known
    field in another case or spelling (``elementdatafile``), a repeated field, a header longer
    than :data:`MAX_HEADER_BYTES` or one without ``ElementDataFile`` is refused. ``NDims``,
    ``DimSize`` and ``ElementType`` must be valid. Detached data (a name, a ``%d`` pattern with
    min/max/step, or ``LIST`` with one name per following line) must resolve inside the header's folder.
    """
    path = Path(path)
    with open(path, "rb") as handle:
        lines = _CappedLines(handle, MAX_HEADER_BYTES)
        fields: dict[str, str] = {}
        data_line = None
        try:
            for number, raw in enumerate(lines, start=1):
                _check_header_bytes(path, "MetaImage", [raw], number)
                text = raw.decode("ascii").rstrip("\r\n")
                if not text.strip():
                    continue
                match = _META_LINE.fullmatch(text)
                if match is None:
                    raise _bad_header_line(path, "MetaImage", number, raw, "is not of the form 'Key = value'")
                key, value = match.groups()
                if key not in _META_FIELDS and key.lower() in _META_SQUASHED:
                    raise _bad_header_line(path, "MetaImage", number, raw, f"spells the field "
                                           f"{_META_SQUASHED[key.lower()]!r} as {key!r}")
                if key in fields:
                    raise _bad_header_line(path, "MetaImage", number, raw, f"repeats the field {key!r}")
                fields[key] = value
                if key == "ElementDataFile":  # the last field: binary data (or the LIST's names) follow
                    data_line = number
                    break
            names: list[str] = []
            value = fields.get("ElementDataFile", "")
            if data_line is not None and value.upper().startswith("LIST"):
                for number, raw in enumerate(lines, start=data_line + 1):
                    _check_header_bytes(path, "MetaImage", [raw], number)
                    names += [raw.decode("ascii").strip()] if raw.strip() else []
        except _HeaderTooLong:
            raise ScanReadError(f"{path}: the MetaImage header is longer than {MAX_HEADER_BYTES:,} bytes; "
                                "refusing it") from None
    if data_line is None:
        raise ScanReadError(f"{path}: the MetaImage header has no ElementDataFile field (or one not spelled "
                            "'ElementDataFile = ...'); expected a valid MetaImage header")
    if value.upper() == "LOCAL":
        pass
    elif value.upper().startswith("LIST"):
        if value.split()[0].upper() != "LIST" or len(value.split()) > 2:
            raise ScanReadError(f"{path}: ElementDataFile {value!r} not understood (expected 'LIST' or 'LIST 2D')")
        if len(names) > _MAX_PATTERN_FILES:
            raise ScanReadError(f"{path}: ElementDataFile LIST names more than {_MAX_PATTERN_FILES:,} files")
        _check_data_names(path, names, "ElementDataFile")
    elif "%" in value:
        _check_data_names(path, _pattern_names(path, value), "ElementDataFile")
    else:
        _check_data_names(path, [value], "ElementDataFile")
    try:
        ndims = int(fields.get("NDims", ""))
        dims = [int(v) for v in fields.get("DimSize", "").split()]
        channels = int(fields.get("ElementNumberOfChannels", "1"))
    except ValueError:
        raise ScanReadError(f"{path}: MetaImage NDims/DimSize/ElementNumberOfChannels are not integers "
                            f"({fields.get('NDims')!r}, {fields.get('DimSize')!r}); expected a valid MetaImage header") from None
    element = fields.get("ElementType", "").upper().removeprefix("MET_").removesuffix("_ARRAY")
    if len(dims) != ndims or not dims or min(dims) < 1 or channels < 1 or element not in _META_SIZES:
        raise ScanReadError(f"{path}: MetaImage header with NDims {fields.get('NDims')!r}, DimSize "
                            f"{fields.get('DimSize')!r}, ElementType {fields.get('ElementType')!r}; expected "
                            "NDims positive sizes and a known MET_ element type")
    return fields


def _pattern_names(header: Path, value: str) -> list[str]:
    """``"<name with one %d> <min> <max> <step> [<subdim>]"`` -> the file names; anything else is refused."""
    match = _META_PATTERN.fullmatch(value)
    if match is None or match.group(1).count("%") != 1:
        raise ScanReadError(f"{header}: ElementDataFile pattern {value!r} not understood (expected a name with "
                            "one %d, then min, max and step)")
    low, high, step = (int(match.group(i)) for i in (2, 3, 4))
    if step == 0 or (high - low) // step + 1 > _MAX_PATTERN_FILES or (high - low) * step < 0:
        raise ScanReadError(f"{header}: ElementDataFile pattern {value!r} names too many files "
                            f"(more than {_MAX_PATTERN_FILES:,}), none, or has step 0")
    stop = high + (1 if step > 0 else -1)
    return [match.group(1) % index for index in range(low, stop, step)]


def check_metaimage(path: str | os.PathLike, max_scan_bytes: int | None = None) -> HeaderCheck:
    """MetaImage (.mha/.mhd): the strict header checks, then DimSize x channels x ElementType within the limit.

    Returns the fields (``HeaderCheck.header``) and the claimed bytes; ITK's reader parses the header itself.
    """
    fields = read_metaimage_header(path)
    dims = [int(v) for v in fields["DimSize"].split()]
    element = fields["ElementType"].upper().removeprefix("MET_").removesuffix("_ARRAY")
    voxels = 1
    for dim in dims:
        voxels *= dim
    claimed = voxels * int(fields.get("ElementNumberOfChannels", "1")) * _META_SIZES[element]
    check_claimed_size(path, claimed, f"the MetaImage header (DimSize {' x '.join(map(str, dims))}, {element})",
                       max_scan_bytes)
    return HeaderCheck(fields, claimed)


def check_nrrd(path: str | os.PathLike, max_scan_bytes: int | None = None) -> HeaderCheck:
    """NRRD: :func:`read_nrrd_header`, then sizes x type within the limit.

    Returns pynrrd's header, the claimed bytes and the header's length (where the data start),
    which :func:`read_nrrd_bounded` reads on from.
    """
    import numpy as np
    from nrrd.reader import _determine_datatype

    header, size = read_nrrd_header(path)
    try:
        sizes = [int(s) for s in np.asarray(header.get("sizes", []), dtype=np.int64).reshape(-1)]
        itemsize = _determine_datatype(header).itemsize
    except Exception as error:  # no or unknown type/endian, bad sizes: what pynrrd would refuse
        raise _unreadable(path, "nrrd", error) from None
    if not sizes or min(sizes) < 1 or header.get("dimension") != len(sizes):
        raise ScanReadError(f"{path}: NRRD sizes {sizes} do not match dimension {header.get('dimension')!r}; "
                            "expected one positive size per dimension")
    voxels = 1
    for count in sizes:
        voxels *= count
    check_claimed_size(path, voxels * itemsize, f"the NRRD header (sizes {' x '.join(map(str, sizes))}, "
                       f"type {header.get('type', '?')})", max_scan_bytes)
    return HeaderCheck(header, voxels * itemsize, size)


def _open_maybe_gzip(path: Path):
    with open(path, "rb") as handle:
        magic = handle.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")


def check_nifti(path: str | os.PathLike, max_scan_bytes: int | None = None) -> HeaderCheck:
    """NIfTI-1/2 (.nii, .nii.gz): the header parsed once, as ``nibabel.load`` parses it, then
    vox_offset + dims x bitpix within the limit.

    The header class is picked as nibabel picks it (NIfTI-1 magic first, then NIfTI-2) and built
    with nibabel's own checks and fixes (``check=True``, as ``Nifti1Header.from_fileobj`` does), so
    the header checked here is the one :func:`radfm.transforms.readers.read_nifti` reads the data
    with (``HeaderCheck.header``); extensions are not read (nothing of ours uses them).
    """
    import nibabel as nib

    path = Path(path)
    try:
        with _open_maybe_gzip(path) as handle:
            block = handle.read(540)
    except (OSError, EOFError, zlib.error) as error:
        raise _unreadable(path, "nifti", error) from None
    if len(block) < 348:
        raise ScanReadError(f"{path}: cannot read as nifti ({len(block)} bytes; a NIfTI header needs 348); "
                            "expected a valid nifti file")
    try:
        klass = next((k for k in (nib.Nifti1Header, nib.Nifti2Header) if k.may_contain_header(block)), None)
        if klass is None:
            raise nib.filebasedimages.ImageFileError("no NIfTI-1 or NIfTI-2 magic in the header")
        header = klass(block[:klass.sizeof_hdr], check=True)
        shape = header.get_data_shape()
        itemsize = header.get_data_dtype().itemsize
        offset = int(header["vox_offset"])
    except Exception as error:  # an invalid header: the reader's wording
        raise _unreadable(path, "nifti", error) from None
    voxels = 1
    for size in shape:
        voxels *= max(int(size), 0)
    claimed = max(offset, 0) + voxels * itemsize
    check_claimed_size(path, claimed, f"the NIfTI header (shape {' x '.join(map(str, shape))}, {itemsize}-byte "
                       f"voxels, vox_offset {offset})", max_scan_bytes)
    return HeaderCheck(header, voxels * itemsize)


def check_numpy(path: str | os.PathLike, max_scan_bytes: int | None = None) -> HeaderCheck:
    """``.npy``: shape x dtype from the array header within the limit."""
    import numpy as np

    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
    except Exception as error:
        raise _unreadable(path, "numpy", error) from None
    voxels = 1
    for size in shape:
        voxels *= int(size)
    check_claimed_size(path, voxels * dtype.itemsize, f"the .npy header (shape {tuple(shape)}, {dtype})", max_scan_bytes)
    return HeaderCheck(None, voxels * dtype.itemsize)


_PIL_BAND_BYTES = {"I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2, "I": 4, "F": 4}
ALLOWED_PIL_FORMATS = ("PNG", "JPEG")


def check_picture(path: str | os.PathLike, max_scan_bytes: int | None = None,
                  formats: tuple[str, ...] = ALLOWED_PIL_FORMATS) -> HeaderCheck:
    """PNG/JPEG: width x height x bands (after the palette/CMYK conversion) within the limit, before decoding."""
    from PIL import Image

    try:
        with Image.open(path, formats=list(formats)) as image:  # lazy: only the header is parsed
            width, height, mode = image.size[0], image.size[1], image.mode
    except Image.DecompressionBombError as error:
        raise ScanTooLargeError(f"{path}: {error}") from None
    except Exception as error:
        raise _unreadable(path, "image", error) from None
    bands = 4 if mode in ("P", "PA", "RGBA", "CMYK", "LA") else 3 if mode in ("RGB", "YCbCr", "LAB", "HSV") else 1
    claimed = width * height * bands * _PIL_BAND_BYTES.get(mode, 1)
    check_claimed_size(path, claimed, f"the image header ({width} x {height}, mode {mode})", max_scan_bytes)
    return HeaderCheck(None, claimed)


# ---------------------------------------------------------------------------------------------
# DICOM
# ---------------------------------------------------------------------------------------------

def dicom_pixel_bytes(ds) -> int:
    """Rows x Columns x frames x samples x BitsAllocated/8 as the header states (0 if it has no image)."""
    def number(name: str, default: int) -> int:
        try:
            return int(ds.get(name, default) or default)
        except (TypeError, ValueError):
            return default

    bits = number("BitsAllocated", 16)
    return (number("Rows", 0) * number("Columns", 0) * number("NumberOfFrames", 1) * number("SamplesPerPixel", 1)
            * max(1, (bits + 7) // 8))


_DICOM_PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)  # Pixel Data, Float and Double Float Pixel Data
DICOM_INFLATED_HEADER_BYTES = 16 * 1024**2  # inflated elements before the pixel data (deflated DICOM)
_DICOM_TRAILER_BYTES = 1024**2  # inflated bytes allowed after the pixel data (padding, signatures)


def _deflated_stream_start(path: str | os.PathLike) -> int | None:
    """Offset of the deflated data set when ``path`` has the Deflated Explicit VR transfer syntax, else None.

    Reads the preamble (optional, as ``dcmread(force=True)`` allows) and the file meta group only.
    """
    from pydicom.filereader import _read_file_meta_info, read_preamble
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    try:
        with open(path, "rb") as handle:
            read_preamble(handle, True)
            meta = _read_file_meta_info(handle)
            if meta.get("TransferSyntaxUID") != DeflatedExplicitVRLittleEndian:
                return None
            return handle.tell()
    except Exception:  # not DICOM: pydicom cannot read its meta either, so it never inflates anything
        return None


def check_dicom_inflation(path: str | os.PathLike, max_scan_bytes: int | None = None) -> None:
    """Bound what pydicom inflates from a Deflated Explicit VR Little Endian file, whatever the file's size.

    pydicom inflates such a file whole, even to read its header. Here, before it does: the first
    :data:`DICOM_INFLATED_HEADER_BYTES` (16 MiB, or the limit if smaller) are inflated and parsed
    up to the pixel data; the header's claim (rows x columns x frames x samples x bits) must fit
    the limit, and the whole stream may inflate to no more than the elements before the pixel
    data + that claim + 1 MiB (counted, nothing kept). Anything else is :class:`ScanTooLargeError`:
    a 0.5 MB file of zeros that inflates to 512 MiB is refused in a fraction of a second with
    memory bounded by those 16 MiB. Files with any other transfer syntax return at once.
    """
    import io
    import warnings

    from pydicom.filereader import read_dataset

    start = _deflated_stream_start(path)
    if start is None:
        return
    limit = effective_limit(max_scan_bytes)
    head_cap = min(DICOM_INFLATED_HEADER_BYTES, limit)
    # the elements before the pixel data: inflated 64 KiB first, 8x more while they go on (up to
    # head_cap), so a common header costs kilobytes, not the whole cap
    size = min(1 << 16, head_cap)
    while True:
        with open(path, "rb") as handle:
            handle.seek(start)
            try:
                head = inflate_bounded(zlib.decompressobj(-zlib.MAX_WBITS), handle, size + 1, path,
                                       "the deflated DICOM data", size + 1)
            except zlib.error as error:
                raise _unreadable(path, "dicom", error) from None
        more = len(head) > size and size < head_cap  # cut short here, and a larger look is allowed
        stopped: list[int] = []

        def at_pixels(tag, vr, length) -> bool:
            if int(tag) in _DICOM_PIXEL_TAGS:
                stopped.append(int(tag))  # noqa: B023 (called within this iteration only)
                return True
            return False

        stream = io.BytesIO(head)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a data set cut at the look's size ends mid-element
                ds = read_dataset(stream, is_implicit_VR=False, is_little_endian=True, stop_when=at_pixels)
                claimed = dicom_pixel_bytes(ds) if stopped else 0
        except Exception as error:
            if more:
                size = min(size * 8, head_cap)
                continue
            raise _unreadable(path, "dicom", error) from None
        if stopped or not more:
            break
        size = min(size * 8, head_cap)
    before_pixels = stream.tell() if stopped else len(head)
    if not stopped and len(head) > head_cap:
        raise ScanTooLargeError(f"{path}: the deflated DICOM data hold more than {_size_text(head_cap)} of "
                                "elements before any pixel data; refusing to inflate it")
    if stopped:
        check_claimed_size(path, claimed, f"the deflated DICOM header ({ds.get('Rows', '?')} rows x "
                           f"{ds.get('Columns', '?')} columns x {ds.get('NumberOfFrames', 1) or 1} frames, "
                           f"{ds.get('BitsAllocated', '?')} bits)", max_scan_bytes)
    allowed = before_pixels + (12 + claimed + 1 if stopped else 0) + _DICOM_TRAILER_BYTES
    with open(path, "rb") as handle:
        handle.seek(start)
        try:
            inflated = count_inflated(zlib.decompressobj(-zlib.MAX_WBITS), handle, allowed)
        except zlib.error as error:
            raise _unreadable(path, "dicom", error) from None
    if inflated > allowed:
        raise ScanTooLargeError(f"{path}: the deflated DICOM data inflate to more than {_size_text(allowed)}, "
                                f"beyond what its header describes ({claimed:,} bytes of pixel data); refusing to "
                                "read it")


def write_inflated_dicom(path: str | os.PathLike, target: str | os.PathLike, max_bytes: int,
                         name: str | None = None) -> bool:
    """Write a Deflated Explicit VR Little Endian file at ``path`` to ``target`` as plain Explicit VR Little Endian.

    Inflated in 1 MiB pieces straight to disk and counted, so later header and pixel reads never
    hold the whole inflated data set in memory (pydicom inflates a deflated file whole, per read).
    The data elements are unchanged; only the file meta's transfer syntax is.

    Args:
        path: the deflated file (anything else: nothing is written).
        target: where the plain file goes (created or replaced; removed again on a refusal).
        max_bytes: the most inflated bytes allowed (more: :class:`ScanTooLargeError`).
        name: how errors name the file (default: ``path``).

    Returns:
        Whether ``path`` was deflated (and ``target`` written).
    """
    import pydicom
    from pydicom.filebase import DicomFileLike
    from pydicom.filereader import read_preamble
    from pydicom.filewriter import write_file_meta_info
    from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

    with open(path, "rb") as source:
        try:
            read_preamble(source, False)
            meta = pydicom.filereader._read_file_meta_info(source)
        except Exception:
            return False  # no preamble: pydicom reports it as it reads (and does not inflate it)
        if str(meta.get("TransferSyntaxUID", "")) != DeflatedExplicitVRLittleEndian:
            return False
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        written = 0
        try:
            with open(target, "wb") as out:
                out.write(b"\0" * 128 + b"DICM")
                write_file_meta_info(DicomFileLike(out), meta, enforce_standard=True)
                while chunk := source.read(1 << 20):
                    pending = chunk
                    while pending:
                        piece = inflater.decompress(pending, 1 << 20)
                        pending = inflater.unconsumed_tail
                        written += len(piece)
                        if written > max_bytes:
                            raise ScanTooLargeError(f"{name or path}: the deflated DICOM data inflates to more than "
                                                    f"{max_bytes} bytes (max_scan_bytes); refusing to read it")
                        out.write(piece)
                        if inflater.eof:  # bytes after the stream's end (pydicom pads an odd-length one) are not data
                            break
                    if inflater.eof:
                        break
                out.write(inflater.flush())
        except zlib.error as error:
            os.unlink(target)
            raise _unreadable(name or path, "dicom", error) from None
        except BaseException:
            os.unlink(target)
            raise
    return True


@contextlib.contextmanager
def inflated_dicom(path: str | os.PathLike, max_scan_bytes: int | None = None) -> Iterator[str | None]:
    """Within the block: a plain (Explicit VR Little Endian) temp copy of a deflated DICOM file, else None.

    The copy lies in the system's temp folder and is removed on leaving the block; the inflated
    size is bounded by :func:`check_dicom_inflation` (run here first) and counted again while written.

    Args:
        path: a DICOM file (deflated or not).
        max_scan_bytes: the decoded-size limit (None: the limit in force).

    Returns:
        A context manager giving the copy's path, or None when ``path`` is not deflated.
    """
    import tempfile

    check_dicom_inflation(path, max_scan_bytes)
    if _deflated_stream_start(path) is None:
        yield None
        return
    limit = effective_limit(max_scan_bytes)
    handle, target = tempfile.mkstemp(prefix="radfm-inflated-", suffix=".dcm")
    os.close(handle)
    try:
        written = write_inflated_dicom(path, target, DICOM_INFLATED_HEADER_BYTES + limit + _DICOM_TRAILER_BYTES,
                                       name=str(path))
        yield target if written else None
    finally:
        if os.path.exists(target):
            os.unlink(target)


def check_dicom(path: str | os.PathLike, max_scan_bytes: int | None = None) -> HeaderCheck | None:
    """DICOM file: the deflate guard, then rows x columns x frames x samples x bits within the limit.

    Returns the header (without pixels) and its claim; None when pydicom cannot read it (the reader
    reports that with its own message).
    """
    import pydicom

    check_dicom_inflation(path, max_scan_bytes)
    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=True)
    except Exception:
        return None  # the reader reports an unreadable file with its own message
    claimed = dicom_pixel_bytes(ds)
    check_claimed_size(path, claimed, f"the DICOM header ({ds.get('Rows', '?')} rows x "
                       f"{ds.get('Columns', '?')} columns x {ds.get('NumberOfFrames', 1)} frames, "
                       f"{ds.get('BitsAllocated', '?')} bits)", max_scan_bytes)
    return HeaderCheck(ds, claimed)


_NRRD_COMPRESSED = {"gzip": "gzip", "gz": "gzip", "bzip2": "bzip2", "bz2": "bzip2"}


def read_nrrd_bounded(path: str | os.PathLike, max_scan_bytes: int | None = None, checked: HeaderCheck | None = None):
    """``nrrd.read`` with the checks above and a gzip/bzip2 body inflated only as far as the header says.

    The header is parsed once, by pynrrd's parser inside :func:`check_nrrd` (here, or earlier by
    the caller, which passes that check as ``checked``); the data are read from the byte after it. pynrrd inflates a compressed body whole before comparing it with the
    header; here at most the claimed size (plus the byte skip) is inflated, so a small file
    cannot expand to gigabytes. ``byte skip: -1`` (data at the end of the file) is allowed for
    raw data only, as the NRRD format says. Errors never state the data file's own size.
    Returns ``(array, header)`` like ``nrrd.read`` (Fortran index order).
    """
    import bz2
    import io

    import nrrd
    import numpy as np
    from nrrd.reader import _determine_datatype

    path = Path(path)
    checked = checked if checked is not None else check_nrrd(path, max_scan_bytes)
    header, header_size = checked.header, checked.header_bytes
    encoding = _NRRD_COMPRESSED.get(str(header.get("encoding", "")).lower())
    dtype = _determine_datatype(header)
    wanted = int(np.prod(np.asarray(header["sizes"], dtype=np.int64))) * dtype.itemsize
    described = f"{' x '.join(str(int(s)) for s in header['sizes'])} {header.get('type')} = {wanted:,} bytes"
    try:
        skip = int(header.get("byteskip", header.get("byte skip", 0)) or 0)
        line_skip = int(header.get("lineskip", header.get("line skip", 0)) or 0)
    except (TypeError, ValueError):
        raise ScanReadError(f"{path}: NRRD byte skip / line skip are not integers") from None
    if skip < -1 or line_skip < 0 or (skip == -1 and encoding is not None):
        raise ScanReadError(f"{path}: NRRD byte skip {skip} / line skip {line_skip} with encoding "
                            f"{header.get('encoding')!r}; expected skips >= 0 (byte skip -1 only for raw data)")
    with open(path, "rb") as handle:
        handle.seek(header_size)
        if encoding is None:
            try:
                return nrrd.read_data(header, handle, str(path)), header
            except Exception as error:  # the library's text may state the data file's size: not repeated
                raise ScanReadError(f"{path}: the NRRD data do not match the header ({described}; "
                                    f"{type(error).__name__}); expected data of that size") from None
        datafile = header.get("datafile", header.get("data file"))
        source = handle if datafile is None else open(
            datafile if os.path.isabs(datafile) else os.path.join(os.path.dirname(str(path)), datafile), "rb")
        try:
            for _ in range(line_skip):
                source.readline()
            decompressor = zlib.decompressobj(zlib.MAX_WBITS | 16) if encoding == "gzip" else bz2.BZ2Decompressor()
            try:
                payload = inflate_bounded(decompressor, source, skip + wanted, path, f"the NRRD {encoding} body",
                                          max_scan_bytes)[skip:]
            except ScanReadError:
                raise
            except Exception as error:
                raise ScanReadError(f"{path}: the NRRD {encoding} body cannot be inflated "
                                    f"({type(error).__name__})") from None
        finally:
            if source is not handle:
                source.close()
    if len(payload) != wanted:
        raise ScanReadError(f"{path}: the NRRD {encoding} body is shorter than the header describes ({described})")
    raw = {k: v for k, v in header.items() if k not in ("datafile", "data file", "lineskip", "line skip",
                                                        "byteskip", "byte skip")}
    raw["encoding"] = "raw"
    return nrrd.read_data(raw, io.BytesIO(payload), str(path)), header


__all__ = ["DEFAULT_MAX_SCAN_BYTES", "MAX_HEADER_BYTES", "HeaderCheck", "ScanTooLargeError", "check_claimed_size", "check_dicom",
           "check_dicom_inflation", "check_metaimage", "check_nifti", "check_nrrd", "check_numpy", "check_picture",
           "effective_limit", "read_metaimage_header", "read_nrrd_bounded", "read_nrrd_header",
           "scan_size_limit"]
