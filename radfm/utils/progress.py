"""Progress bars that stay readable in a log file: tqdm options for a terminal or a redirected stream.

On a terminal tqdm redraws one line with ``\\r``. Redirected to a file (``> train.log``,
a batch scheduler, CI) those redraws pile up as one endless line of ``\\r``-joined bars;
:func:`tqdm_options` then makes tqdm write a plain line at most every ``interval`` seconds.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO


class LineStream:
    """A text stream for tqdm that turns each redraw (``\\r`` + bar) into one plain line."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        line = text.replace("\r", "").strip()
        if line:
            self.stream.write(line + "\n")
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def is_terminal(stream: TextIO | None) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


def tqdm_options(stream: TextIO | None = None, interval: float = 30.0) -> dict[str, Any]:
    """Keyword arguments for ``tqdm(...)`` (or ignite's ``ProgressBar``) writing to ``stream`` (default stderr).

    A terminal gets tqdm's defaults; anything else a :class:`LineStream`, an ASCII bar of fixed
    width and at most one line per ``interval`` seconds (plus the last one).
    """
    stream = sys.stderr if stream is None else stream
    if is_terminal(stream):
        return {}
    return {"file": LineStream(stream), "mininterval": interval, "maxinterval": max(interval, 10.0), "ascii": True,
            "ncols": 100, "dynamic_ncols": False}
