"""RSS of `radfm serve` held by the chat page's kept scans (issue 28, S4).

    python scripts/bench_chat_kept_scans.py [--max_kept_scan_mb 16] [--uploads 4] [--model DIR]

Builds a small .nii.gz whose volume is 60 MiB (512 x 512 x 120 int16, mostly zeros, so the file
is a few hundred KiB), starts the service in a subprocess (the demo model unless ``--model``)
with ``--max_kept_scan_mb``, uploads it ``--uploads`` times to ``POST /chat/api/scans`` one after
the other and prints one JSON line: the service's RSS (with children) when idle and after each
upload, each upload's status, and how many uploads are still kept (their slice renders).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from service_process import rss_with_children as _rss
from service_process import running_service


def _volume(path: Path) -> int:
    """Write the 60 MiB volume as .nii.gz; returns the file's size in bytes."""
    import nibabel as nib

    volume = np.zeros((512, 512, 120), np.int16)
    volume[128:384, 128:384, 30:90] = 300  # a cube of "tissue": the file stays small
    nib.save(nib.Nifti1Image(volume, np.diag([0.7, 0.7, 2.0, 1.0])), path)
    return path.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max_kept_scan_mb", type=int, default=16)
    parser.add_argument("--uploads", type=int, default=4)
    parser.add_argument("--model", default=None, help="model folder (default: the demo model)")
    args = parser.parse_args()
    if args.max_kept_scan_mb < 1 or args.uploads < 1:
        parser.error("--max_kept_scan_mb and --uploads must be >= 1")

    folder = Path(tempfile.mkdtemp(prefix="radfm-bench-kept-"))
    scan = folder / "volume.nii.gz"
    size = _volume(scan)
    flags = ["--max_kept_scan_mb", str(args.max_kept_scan_mb)] + (["--model", args.model] if args.model else [])
    try:
        with running_service(flags, folder) as (process, url):
            time.sleep(1.0)
            idle = _rss(process)
            data, statuses, rss, ids = scan.read_bytes(), [], [], []
            for index in range(args.uploads):
                reply = httpx.post(f"{url}/chat/api/scans", files=[("files", (f"v{index}.nii.gz", data))], timeout=600)
                statuses.append(reply.status_code)
                if reply.status_code == 200:
                    ids += [item["id"] for item in reply.json()["scans"]]
                time.sleep(0.5)
                rss.append(round(_rss(process) / 2**20))
            kept = sum(httpx.get(f"{url}/chat/api/scans/{i}/slice.png", timeout=60).status_code == 200 for i in ids)
            print(json.dumps({
                "file_kib": round(size / 1024), "volume_mib": 60, "max_kept_scan_mb": args.max_kept_scan_mb,
                "idle_rss_mib": round(idle / 2**20), "rss_after_each_upload_mib": rss,
                "held_over_idle_mib": rss[-1] - round(idle / 2**20), "statuses": statuses, "kept": kept,
            }))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
