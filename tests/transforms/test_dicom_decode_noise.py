"""A scan that reads fine prints nothing about the decoders that could not read it (issue 31, item 7).

pydicom's 12-bit JPEG Extended file: Pillow (pydicom's only plugin for it here) refuses 12-bit
samples, pydicom logs that refusal as an ERROR with a traceback, and GDCM inside ITK then decodes
it after its 8-bit codec printed "Unsupported JPEG data precision 12" on fd 2. The read succeeds, so
none of that may reach the user; a file nothing can decode still fails naming pydicom's reasons.
"""

from __future__ import annotations

import subprocess
import sys

READ = r"""
import logging, sys
logging.basicConfig(level=logging.INFO)  # as the CLI, the service and the Deploy app log
import pydicom
from pydicom.data import get_testdata_file
from radfm.transforms import ScanReadError, preprocess_scan

print(tuple(preprocess_scan(get_testdata_file("JPEG-lossy.dcm")).shape), flush=True)
sys.stderr.write("--- the broken file\n")
sys.stderr.flush()
from pydicom.encaps import encapsulate
broken = pydicom.dcmread(get_testdata_file("JPEG-lossy.dcm"))
broken.PixelData = encapsulate([b"\0" * 4096])  # one fragment, no JPEG in it
broken.save_as(sys.argv[1])
try:
    preprocess_scan(sys.argv[1])
except ScanReadError as error:
    print("refused:", error, flush=True)
"""


def test_a_12_bit_jpeg_decoded_by_the_fallback_prints_no_decoder_noise_and_a_broken_one_still_fails(tmp_path):
    run = subprocess.run([sys.executable, "-c", READ, str(tmp_path / "broken.dcm")], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.splitlines()[0] == "(3, 512, 512, 4)"
    success = run.stderr.split("--- the broken file")[0]
    for noise in ("Pillow does not support", "Unsupported JPEG data precision", "Invalid SOS parameters",
                  "Traceback", "NotImplementedError"):
        assert noise not in success, success[-3000:]
    refused = run.stdout.split("\n", 1)[1]  # the error names every plugin, one per line
    assert refused.startswith("refused: ") and "broken.dcm: cannot decode the DICOM pixel data" in refused
    assert "Pillow does not support 'JPEG Extended' for samples with 12-bit precision" in refused  # pydicom's reason
