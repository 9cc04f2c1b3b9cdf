"""Decompression bombs a few MB on disk: peak RSS of a fresh process reading them stays under 1 GiB.

The bombs are built here without ever holding their inflated size in memory: a gzip member of
64 MiB of zeros (about 64 KiB compressed) repeated, or a deflate block flushed with
``Z_FULL_FLUSH`` and repeated inside one gzip member (what pynrrd would inflate whole).
"""

from __future__ import annotations

import gzip
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from hostile_files import deflated_dicom_bomb  # noqa: E402  (the sweep writes the same files)

CHUNK = 64 * 1024**2
GIB = 1024**3


def _zero_members(total: int) -> bytes:
    """Concatenated gzip members inflating to ``total`` bytes of zeros (gzip readers read on through members)."""
    member = gzip.compress(bytes(CHUNK), compresslevel=9, mtime=0)
    return member * (total // CHUNK)


def _one_member_of_zeros(prefix: bytes, total: int) -> bytes:
    """One gzip member: ``prefix`` then ``total`` zeros (the repeated flushed block is byte-identical)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    head = compressor.compress(prefix) + compressor.flush(zlib.Z_FULL_FLUSH)
    block = compressor.compress(bytes(CHUNK)) + compressor.flush(zlib.Z_FULL_FLUSH)
    tail = compressor.flush(zlib.Z_FINISH)
    trailer = struct.pack("<II", 0, (len(prefix) + total) & 0xFFFFFFFF)  # CRC left wrong: never reached
    return b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + head + block * (total // CHUNK) + tail + trailer


def _nifti_header(shape: tuple[int, ...]) -> bytes:
    import nibabel as nib

    header = nib.Nifti1Header()
    header.set_data_dtype(np.int16)
    header["dim"] = [len(shape), *shape, *([1] * (7 - len(shape)))]
    header["vox_offset"] = 352
    return header.binaryblock + b"\x00" * 4


@pytest.fixture(scope="module")
def bombs(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bombs")
    paths = {
        # claims 2048 x 1024 x 1024 int16 = 4 GiB; the body inflates to 2 GiB of zeros
        "nifti_claims_huge": folder / "claims_huge.nii.gz",
        # honest 256 x 256 x 64 int16 (8 MiB), then 2 GiB more of zeros in further gzip members
        "nifti_honest_header": folder / "honest.nii.gz",
        # honest 256 x 256 x 64 int16 NRRD whose single gzip body inflates to 2 GiB
        "nrrd_honest_header": folder / "honest.nrrd",
    }
    paths["nifti_claims_huge"].write_bytes(gzip.compress(_nifti_header((2048, 1024, 1024)), mtime=0)
                                           + _zero_members(2 * GIB))
    paths["nifti_honest_header"].write_bytes(gzip.compress(_nifti_header((256, 256, 64)) + bytes(256 * 256 * 64 * 2),
                                                           mtime=0) + _zero_members(2 * GIB))
    nrrd_header = (b"NRRD0004\ntype: int16\ndimension: 3\nspace dimension: 3\n"
                   b"space directions: (1,0,0) (0,1,0) (0,0,1)\nspace origin: (0,0,0)\nsizes: 256 256 64\n"
                   b"endian: little\nencoding: gzip\n\n")
    paths["nrrd_honest_header"].write_bytes(nrrd_header + _one_member_of_zeros(b"", 2 * GIB))
    for path in paths.values():
        assert path.stat().st_size < 8 * 1024**2, path  # "a few MB on disk"
    return paths


_READ_IN_FRESH_PROCESS = r"""
import json, resource, sys
from radfm.transforms import ScanReadError, preprocess_scan
outcome = {}
for path in sys.argv[1:]:
    try:
        image = preprocess_scan(path)
        outcome[path] = "read " + str(tuple(image.shape))
    except ScanReadError as error:
        outcome[path] = "refused: " + str(error)
# VmHWM is the peak RSS of this process image; ru_maxrss would carry over the forking parent's peak
hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM:")]
outcome["peak_rss_bytes"] = int(hwm[0].split()[1]) * 1024 if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps(outcome))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="peak RSS read from /proc/self/status (Linux)")
def test_gzip_bombs_keep_peak_rss_under_1_gib(bombs):
    result = subprocess.run([sys.executable, "-c", _READ_IN_FRESH_PROCESS, *map(str, bombs.values())],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    huge = outcome[str(bombs["nifti_claims_huge"])]
    assert huge.startswith("refused") and "claims 4,294,967,648 bytes" in huge and "over the limit" in huge
    assert outcome[str(bombs["nifti_honest_header"])] == "read (3, 256, 256, 64)"  # the trailing members are never read
    assert outcome[str(bombs["nrrd_honest_header"])] == "read (3, 256, 256, 64)"  # only 8 MiB are inflated
    assert outcome["peak_rss_bytes"] < GIB, outcome


_DICOM_IN_FRESH_PROCESS = r"""
import json, sys
from radfm.transforms import ScanReadError, preprocess_scan, read_scan

def rss(field):
    return int([l for l in open("/proc/self/status") if l.startswith(field)][0].split()[1]) * 1024

before = rss("VmRSS:")
try:
    read_scan(sys.argv[1])
    outcome = "read"
except ScanReadError as error:
    outcome = "refused: " + str(error)
print(json.dumps({"outcome": outcome, "rss_before": before, "peak": rss("VmHWM:")}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="peak RSS read from /proc/self/status (Linux)")
def test_small_deflated_dicom_inflating_to_512_mib_is_refused_with_bounded_memory(tmp_path):
    """22-H2: a ~0.5 MB deflated DICOM inflating to 512 MiB was not checked (files under ~2 MB were skipped
    under the default 2 GiB limit) and pydicom inflated it whole; now it is refused, memory grows < 64 MiB."""
    path = deflated_dicom_bomb(tmp_path / "bomb.dcm", 512 * 1024**2)
    assert 400_000 < path.stat().st_size < 1_100_000, path.stat().st_size
    result = subprocess.run([sys.executable, "-c", _DICOM_IN_FRESH_PROCESS, str(path)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    assert measured["outcome"].startswith("refused") and "beyond what its header describes (64 bytes" in \
        measured["outcome"], measured
    # the deflated data are counted, never kept: the read adds little to what the imports took
    assert measured["peak"] - measured["rss_before"] < 64 * 1024**2, measured
