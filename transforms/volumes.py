"""Picking one volume of a 4D scan: a ``[t]`` suffix on the path (``fmri.nii.gz[3]``).

The suffix is part of the path string, so it works wherever a scan path is accepted (``radfm
generate``, manifests, bundle configs, the processor, ``read_scan``): the readers strip it and
read volume ``t`` (counted from 0) of a 4D NIfTI. A file whose own name ends in ``[t]`` is read
as that file. ``radfm generate --volume N`` adds the suffix to every path given without one.
"""

from __future__ import annotations

import os
import re

_SUFFIX = re.compile(r"^(?P<file>.+)\[(?P<volume>[0-9]+)\]$")


def split_volume(path: str | os.PathLike) -> tuple[str, int | None]:
    """``(file, t)`` for ``"file[t]"`` naming an existing file; ``(path, None)`` otherwise.

    Args:
        path: a scan path, maybe with a ``[t]`` suffix.

    Returns:
        The file to read and the volume index (``None``: no suffix, read the scan whole).
    """
    text = os.fspath(path)
    match = _SUFFIX.match(text)
    if match is None or os.path.lexists(text) or not os.path.exists(match["file"]):
        return text, None
    return match["file"], int(match["volume"])


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


__all__ = ["split_volume", "with_volume"]
