"""The one error type of the preprocessing, and how to name the source of an image in it."""

from __future__ import annotations

from typing import Any


class ScanReadError(ValueError):
    """A scan could not be turned into a RadFM input; the message names the file and what was expected."""


class ScanTooLargeError(ScanReadError):
    """A scan whose decoded size (claimed by its header, or counted while inflating) exceeds ``max_scan_bytes``."""


def source_name(image: Any) -> str:
    """The file an image came from (``meta["filename_or_obj"]`` of a MetaTensor), or a generic label."""
    meta = getattr(image, "meta", None)
    if isinstance(meta, dict) and meta.get("filename_or_obj"):
        return str(meta["filename_or_obj"])
    return "<in-memory image>"
