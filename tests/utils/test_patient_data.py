"""radfm.utils.patient_data: the values pydicom and highdicom quote are withheld from logs and warnings,
on every thread, whoever replaced ``showwarning``/``formatwarning``."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest


@pytest.mark.parametrize("message, expected", [
    ('The string "PLA" is unlikely to represent the intended person name since it contains only a single component.',
     "The string <withheld> is unlikely to represent the intended person name since it contains only a single component."),
    ('value of argument "patient_name" is potentially invalid: "John Smith"',
     'value of argument "patient_name" is potentially invalid: <withheld>'),
    ("Invalid value for VR DA: '1970-02-03'.", "Invalid value for VR DA: <withheld>."),
    ("Invalid value for VR LO: 'MRN\\x01 4711'.\nnext line", "Invalid value for VR LO: <withheld>.\nnext line"),
    ('Value "1e400" is not valid for elements with a VR of DS', "Value <withheld> is not valid for elements with a VR of DS"),
    ("ValueError: Unable to convert '1970-02-03' to 'DA' object", "ValueError: Unable to convert <withheld> to 'DA' object"),
    ("job 3: series 1.2.3 answered by rule ct", "job 3: series 1.2.3 answered by rule ct"),  # nothing to withhold
])
def test_redact_withholds_the_quoted_value_and_keeps_the_wording(message, expected):
    from radfm.utils.patient_data import redact

    assert redact(message) == expected


# A process of its own: the real stderr, logging configured as `radfm node` does, a library that
# replaces warnings.formatwarning after import (ITK does), warnings sent to logging, and a worker thread.
_SCRIPT = textwrap.dedent("""
    import logging, sys, threading, warnings
    import radfm  # installs the hooks
    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr, format="%(name)s %(levelname)s %(message)s")
    warnings.formatwarning = lambda message, *args, **kwargs: f"{message}\\n"  # as ITK does on import
    warnings.simplefilter("always")

    def work():
        warnings.warn('The string "PLA" is unlikely to represent the intended person name since ...')
        logging.getLogger("pydicom").warning("Invalid value for VR DA: %r.", "1970-02-03")
        try:
            raise ValueError("Unable to convert '1970-02-03' to 'DA' object")
        except ValueError:
            logging.getLogger("radfm.node").exception("job 1 failed")

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    logging.captureWarnings(True)  # warnings through the py.warnings logger
    warnings.warn('The string "John Smith" is unlikely to represent the intended person name since ...')
""")


def test_warnings_and_log_records_of_any_thread_reach_stderr_withheld():
    run = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    for value in ("PLA", "John Smith", "1970-02-03"):
        assert value not in run.stderr, run.stderr
    assert run.stderr.count("<withheld>") == 4, run.stderr  # two warnings, a log record, a traceback
    assert "job 1 failed" in run.stderr and "Traceback" in run.stderr
