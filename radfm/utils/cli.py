"""Helpers for fire command lines."""

from __future__ import annotations


def as_list(value: object) -> list[str]:
    """A fire list argument as a list of non-empty strings.

    fire hands a list over as a list or tuple (``--x a,b`` or ``--x '[a,b]'``), as a plain string
    (``"a,b"``, or ``"[a,b]"`` when it could not parse it) or as a scalar (``--x 3``); ``None``
    means not given. Commas inside items are split too, and stray quotes are dropped.
    """
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [part for item in value for part in as_list(item)]
    text = str(value).strip()
    if text.startswith("[") and text.endswith("]"):  # '[a.jsonl,b.jsonl]' that fire left as a string
        text = text[1:-1]
    parts = (part.strip().strip("'\"") for part in text.split(","))
    return [part for part in parts if part]
