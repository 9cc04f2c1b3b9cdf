"""Atomic file output: a reader never sees a half-written file.

Everything is written to a hidden temporary file in the target's folder and then renamed onto
the target (a rename within one folder is atomic). On any error the temporary file is removed
and the target is left as it was.

An existing target that is not a regular file (a symlink, even to a regular file; a FIFO, a
socket, a device, a folder) is refused with :class:`OutputNotRegularFileError` before anything is
written: a rename would silently replace the link or special file itself (not write through
it), and writing through a link would let an ``--output`` reach a file somewhere else.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

# a compression suffix alone does not tell a writer the format (".nii.gz" must not become ".gz")
_COMPRESSION_SUFFIXES = {".gz", ".bz2", ".xz", ".zst"}


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp makes 0600 files; the result gets the mode a plain open() would give it instead
_NEW_FILE_MODE = 0o666 & ~_current_umask()


def _format_suffix(path: Path) -> str:
    """The suffix the temp file keeps, for writers that pick the format from the name (PIL, matplotlib, nibabel)."""
    if path.suffix in _COMPRESSION_SUFFIXES:
        return "".join(path.suffixes[-2:])
    return path.suffix


class OutputNotRegularFileError(FileExistsError):
    """An output path exists and is not a regular file (symlink, FIFO, socket, device, folder)."""


_KINDS = ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def check_output_target(path: str | os.PathLike) -> None:
    """Refuse an existing ``path`` that is not a regular file (the link itself is looked at, not its target).

    Raises :class:`OutputNotRegularFileError` naming the path and what it is; a missing path is fine.
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISREG(mode):
        return
    kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
    raise OutputNotRegularFileError(f"{path}: the output exists and is {kind}; refusing to replace it "
                                    "(remove it or choose another output path)")


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed onto ``path``, on error removed.

    For writers that want a file name (``torch.save``, ``figure.savefig``, ``dataset.save_as``).
    The parent folder is created if missing. An existing ``path`` that is not a regular file is
    refused (:func:`check_output_target`), before and again right before the rename.
    """
    path = Path(path)
    check_output_target(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{_format_suffix(path)}")
    os.close(handle)
    temp = Path(temp_name)
    try:
        os.chmod(temp, _NEW_FILE_MODE)
        yield temp
        check_output_target(path)  # it may have appeared while the writer ran
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)  # only still there if something failed


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", encoding: str = "utf-8") -> Iterator[IO]:
    """``open(path, mode)`` for writing, made atomic: the file appears complete or not at all.

    ``mode`` is ``"w"`` (text, ``encoding``) or ``"wb"`` (bytes).
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open mode must be 'w' or 'wb', got {mode!r}")
    with atomic_path(path) as temp:
        with open(temp, mode, encoding=None if "b" in mode else encoding) as stream:
            yield stream


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically; returns ``path`` as a Path."""
    with atomic_open(path, "w", encoding=encoding) as stream:
        stream.write(text)
    return Path(path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path`` as a Path."""
    with atomic_open(path, "wb") as stream:
        stream.write(data)
    return Path(path)


def read_text(path: str | os.PathLike, encoding: str = "utf-8") -> str:
    """The text of ``path``; bytes that are not ``encoding`` raise ``ValueError`` naming the file, line and column.

    (A bare ``UnicodeDecodeError`` names neither the file nor the line.)
    """
    data = Path(path).read_bytes()
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
        raise ValueError(f"{path}:{line}: not {encoding.upper().replace('-SIG', '')} text "
                         f"(byte 0x{data[error.start]:02x} at column {column}); save the file as UTF-8") from None
