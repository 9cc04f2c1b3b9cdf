"""Picking one volume of a 4D scan: a ``[t]`` suffix on the path (``fmri.nii.gz[3]``).

The suffix is part of the path string, so it works wherever a scan path is accepted (``radfm
generate``, manifests, bundle configs, the processor, ``read_scan``): the readers strip it and
read volume ``t`` (counted from 0) of a 4D NIfTI. A file whose own name ends in ``[t]`` is read
as that file. ``radfm generate --volume N`` adds the suffix to every path given without one.
Uploads (``/v1/answer``, the chat page, the OpenAI route) take it at the end of the file's name
as sent (``radfm.answering.scans.save_scan``, by :func:`split_suffix`).
"""

from __future__ import annotations

import os
import re

_SUFFIX = re.compile(r"^(?P<file>.+)\[(?P<volume>[0-9]{1,9})\]$")  # bounded: int() of 5000 digits raises


def split_suffix(name: str) -> tuple[str, int | None]:
    """``(name, t)`` for a name ending in ``[t]`` (digits only), ``(name, None)`` otherwise; no file is looked at.

    Args:
        name: a path or an upload's file name.

    Returns:
        The name without the suffix and the volume index (``None``: no suffix).
    """
    match = _SUFFIX.match(name)
    return (name, None) if match is None else (match["file"], int(match["volume"]))


def split_volume(path: str | os.PathLike) -> tuple[str, int | None]:
    """``(file, t)`` for ``"file[t]"`` naming an existing file; ``(path, None)`` otherwise.

    Args:
        path: a scan path, maybe with a ``[t]`` suffix.

    Returns:
        The file to read and the volume index (``None``: no suffix, read the scan whole).
    """
    text = os.fspath(path)
    file, volume = split_suffix(text)
    if volume is None or os.path.lexists(text) or not os.path.exists(file):
        return text, None
    return file, volume


def with_volume(path: str | os.PathLike, volume: int | None) -> str:
    """``path`` with the suffix ``[volume]`` (unchanged when ``volume`` is None or the path has a suffix).

    Args:
        path: a scan path.
        volume: the volume index to pick, or None.

    Returns:
        The path to hand to the readers.
    """
    text = os.fspath(path)
    if volume is None or split_volume(text)[1] is not None:
        return text
    return f"{text}[{int(volume)}]"


__all__ = ["split_suffix", "split_volume", "with_volume"]
