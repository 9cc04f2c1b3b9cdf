"""Peak RSS of `radfm serve` while clients send deflated DICOM files that inflate to 512 MiB (issue 22, H2).

    python scripts/bench_hostile_service.py [--clients 3] [--inflate_mb 512] [--variant pixels|padding]

The file (transfer syntax Deflated Explicit VR Little Endian) is built by streaming zlib, so
this script never holds the inflated bytes either:

* ``pixels``: the header claims a 16384 x 16384 x 16-bit image (512 MiB) and the pixel data is
  there: a legitimately huge scan, under the default 2 GiB ``--max_scan_mb``;
* ``padding``: the header claims a 64 x 64 image, but a private element pads the inflated
  stream to 512 MiB (what an attacker sends).

The service (the demo model, default flags unless ``--max_scan_mb`` is given) runs in a
subprocess; its RSS (with children) is sampled every 20 ms from before the first request until
every client has its answer. Prints one JSON line: the idle and peak RSS, the statuses.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from service_process import rss_with_children as _rss
from service_process import running_service

DEFLATED = "1.2.840.10008.1.2.1.99"


def _element(group: int, element: int, vr: bytes, value: bytes) -> bytes:
    """One explicit VR little endian element (value padded to even length)."""
    if len(value) % 2:
        value += b"\0" if vr in (b"UI", b"OB") else b" "
    tag = group.to_bytes(2, "little") + element.to_bytes(2, "little")
    if vr in (b"OB", b"OW", b"UN", b"SQ", b"UT"):
        return tag + vr + b"\0\0" + len(value).to_bytes(4, "little") + value
    return tag + vr + len(value).to_bytes(2, "little") + value


def deflated_dicom(path: Path, inflate_bytes: int, variant: str) -> int:
    """Write the file; returns its size in bytes."""
    from pydicom.uid import generate_uid

    sop_class = b"1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture
    sop_uid = generate_uid().encode()
    meta_body = (_element(0x0002, 0x0001, b"OB", b"\0\1") + _element(0x0002, 0x0002, b"UI", sop_class)
                 + _element(0x0002, 0x0003, b"UI", sop_uid) + _element(0x0002, 0x0010, b"UI", DEFLATED.encode())
                 + _element(0x0002, 0x0012, b"UI", b"1.2.3.4"))
    meta = _element(0x0002, 0x0000, b"UL", len(meta_body).to_bytes(4, "little")) + meta_body
    side = 16384 if variant == "pixels" else 64
    pixel_bytes = side * side * 2 if variant == "pixels" else side * side * 2
    head = b"".join([
        _element(0x0008, 0x0016, b"UI", sop_class), _element(0x0008, 0x0018, b"UI", sop_uid),
        _element(0x0008, 0x0060, b"CS", b"OT"), _element(0x0010, 0x0010, b"PN", b"Bench^Hostile"),
        _element(0x0020, 0x000D, b"UI", generate_uid().encode()), _element(0x0020, 0x000E, b"UI", generate_uid().encode()),
        _element(0x0028, 0x0002, b"US", (1).to_bytes(2, "little")), _element(0x0028, 0x0004, b"CS", b"MONOCHROME2"),
        _element(0x0028, 0x0010, b"US", side.to_bytes(2, "little") if side < 65536 else b"\0\0"),
        _element(0x0028, 0x0011, b"US", side.to_bytes(2, "little")),
        _element(0x0028, 0x0100, b"US", (16).to_bytes(2, "little")), _element(0x0028, 0x0101, b"US", (16).to_bytes(2, "little")),
        _element(0x0028, 0x0102, b"US", (15).to_bytes(2, "little")), _element(0x0028, 0x0103, b"US", b"\0\0"),
    ])
    padding = max(0, inflate_bytes - pixel_bytes) if variant == "padding" else 0
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    zeros = b"\0" * (1 << 20)
    with path.open("wb") as out:
        out.write(b"\0" * 128 + b"DICM" + meta)
        out.write(compressor.compress(head))
        if padding:  # a private OB element (0009,1010) full of zeros
            out.write(compressor.compress(b"\x09\x00\x10\x00" + b"OB\0\0" + padding.to_bytes(4, "little")))
            for start in range(0, padding, len(zeros)):
                out.write(compressor.compress(zeros[: min(len(zeros), padding - start)]))
        out.write(compressor.compress(b"\xe0\x7f\x10\x00" + b"OW\0\0" + pixel_bytes.to_bytes(4, "little")))
        for start in range(0, pixel_bytes, len(zeros)):
            out.write(compressor.compress(zeros[: min(len(zeros), pixel_bytes - start)]))
        out.write(compressor.flush())
    return path.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--inflate_mb", type=int, default=512)
    parser.add_argument("--variant", choices=("pixels", "padding"), default="pixels")
    parser.add_argument("--max_scan_mb", type=int, default=None, help="the service's flag (default: its own)")
    parser.add_argument("--model", default=None, help="model folder (default: the demo model)")
    args = parser.parse_args()
    if args.clients < 1 or args.inflate_mb < 1:
        parser.error("--clients and --inflate_mb must be >= 1")

    folder = Path(tempfile.mkdtemp(prefix="radfm-bench-hostile-"))
    scan = folder / "deflated.dcm"
    size = deflated_dicom(scan, args.inflate_mb * 1024 * 1024, args.variant)
    flags = (["--model", args.model] if args.model else []) + (
        ["--max_scan_mb", str(args.max_scan_mb)] if args.max_scan_mb else [])
    try:
        with running_service(flags, folder) as (process, url):
            idle = _rss(process)
            peak = [idle]
            done = threading.Event()

            def sample() -> None:
                while not done.is_set():
                    peak[0] = max(peak[0], _rss(process))
                    time.sleep(0.02)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            data = scan.read_bytes()

            def send(index: int) -> tuple[int, str]:
                reply = httpx.post(f"{url}/v1/answer", data={"prompt": "Which modality?", "max_new_tokens": "4"},
                                   files=[("files", (f"c{index}.dcm", data))], timeout=600)
                return reply.status_code, reply.text[:160]

            started = time.perf_counter()
            with ThreadPoolExecutor(args.clients) as pool:
                replies = list(pool.map(send, range(args.clients)))
            seconds = time.perf_counter() - started
            done.set()
            sampler.join()
            print(json.dumps({
                "variant": args.variant, "clients": args.clients, "file_bytes": size, "inflates_to_mib": args.inflate_mb,
                "idle_rss_mib": round(idle / 2**20), "peak_rss_mib": round(peak[0] / 2**20),
                "peak_over_idle_mib": round((peak[0] - idle) / 2**20), "seconds": round(seconds, 1),
                "statuses": [status for status, _ in replies], "first_reply": replies[0][1],
            }))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
