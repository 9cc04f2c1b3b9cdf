"""Peak memory of ``preprocess_scan`` on an honest deflated multi-frame DICOM, in a fresh process per case.

    python scripts/measure_dicom_memory.py --sizes 1024 2048 4096 --frames 16

Each case writes a Deflated Explicit VR Little Endian file of ``frames`` x ``size`` x ``size``
uint16 pixels (``hostile_files.deflated_multiframe_dicom``: real values, about 0.5-3 MB on disk),
then runs ``radfm.transforms.preprocess_scan`` on it in a new Python process. The peak is
measured from after the imports and a first call on a small file of the same kind (which loads
the modules the readers import lazily) to the end of the call (the kernel's high-water mark
``VmHWM``, reset through ``/proc/self/clear_refs``), and printed against the decoded size
(rows x columns x frames x 2 bytes). Linux only. ``--json FILE`` keeps the rows.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hostile_files import deflated_multiframe_dicom  # noqa: E402

# run in the child: imports first, then the peak is reset and only the call is measured
CHILD = r"""
import json, sys, time
from radfm.transforms import preprocess_scan

def status(name):
    for line in open("/proc/self/status"):
        if line.startswith(name + ":"):
            return int(line.split()[1]) * 1024

preprocess_scan(sys.argv[3])  # a small file of the same kind first: the lazy imports are not the scan's cost
before = status("VmRSS")
with open("/proc/self/clear_refs", "w") as handle:
    handle.write("5")  # reset the peak RSS (VmHWM) to the current RSS
start = time.perf_counter()
image = preprocess_scan(sys.argv[1], max_scan_bytes=int(sys.argv[2]))
seconds = time.perf_counter() - start
print(json.dumps({"rss_before": before, "peak": status("VmHWM"), "seconds": seconds,
                  "shape": list(image.shape)}))
"""


def measure(path: Path, decoded: int) -> dict:
    """Run the child on ``path``; its JSON line plus the peak above the RSS before the call.

    Args:
        path: the DICOM file, or a folder holding it (read as a series).
        decoded: its decoded pixel bytes (the scan limit is set just above it).

    Returns:
        ``rss_before``, ``peak``, ``seconds``, ``shape`` and ``extra`` (peak - rss_before) in bytes.
    """
    warm_up = path.with_name(path.stem + "-warm-up")  # a folder for a folder, a file for a file
    small = warm_up / "small.dcm" if path.is_dir() else warm_up
    small.parent.mkdir(exist_ok=True)
    deflated_multiframe_dicom(small, 64, 64, 4)
    try:
        run = subprocess.run([sys.executable, "-c", CHILD, str(path), str(decoded + (64 << 20)), str(warm_up)],
                             capture_output=True, text=True, timeout=1800)
    finally:
        small.unlink()
        if path.is_dir():
            warm_up.rmdir()
    if run.returncode != 0:
        raise SystemExit(f"preprocess_scan failed on {path}:\n{run.stderr[-3000:]}")
    row = json.loads(run.stdout.strip().splitlines()[-1])
    row["extra"] = row["peak"] - row["rss_before"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048], help="rows = columns of each case")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--json", default=None, help="write the rows here")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="radfm-dicom-memory-") as folder:
        for size in args.sizes:
            path = deflated_multiframe_dicom(Path(folder) / f"mf{size}.dcm", size, size, args.frames)
            decoded = size * size * args.frames * 2
            started = time.perf_counter()
            row = measure(path, decoded)
            row.update(size=size, frames=args.frames, file_bytes=path.stat().st_size, decoded=decoded,
                       ratio=row["extra"] / decoded, wall=time.perf_counter() - started)
            rows.append(row)
            path.unlink()
            print(f"{args.frames} x {size}x{size} uint16: file {row['file_bytes'] / 1024:.0f} KiB, decoded "
                  f"{decoded / 2**20:.0f} MiB; peak above the imports {row['extra'] / 2**20:.0f} MiB = "
                  f"{row['ratio']:.2f}x decoded; preprocess_scan {row['seconds']:.1f} s -> {row['shape']}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
