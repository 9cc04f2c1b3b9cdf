"""Peak RSS of the MONAI Deploy app on a CT series, with and without an honest deflated instance beside it (D1).

    RADFM_DEPLOY_PYTHON=.venv-deploy/bin/python python scripts/measure_deploy_input.py --size 4096 --frames 16

The input folder holds a synthetic CT series (32 slices of 128 x 128) and, in the second run, a
Deflated Explicit VR Little Endian multi-frame instance (modality OT, ``frames`` x ``size`` x
``size`` uint16: 512 MiB of pixels in a few MB at the defaults) that no rule selects. Each run is
the app (demo model, ``--max_new_tokens 4``) as the only child of a fresh wrapper process, whose
``RUSAGE_CHILDREN`` peak is the app's peak RSS.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the lab: tests/support, not installed
from hostile_files import deflated_multiframe_dicom  # noqa: E402

WRAPPER = ("import resource, subprocess, sys; run = subprocess.run(sys.argv[1:], capture_output=True); "
           "print(run.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)")


def peak_of_app(deploy_python: str, given: Path, out: Path) -> tuple[int, int]:
    """(exit status, peak RSS in bytes) of one app run on ``given``."""
    run = subprocess.run([sys.executable, "-c", WRAPPER, deploy_python, "-m", "radfm.deploy.deploy_app",
                          "-i", str(given), "-o", str(out), "--max_new_tokens", "4"],
                         capture_output=True, text=True, timeout=1800, cwd=out.parent)
    status, peak = run.stdout.split()
    return int(status), int(peak)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--frames", type=int, default=16)
    args = parser.parse_args()
    deploy_python = os.environ.get("RADFM_DEPLOY_PYTHON")
    if not deploy_python:
        raise SystemExit("set RADFM_DEPLOY_PYTHON (make install-deploy builds .venv-deploy/bin/python)")
    from support.synthetic import write_ct_series

    with tempfile.TemporaryDirectory(prefix="radfm-deploy-input-") as folder:
        given = Path(folder) / "in"
        write_ct_series(given / "ct", slices=32, size=128)
        status, alone = peak_of_app(deploy_python, given, Path(folder) / "out1")
        print(f"CT series alone: exit {status}, peak RSS {alone / 2**30:.2f} GiB", flush=True)
        (given / "other").mkdir()
        deflated = deflated_multiframe_dicom(given / "other" / "deflated.dcm", args.size, args.size, args.frames)
        decoded = args.size * args.size * args.frames * 2
        status, both = peak_of_app(deploy_python, given, Path(folder) / "out2")
        print(f"CT series + deflated instance ({deflated.stat().st_size / 1024:.0f} KiB, {decoded / 2**20:.0f} MiB "
              f"of pixels, no rule selects it): exit {status}, peak RSS {both / 2**30:.2f} GiB "
              f"(+{(both - alone) / 2**20:.0f} MiB)")


if __name__ == "__main__":
    main()
