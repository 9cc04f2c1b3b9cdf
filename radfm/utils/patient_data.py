"""Keep patient data (PatientName, PatientID, birth date) out of every log and warning stream.

The libraries that read and write our DICOM echo attribute values in their messages: highdicom
warns ``The string "PLA" is unlikely to represent the intended person name`` for every
single-component name it copies into an SR, pydicom warns ``Invalid value for VR DA: '1970-02-03'.``
on reading and raises ``Unable to convert '1970-02-03' to 'DA' object``. Those messages reach the
node's log, ``radfm serve``'s log, the Deploy app's output and the CLI's stderr.

:func:`install` (run once, on ``import radfm``) withholds those values wherever the message ends up:

* every log record (any logger: the libraries' own, ``py.warnings`` and ours, including the
  formatted traceback of ``logger.exception``) is redacted when it is created
  (``logging.setLogRecordFactory``);
* every warning is redacted before it is shown (``warnings._showwarnmsg``, which hands it on to
  whatever ``showwarning``/``formatwarning`` is in place: the default printing to stderr,
  ``logging.captureWarnings``, ITK's formatter, a recorder).

Both hooks are process-wide and installed once, so they hold on every thread (the node's
association threads, the service's reading pool); ``warnings.catch_warnings`` would not (it is
not thread-safe). The wording around the value is kept, so a message still says what was wrong.
"""

from __future__ import annotations

import logging
import re
import threading
import warnings

__all__ = ["WITHHELD", "install", "redact"]

WITHHELD = "<withheld>"

# (pattern, replacement): the messages of pydicom and highdicom that carry an attribute's value.
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # highdicom.valuerep.check_person_name
    (re.compile(r'The string ".*?" is unlikely to represent the intended person name', re.S),
     f"The string {WITHHELD} is unlikely to represent the intended person name"),
    # highdicom.base: value of argument "patient_name" is potentially invalid: "..."
    (re.compile(r'(value of argument "\w+" is potentially invalid: ).*', re.S), rf"\1{WITHHELD}"),
    # pydicom.valuerep.validate_regex and friends: Invalid value for VR DA: '1970-02-03'.
    (re.compile(r"(Invalid value for VR [A-Z]{2}: ).*?(\.?)$", re.S | re.M), rf"\1{WITHHELD}\2"),
    # pydicom DS/IS: Value "x" is not valid for elements with a VR of IS
    (re.compile(r'Value ".*?" (is not valid for elements with a VR of)', re.S), rf"Value {WITHHELD} \1"),
    # pydicom DA/DT/TM: Unable to convert '1970-02-03' to 'DA' object
    (re.compile(r"Unable to convert '.*?' to '([A-Z]{2})' object", re.S), rf"Unable to convert {WITHHELD} to '\1' object"),
)

_lock = threading.Lock()
_installed = False


def redact(text: str) -> str:
    """``text`` with the attribute values of pydicom's and highdicom's known messages withheld.

    Args:
        text: a log message, warning text or formatted traceback.

    Returns:
        The text, each echoed value replaced by ``<withheld>``.
    """
    if not isinstance(text, str) or not text:
        return text
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _redacted_record(record: logging.LogRecord) -> logging.LogRecord:
    """The record with its message (and traceback text) redacted; formatted once here when it changes."""
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001 — a bad format string is logging's own error to report later
        return record
    clean = redact(message)
    if clean != message:
        record.msg, record.args = clean, ()
    if record.exc_info and not record.exc_text:
        text = logging.Formatter().formatException(record.exc_info)
        clean = redact(text)
        if clean != text:
            record.exc_text = clean
    return record


def _redacted_warning(message: warnings.WarningMessage) -> warnings.WarningMessage:
    """The warning with its text redacted (the same category, place and source line)."""
    text = str(message.message)
    clean = redact(text)
    if clean == text:
        return message
    try:
        warning = message.category(clean)
    except Exception:  # noqa: BLE001 — a category that takes other arguments: keep the text, drop the class
        warning = UserWarning(clean)
    return warnings.WarningMessage(warning, message.category, message.filename, message.lineno, message.file,
                                   message.line, message.source)


def install() -> None:
    """Redact patient values in every log record and warning of this process (idempotent, thread-safe)."""
    global _installed
    with _lock:
        if _installed:
            return
        make_record = logging.getLogRecordFactory()

        def record_factory(*args, **kwargs) -> logging.LogRecord:
            return _redacted_record(make_record(*args, **kwargs))

        logging.setLogRecordFactory(record_factory)
        # ``warnings`` hands every warning it shows to ``_showwarnmsg`` (its C core looks it up on each
        # call), before ``showwarning``/``formatwarning``, which libraries replace (ITK replaces
        # ``formatwarning`` on import, ``logging.captureWarnings`` replaces ``showwarning``)
        show = warnings._showwarnmsg

        def showwarnmsg(message: warnings.WarningMessage) -> None:
            show(_redacted_warning(message))

        warnings._showwarnmsg = showwarnmsg
        _installed = True
