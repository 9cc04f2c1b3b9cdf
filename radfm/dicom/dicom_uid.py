"""The one check of a DICOM UID string for the node (C-STORE and DICOMweb pull).

``re.fullmatch`` and not ``re.match(...$)``: ``$`` also matches before a trailing newline, so
``"1.2.3\\n"`` passed the node's old pattern (and passes pydicom's ``UID.is_valid``, which uses the
same ``$``). A UID becomes a folder name in the spool, so a newline must never get through.
"""

from __future__ import annotations

import re
from typing import Any

_UID_CHARS = re.compile(r"[0-9]+(?:\.[0-9]+)*")
MAX_UID_LENGTH = 64  # DICOM PS3.5 9.1


def is_dicom_uid(value: Any) -> bool:
    """Whether ``value`` is a string of digit groups joined by dots, at most 64 characters, nothing else.

    Args:
        value: anything read from a header or a DICOMweb answer.

    Returns:
        True for e.g. ``"1.2.840.10008.1.2"``; False for non-strings, ``""``, ``"1.2.3\\n"``, ``"../etc"``.
    """
    return isinstance(value, str) and len(value) <= MAX_UID_LENGTH and _UID_CHARS.fullmatch(value) is not None
