"""Progress bars that stay readable in a log file: tqdm options for a terminal or a redirected stream.

On a terminal tqdm redraws one line with ``\\r``. Redirected to a file (``> train.log``,
a batch scheduler, CI) those redraws pile up as one endless line of ``\\r``-joined bars;
:func:`tqdm_options` then makes tqdm write a plain line at most every ``interval`` seconds.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


class LineStream:
    """A text stream for tqdm that turns redraws (``\r`` + bar) into plain lines, at most one per ``interval`` s.

    tqdm redraws on every ``set_postfix`` (ignite's bar sets the loss each iteration), whatever its
    ``mininterval``; so the rate is kept here. A redraw within ``interval`` of the last line is held
    back and written when the bar is cleared or closed (an empty write), so each bar's last state shows.
    """

    def __init__(self, stream: TextIO, interval: float = 30.0) -> None:
        self.stream, self.interval = stream, interval
        self.last_written = float("-inf")
        self.pending: str | None = None

    def write(self, text: str) -> int:
        line = text.replace("\r", "").strip()
        now = time.monotonic()
        if not line:  # tqdm clears or ends its line: the bar is done (or paused), show where it stood
            if self.pending is not None:
                self._emit(self.pending, now)
        elif now - self.last_written >= self.interval:
            self._emit(line, now)
        else:
            self.pending = line
        return len(text)

    def _emit(self, line: str, now: float) -> None:
        self.stream.write(line + "\n")
        self.last_written, self.pending = now, None

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

    A terminal gets tqdm's defaults; anything else a :class:`LineStream` (at most one line per
    ``interval`` seconds, plus each bar's last state) and an ASCII bar of fixed width.
    """
    stream = sys.stderr if stream is None else stream
    if is_terminal(stream):
        return {}
    return {"file": LineStream(stream, interval), "ascii": True, "ncols": 100, "dynamic_ncols": False}
