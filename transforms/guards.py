"""Checks that run before any imaging library touches a scan file (hostile or careless input).

Two rules, applied by :func:`check_scan_file` (called by every reader of ``radfm.transforms``
and by the rating app) before ITK, nibabel, pynrrd, pydicom or Pillow reads pixel data:

1. **No detached data outside the header's folder.** NRRD ``data file:``/``datafile:`` (a
   single name, a ``printf``-style pattern with min/max/step, or ``LIST`` followed by names) and
   MetaImage ``ElementDataFile`` (name, pattern or ``LIST``; ``.mha`` included) must name files
   inside the folder of the header (symlinks and ``..`` resolved). Anything else is refused with
   :class:`ScanReadError` naming the header, so ``data file: /etc/passwd`` cannot turn a host
   file into pixels.
2. **A decompressed-size limit.** The size the header claims (dims x sample size: NIfTI, NRRD,
   MetaImage, DICOM rows x columns x frames x samples x bits, PNG/JPEG width x height x bands,
   ``.npy`` shape x dtype) must not exceed ``max_scan_bytes`` (default
   :data:`DEFAULT_MAX_SCAN_BYTES`, 2 GiB: a 512 x 512 x 4000 int16 CT fits). Where no header
   states the size, the stream is counted while it is inflated (NRRD gzip/bzip2 bodies,
   deflated DICOM). Refusals raise :class:`ScanTooLargeError` naming the file, the claimed size
   and the limit.

The limit is per call (``max_scan_bytes=`` on ``read_scan``/``preprocess_scan``/``LoadScan``) or
for a block of code (``with scan_size_limit(n): ...``, used by the service for its uploads).
"""

from __future__ import annotations

import contextlib
import contextvars
import gzip
import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

from .errors import ScanReadError, ScanTooLargeError

DEFAULT_MAX_SCAN_BYTES = 2 * 1024**3  # 2 GiB of decoded voxels
_HEADER_BYTES = 1 << 20  # header text scanned for data-file fields (NRRD / MetaImage)
_MAX_PATTERN_FILES = 100_000  # a data-file pattern naming more files than this is refused
_DEFLATED_DICOM = "1.2.840.10008.1.2.1.99"

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
# detached data files
# ---------------------------------------------------------------------------------------------

def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _check_data_names(header: Path, names: list[str], field: str) -> None:
    """Every detached data file must resolve inside the header's own folder."""
    folder = Path(os.path.dirname(os.path.abspath(header))).resolve()
    if not names:
        raise ScanReadError(f"{header}: header field {field} names no data file")
    for name in names:
        name = name.strip()
        if not name:
            raise ScanReadError(f"{header}: header field {field} has an empty file name")
        target = Path(name) if os.path.isabs(name) else folder / name
        try:
            resolved = target.resolve()
        except (OSError, RuntimeError) as error:  # symlink loops and the like
            raise ScanReadError(f"{header}: header field {field} names {name!r}, which cannot be resolved "
                                f"({error})") from None
        if not _inside(resolved, folder):
            raise ScanReadError(f"{header}: header field {field} names the data file {name!r}, outside the "
                                "header's folder; refusing to read it (keep detached data next to its header)")


def _pattern_names(header: Path, field: str, value: str) -> list[str] | None:
    """``"<printf pattern> <min> <max> <step> [<subdim>]"`` -> the file names, or None if not a pattern."""
    parts = value.split()
    if len(parts) < 4 or "%" not in parts[0]:
        return None
    try:
        low, high, step = int(parts[1]), int(parts[2]), int(parts[3])
    except ValueError:
        return None
    if step == 0 or (high - low) // step + 1 > _MAX_PATTERN_FILES:
        raise ScanReadError(f"{header}: header field {field} pattern {value!r} names too many files "
                            f"(more than {_MAX_PATTERN_FILES:,}) or has step 0")
    stop = high + (1 if step > 0 else -1)
    try:
        return [parts[0] % index for index in range(low, stop, step)]
    except (TypeError, ValueError):
        raise ScanReadError(f"{header}: header field {field} has an unusable file pattern {parts[0]!r}") from None


def _header_lines(path: Path) -> list[str]:
    with open(path, "rb") as handle:
        text = handle.read(_HEADER_BYTES).decode("latin-1")
    return text.split("\n")


def check_nrrd_data_files(path: str | os.PathLike) -> None:
    """Refuse an NRRD header whose ``data file`` (single, pattern or LIST) leaves its folder."""
    path = Path(path)
    lines = _header_lines(path)
    if not lines or not lines[0].startswith("NRRD"):
        return  # not an NRRD header: pynrrd will refuse it with its own error
    for number, line in enumerate(lines[1:], start=1):
        line = line.rstrip("\r")
        if line == "":
            return  # end of the header
        if line.startswith("#") or ":" not in line:
            continue
        field, value = line.split(":", 1)
        if field.strip().lower() not in ("data file", "datafile"):
            continue
        value = value.removeprefix("=").strip()  # also a "data file:=" key/value pair, to be safe
        label = f"'{field.strip()}'"
        if value.upper().startswith("LIST"):
            names = [n.rstrip("\r") for n in lines[number + 1:] if n.strip()]
        else:
            names = _pattern_names(path, label, value) or [value]
        _check_data_names(path, names, label)


_META_SIZES = {"CHAR": 1, "UCHAR": 1, "SHORT": 2, "USHORT": 2, "INT": 4, "UINT": 4, "LONG": 8, "ULONG": 8,
               "LONG_LONG": 8, "ULONG_LONG": 8, "FLOAT": 4, "DOUBLE": 8}


def check_metaimage(path: str | os.PathLike, max_scan_bytes: int | None = None) -> None:
    """MetaImage (.mha/.mhd): ``ElementDataFile`` stays in the folder; DimSize x ElementType within the limit."""
    path = Path(path)
    lines = _header_lines(path)
    fields: dict[str, str] = {}
    for number, line in enumerate(lines):
        if "=" not in line:
            continue
        key, value = (part.strip() for part in line.rstrip("\r").split("=", 1))
        fields[key.lower()] = value
        if key.lower() == "elementdatafile":  # the last field; binary data (or a LIST) follows
            if value.upper() == "LOCAL":
                break
            if value.upper().startswith("LIST"):
                names = [n.rstrip("\r") for n in lines[number + 1:] if n.strip()]
            else:
                names = _pattern_names(path, "ElementDataFile", value) or [value]
            _check_data_names(path, names, "ElementDataFile")
            break
    try:
        dims = [int(v) for v in fields.get("dimsize", "").split()]
        channels = int(fields.get("elementnumberofchannels", "1") or 1)
    except ValueError:
        raise ScanReadError(f"{path}: MetaImage DimSize/ElementNumberOfChannels are not integers") from None
    if not dims:
        return  # ITK refuses it with its own message
    element = fields.get("elementtype", "").upper().removeprefix("MET_").removesuffix("_ARRAY")
    voxels = 1
    for dim in dims:
        voxels *= max(dim, 0)
    check_claimed_size(path, voxels * max(channels, 1) * _META_SIZES.get(element, 8),
                       f"the MetaImage header (DimSize {' x '.join(map(str, dims))}, {element or '?'})", max_scan_bytes)


def check_nrrd(path: str | os.PathLike, max_scan_bytes: int | None = None) -> dict:
    """NRRD: detached data stays in the folder; sizes x type within the limit. Returns pynrrd's header."""
    import nrrd
    import numpy as np

    check_nrrd_data_files(path)
    with open(path, "rb") as handle:
        header = nrrd.read_header(handle)
    sizes = [int(s) for s in np.asarray(header.get("sizes", []), dtype=np.int64).reshape(-1)]
    itemsize = 8
    try:
        from nrrd.reader import _determine_datatype

        itemsize = _determine_datatype(header).itemsize
    except Exception:  # unknown type: pynrrd refuses it when reading
        pass
    voxels = 1
    for size in sizes:
        voxels *= max(size, 0)
    check_claimed_size(path, voxels * itemsize, f"the NRRD header (sizes {' x '.join(map(str, sizes))}, "
                       f"type {header.get('type', '?')})", max_scan_bytes)
    return header


def _open_maybe_gzip(path: Path):
    with open(path, "rb") as handle:
        magic = handle.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")


def check_nifti(path: str | os.PathLike, max_scan_bytes: int | None = None) -> None:
    """NIfTI-1/2 (.nii, .nii.gz): vox_offset + dims x bitpix within the limit, read from the raw header."""
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
    sizes = {struct.unpack("<i", block[:4])[0], struct.unpack(">i", block[:4])[0]}
    try:
        if 540 in sizes and len(block) >= 540:
            header = nib.Nifti2Header(binaryblock=block[:540], check=False)
        else:
            header = nib.Nifti1Header(binaryblock=block[:348], check=False)
        shape = header.get_data_shape()
        itemsize = header.get_data_dtype().itemsize
        offset = int(header["vox_offset"])
    except Exception as error:  # an invalid header: nibabel explains when it reads
        raise _unreadable(path, "nifti", error) from None
    voxels = 1
    for size in shape:
        voxels *= max(int(size), 0)
    check_claimed_size(path, max(offset, 0) + voxels * itemsize,
                       f"the NIfTI header (shape {' x '.join(map(str, shape))}, {itemsize}-byte voxels, "
                       f"vox_offset {offset})", max_scan_bytes)


def check_numpy(path: str | os.PathLike, max_scan_bytes: int | None = None) -> None:
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


_PIL_BAND_BYTES = {"I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2, "I": 4, "F": 4}
ALLOWED_PIL_FORMATS = ("PNG", "JPEG")


def check_picture(path: str | os.PathLike, max_scan_bytes: int | None = None,
                  formats: tuple[str, ...] = ALLOWED_PIL_FORMATS) -> None:
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
    check_claimed_size(path, width * height * bands * _PIL_BAND_BYTES.get(mode, 1),
                       f"the image header ({width} x {height}, mode {mode})", max_scan_bytes)


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


def check_dicom_inflation(path: str | os.PathLike, max_scan_bytes: int | None = None) -> None:
    """A Deflated Explicit VR DICOM file is inflated whole by pydicom: count its size first (nothing kept)."""
    limit = effective_limit(max_scan_bytes)
    size = os.path.getsize(path)
    if size * 1032 <= limit:  # deflate cannot expand more than ~1032:1
        return
    try:
        from pydicom.filereader import _read_file_meta_info, read_preamble

        with open(path, "rb") as handle:
            read_preamble(handle, False)
            meta = _read_file_meta_info(handle)
            if str(meta.get("TransferSyntaxUID", "")) != _DEFLATED_DICOM:
                return
            inflated = count_inflated(zlib.decompressobj(-zlib.MAX_WBITS), handle, limit)
    except ScanReadError:
        raise
    except Exception:  # not DICOM with a preamble: pydicom reports it (and does not inflate it)
        return
    if inflated > limit:
        raise ScanTooLargeError(f"{path}: the deflated DICOM data inflates to more than {_size_text(limit)} "
                                f"(max_scan_bytes); refusing to read it")


def check_dicom(path: str | os.PathLike, max_scan_bytes: int | None = None) -> None:
    """DICOM file: the deflate guard, then rows x columns x frames x samples x bits within the limit."""
    import pydicom

    check_dicom_inflation(path, max_scan_bytes)
    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=True)
    except Exception:
        return  # the reader reports an unreadable file with its own message
    check_claimed_size(path, dicom_pixel_bytes(ds), f"the DICOM header ({ds.get('Rows', '?')} rows x "
                       f"{ds.get('Columns', '?')} columns x {ds.get('NumberOfFrames', 1)} frames, "
                       f"{ds.get('BitsAllocated', '?')} bits)", max_scan_bytes)


def check_scan_file(path: str | os.PathLike, fmt: str, max_scan_bytes: int | None = None) -> None:
    """Run the checks for ``fmt`` (as :func:`radfm.transforms.readers.scan_format` names it) on ``path``.

    DICOM series folders are checked by the series reader (per file while listing, then the
    whole volume), so nothing happens here for ``dicom_series``.
    """
    effective_limit(max_scan_bytes)  # a bad limit fails before any file is opened
    if fmt == "nifti":
        check_nifti(path, max_scan_bytes)
    elif fmt == "nrrd":
        try:
            check_nrrd(path, max_scan_bytes)
        except ScanReadError:
            raise
        except Exception as error:  # pynrrd's header errors
            raise _unreadable(path, "nrrd", error) from None
    elif fmt == "itk":
        check_metaimage(path, max_scan_bytes)
    elif fmt == "image":
        check_picture(path, max_scan_bytes)
    elif fmt == "numpy":
        check_numpy(path, max_scan_bytes)
    elif fmt == "dicom":
        check_dicom(path, max_scan_bytes)


_NRRD_COMPRESSED = {"gzip": "gzip", "gz": "gzip", "bzip2": "bzip2", "bz2": "bzip2"}


def read_nrrd_bounded(path: str | os.PathLike, max_scan_bytes: int | None = None):
    """``nrrd.read`` with the checks above and a gzip/bzip2 body inflated only as far as the header says.

    pynrrd inflates a compressed body whole before comparing it with the header; here at most
    the claimed size (plus the byte skip) is inflated, so a small file cannot expand to gigabytes.
    Returns ``(array, header)`` like ``nrrd.read`` (Fortran index order).
    """
    import bz2
    import io

    import nrrd
    import numpy as np
    from nrrd.reader import _determine_datatype

    path = Path(path)
    header = check_nrrd(path, max_scan_bytes)
    encoding = _NRRD_COMPRESSED.get(str(header.get("encoding", "")).lower())
    with open(path, "rb") as handle:
        nrrd.read_header(handle)
        if encoding is None:
            return nrrd.read_data(header, handle, str(path)), header
        datafile = header.get("datafile", header.get("data file"))
        source = handle if datafile is None else open(
            datafile if os.path.isabs(datafile) else os.path.join(os.path.dirname(str(path)), datafile), "rb")
        try:
            for _ in range(int(header.get("lineskip", header.get("line skip", 0)) or 0)):
                source.readline()
            dtype = _determine_datatype(header)
            wanted = int(np.prod(np.asarray(header["sizes"], dtype=np.int64))) * dtype.itemsize
            skip = int(header.get("byteskip", header.get("byte skip", 0)) or 0)
            decompressor = zlib.decompressobj(zlib.MAX_WBITS | 16) if encoding == "gzip" else bz2.BZ2Decompressor()
            what = f"the NRRD {encoding} body"
            if skip == -1:  # the data are the last bytes of the inflated stream: inflate all, within the limit
                limit = effective_limit(max_scan_bytes)
                payload = inflate_bounded(decompressor, source, limit + 1, path, what, limit + 1)
                if len(payload) > limit:
                    raise ScanTooLargeError(f"{path}: the NRRD {encoding} body inflates to more than "
                                            f"{_size_text(limit)} (max_scan_bytes); refusing to read it")
                payload = payload[len(payload) - wanted:] if len(payload) >= wanted else payload
            else:
                payload = inflate_bounded(decompressor, source, max(skip, 0) + wanted, path, what, max_scan_bytes)
                payload = payload[max(skip, 0):]
        finally:
            if source is not handle:
                source.close()
    if len(payload) != wanted:
        raise ScanReadError(f"{path}: the NRRD {encoding} body holds {len(payload):,} bytes where the header "
                            f"describes {wanted:,}")
    raw = {k: v for k, v in header.items() if k not in ("datafile", "data file", "lineskip", "line skip",
                                                        "byteskip", "byte skip")}
    raw["encoding"] = "raw"
    return nrrd.read_data(raw, io.BytesIO(payload), str(path)), header


__all__ = ["DEFAULT_MAX_SCAN_BYTES", "ScanTooLargeError", "check_claimed_size", "check_scan_file", "effective_limit",
           "read_nrrd_bounded", "scan_size_limit"]
