"""Property tests of the detached-data guard (issue 22, Build 6): generated NRRD and MetaImage headers.

For each generated header (field spellings and case, separators, line endings, BOMs and other
bytes before the magic, stray bytes, padding, comment lines up to past the 1 MiB header limit,
``LIST`` and pattern forms, byte and line skips), a secret file is planted outside the header's
folder and the *real* reader is run on the header without our guard: pynrrd's ``nrrd.read``
(with a Python audit hook recording every file it opens) for NRRD, ITK's MetaImageIO for
MetaImage (the secret's bytes coming back as pixels show it was read). Whenever that reader
opens the secret, the guard must have refused the header first. When the guard accepts, our
own read path (``read_scan``) runs too and must not return or mention the secret.

``RADFM_GUARD_EXAMPLES`` sets the number of examples per property (200 here in CI;
``scripts/guard_property_run.py`` runs 10,000 and more).
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from radfm.transforms import ScanReadError, read_scan
from radfm.transforms.formats import detect_format

EXAMPLES = int(os.environ.get("RADFM_GUARD_EXAMPLES", "200"))
SIDE = 16
# a 16 x 16 uint8 image and 37 bytes more: its size (293) is no size a header here claims
SECRET = bytes((7 * i + 3) % 251 for i in range(SIDE * SIDE + 37))
PROPERTY_SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=EXAMPLES <= 200, database=None,
                             suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                    HealthCheck.large_base_example])

_opened: list[str] | None = None


def _audit(event: str, args: tuple) -> None:
    if _opened is not None and event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        _opened.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)  # audit hooks cannot be removed; it records only inside _recording_opens


@contextlib.contextmanager
def _recording_opens():
    global _opened
    _opened = []
    try:
        yield _opened
    finally:
        _opened = None


@contextlib.contextmanager
def _planted():
    """(scan folder, secret path): the secret lives next to the scan folder, never inside it."""
    with tempfile.TemporaryDirectory(prefix="guard-prop-") as top:
        top = Path(top)
        (top / "host").mkdir()
        secret = top / "host" / "secret1"
        secret.write_bytes(SECRET)
        scans = top / "scans"
        scans.mkdir()
        (scans / "inside.raw").write_bytes(bytes(SIDE * SIDE))  # a legitimate detached data file
        (scans / "link.raw").symlink_to(secret)  # inside by name, outside once resolved
        yield scans, secret


def _targets(secret_dir: str) -> st.SearchStrategy[str]:
    """Data-file values; ``{S}`` is the secret's absolute path, ``{R}`` its path relative to the scan folder."""
    return st.sampled_from([
        "{S}", "{R}", "{S}", "{R}", "inside.raw", "inside.raw", "inside.raw", "link.raw", "inside.raw", "./inside.raw", "../scans/inside.raw", "LIST\n{S}", "LIST\n{R}",
        "LIST 2\n{S}", "../host/secret%d 1 1 1", "../host/secret%01d 1 1 1", "../host/secre%c 116 116 1",
        "{S} ", " {S}", "'{S}'", "\"{S}\"", "{S}\x00", "inside.raw\n{S}", "//{S}", "{S}/.", "LOCAL",
    ])


def _mostly(usual, unusual: list) -> st.SearchStrategy:
    """``usual`` about two times in three, else one of ``unusual``: headers mostly valid, one or two parts odd."""
    return st.one_of(st.just(usual), st.just(usual), st.sampled_from(unusual))


_STRAY = [b"\x80", b"\xff", b"\xef\xbb\xbf", b"\x00", b"\r", b"\x0b", b"\x0c", b"\x1c", b"\x85", b"\xa0", b"\t", b" "]
_PREFIXES = [b"", b"", b"", b"\xef\xbb\xbf", b"\xfe\xff", b"\x00", b" ", b"\n", b"\r\n", b"#\n"]


@st.composite
def nrrd_headers(draw) -> tuple[bytes, str]:
    """(header bytes with {S}/{R} placeholders as bytes, a short description)."""
    eol = draw(st.sampled_from([b"\n", b"\r\n"]))
    magic = draw(_mostly(b"NRRD0004", [b"NRRD0005", b"NRRD0001", b"nrrd0004", b"NRRD0004 ", b"NRRD0006"]))
    field = draw(_mostly(b"data file", [
        b"datafile", b"Data File", b"DATAFILE", b"data  file", b"data_file", b"data\x80 file",
        b"data file ", b" data file", b"\xefdatafile", b"data\tfile", b"da\x00ta file", b"datafile\x80",
    ]))
    separator = draw(_mostly(b": ", [b":", b":=", b" : ", b":\t", b"=", b": =", b"::"]))
    value = draw(_targets("")).encode()
    stray = draw(_mostly(b"", _STRAY))
    stray_at = draw(st.integers(0, len(field)))
    field = field[:stray_at] + stray + field[stray_at:]
    encoding = draw(st.sampled_from([b"raw", b"raw", b"gzip", b"RAW"]))
    skips = draw(st.sampled_from([b"", b"", b"byte skip: -1", b"byteskip: -1", b"byte skip: 0", b"byte skip: 16",
                                  b"line skip: 1", b"byte skip: -2"]))
    comments = draw(st.sampled_from([0, 0, 0, 1, 5, 200, 110_000]))  # 110,000 x 10 bytes: past the 1 MiB limit
    lines = [b"type: uint8", b"dimension: 2", f"sizes: {SIDE} {SIDE}".encode(), b"encoding: " + encoding]
    if skips:
        lines.append(skips)
    data_line = field + separator + value
    position = draw(st.integers(0, len(lines)))
    lines.insert(position, data_line)
    if draw(st.booleans()):
        lines.insert(draw(st.integers(0, len(lines))), b"custom key:=" + value)
    body = b"# padding" + eol
    header = draw(_mostly(b"", _PREFIXES)) + magic + eol + body * comments + eol.join(lines) + eol
    return header, f"{field!r}{separator!r}{value[:40]!r} comments={comments}"


@st.composite
def metaimage_headers(draw) -> tuple[bytes, str]:
    eol = draw(_mostly(b"\n", [b"\r\n", b"\r"]))
    key = draw(_mostly(b"ElementDataFile", [
        b"elementdatafile", b"ELEMENTDATAFILE", b"ElementDatafile", b"Element DataFile",
        b"ElementDataFile ", b" ElementDataFile", b"\tElementDataFile", b"Element_Data_File",
    ]))
    separator = draw(_mostly(b" = ", [b" : ", b"=", b": ", b":", b" =", b"\t=\t", b" == ", b"\t:"]))
    value = draw(_targets("")).encode()
    stray = draw(_mostly(b"", _STRAY))
    stray_at = draw(st.integers(0, len(key)))
    key = key[:stray_at] + stray + key[stray_at:]
    fields = [b"ObjectType = Image", b"NDims = 2", f"DimSize = {SIDE} {SIDE}".encode(), b"ElementType = MET_UCHAR"]
    if draw(st.booleans()):
        fields.append(b"HeaderSize = -1")  # read the last bytes of the data file: any size works
    padding = draw(st.sampled_from([0, 0, 0, 1, 120_000]))
    if padding:
        fields.insert(0, b"Comment = " + b"x" * (10 * padding))
    if draw(st.integers(0, 3)) == 0:  # a decoy first: which of two data-file lines does each parser take?
        fields.append(draw(st.sampled_from([b"ElementDataFile = inside.raw", b"elementdatafile = inside.raw",
                                            b"ElementDataFile : inside.raw"])))
        fields.insert(draw(st.integers(0, len(fields) - 1)), key + separator + value)
    else:
        fields.append(key + separator + value)
    header = draw(_mostly(b"", _PREFIXES)) + eol.join(fields) + eol
    return header, f"{key!r}{separator!r}{value[:40]!r}"


def _materialise(header: bytes, scans: Path, secret: Path, name: str) -> Path:
    relative = os.path.relpath(secret, scans).encode()
    data = header.replace(b"{S}", str(secret).encode()).replace(b"{R}", relative)
    path = scans / name
    path.write_bytes(data + (bytes(SIDE * SIDE) if b"LOCAL" in data else b""))
    return path


def _guard_refuses(path: Path) -> bool:
    try:
        detect_format(path).check(path)
    except ScanReadError:
        return True
    return False


def _our_read_leaks(path: Path) -> bool:
    """Our whole read path: nothing of the secret in the pixels or in an error message."""
    try:
        image = read_scan(path)
    except ScanReadError as error:
        text = str(error)
        return SECRET[:24].decode("latin-1") in text or f"{len(SECRET):,}" in text or f" {len(SECRET)} " in text
    pixels = np.ascontiguousarray(image.numpy()).tobytes()
    return SECRET[:32] in pixels or SECRET[-32:] in pixels


def _pynrrd_opens_outside(path: Path, scans: Path) -> bool:
    import nrrd

    folder = scans.resolve()
    with _recording_opens() as opened, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            nrrd.read(str(path))
        except Exception:
            pass
    return any(not Path(os.path.abspath(name)).resolve().is_relative_to(folder) for name in opened)


def _itk_reads_secret(path: Path) -> bool:
    import itk

    try:
        image = itk.imread(str(path), imageio=itk.MetaImageIO.New())
    except Exception:
        return False
    pixels = np.ascontiguousarray(itk.array_view_from_image(image)).tobytes()
    return SECRET[:32] in pixels or SECRET[-32:] in pixels


def _holds(case: tuple[bytes, str], name: str, reader: str) -> None:
    """The property: the bare ``reader`` ("pynrrd" or "itk") reads the secret only through headers the guard refused."""
    header, what = case
    with _planted() as (scans, secret):
        path = _materialise(header, scans, secret, name)
        refused = _guard_refuses(path)
        leaks = _pynrrd_opens_outside(path, scans) if reader == "pynrrd" else _itk_reads_secret(path)
        assert refused or not leaks, f"guard let through a header {reader} reads outside its folder: {what}"
        if not refused:
            assert not _our_read_leaks(path), what


@PROPERTY_SETTINGS
@given(nrrd_headers(), st.sampled_from(["scan.nhdr", "scan.nrrd"]))
def test_nrrd_guard_refuses_whatever_pynrrd_would_read_outside(case, name):
    _holds(case, name, "pynrrd")


@PROPERTY_SETTINGS
@given(metaimage_headers(), st.sampled_from(["scan.mhd", "scan.mha"]))
def test_metaimage_guard_refuses_whatever_itk_would_read_outside(case, name):
    _holds(case, name, "itk")


@pytest.mark.parametrize("header,name", [
    (b"NRRD0004\ntype: uint8\ndimension: 2\nsizes: 16 16\nencoding: raw\ndata\x80 file: {S}\n", "a.nhdr"),  # (a)
    (b"NRRD0004\n" + b"# padding\n" * 110_000 + b"type: uint8\ndimension: 2\nsizes: 16 16\nencoding: raw\n"
     b"data file: {S}\n", "b.nhdr"),  # (b) the data-file line after more than 1 MiB of comments
    (b"\xef\xbb\xbfNRRD0004\ntype: uint8\ndimension: 2\nsizes: 16 16\nencoding: raw\ndata file: {S}\n", "c.nrrd"),  # (c)
    (b"ObjectType = Image\nNDims = 2\nDimSize = 16 16\nElementType = MET_UCHAR\nElementDataFile : {S}\n", "d.mhd"),  # (d)
    (b"NRRD0004\ntype: uint8\ndimension: 2\nsizes: 99 99\nencoding: raw\nbyte skip: -1\ndata file: {S}\n", "e.nhdr"),  # (e)
    # found by this property test: MetaIO skips a second '=' ("== /path" names /path)
    (b"ObjectType = Image\nNDims = 2\nDimSize = 16 16\nElementType = MET_UCHAR\nElementDataFile == {S}\n", "f.mhd"),
])
def test_the_reported_bypasses_are_refused(header, name):
    """The five variants of 22-H1 as reported: each reader would read the secret; the guard refuses first."""
    with _planted() as (scans, secret):
        path = _materialise(header, scans, secret, name)
        if name.endswith(".mhd"):
            assert _itk_reads_secret(path)  # the attack works against the bare reader ...
        elif not name.startswith("e"):
            assert _pynrrd_opens_outside(path, scans)
        assert _guard_refuses(path)  # ... and the guard stops it
        with pytest.raises(ScanReadError) as refused:
            read_scan(path)
        assert f"{len(SECRET)}" not in str(refused.value) and f"{len(SECRET):,}" not in str(refused.value)
