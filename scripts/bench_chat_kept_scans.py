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
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import psutil


def _rss(process: psutil.Process) -> int:
    total = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            total += member.memory_info().rss
        except psutil.Error:
            pass
    return total


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
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "radfm.cli", "serve", "--port", str(port), "--device", "cpu",
               "--max_kept_scan_mb", str(args.max_kept_scan_mb)]
    command += ["--model", args.model] if args.model else []
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env={**os.environ, "TMPDIR": str(folder), "HF_HUB_OFFLINE": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
            if server.poll() is not None:
                raise SystemExit("the service did not start")
        process = psutil.Process(server.pid)
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
        server.terminate()
        server.wait(timeout=60)
        for path in sorted(folder.rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        folder.rmdir()


if __name__ == "__main__":
    main()
