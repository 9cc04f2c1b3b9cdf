"""The node's memory while a DICOMweb server sends one multipart part that never ends (issue 28, P3).

    python scripts/bench_node_pull.py                              # 1536 MiB offered, max_instance_mb 8
    python scripts/bench_node_pull.py --send_mb 256 --pythonpath OLD_TREE   # another checkout's radfm

A hostile DICOMweb server (``support.dicomweb_lab``, on 127.0.0.1) lists one study and
answers its WADO-RS request with one part of ``--send_mb`` MiB and no closing boundary. The node
runs in a subprocess (``NodeRunner`` with its Storage SCP, sealer, sender and pull loop; a stub
answerer, so no model is loaded: nothing is answered here) with ``max_instance_mb`` 8. Its RSS is
sampled with psutil every 10 ms: idle (started, its first search waiting on the server) and
while the part streams, plus the kernel's peak (VmHWM). Prints Markdown: the bytes the server
got out (what the node read, with what sat in socket buffers), idle and peak RSS, and whether
the peak stayed within ``max_instance_mb`` + 256 MiB of the idle node.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the lab: tests/support, not installed

MiB = 1024 * 1024
CHILD = r"""
import json, sys, threading
from radfm.node.node_config import NodeConfig
from radfm.node.node_runner import NodeRunner
from radfm.answering.identity import ModelIdentity

class NoModel:  # the pull never reaches a model here: the one study is refused
    identity = ModelIdentity("none", "0", "0" * 64)
    max_images = 1
    def prepare(self, paths): raise RuntimeError("not used")
    def answer(self, prompt, images, options): raise RuntimeError("not used")

import radfm.transforms.guards, pydicom, dicomweb_client  # loaded before "idle" is measured
node = NodeRunner(NodeConfig.from_file(sys.argv[1]), answerer=NoModel())
node.start()
print("started", flush=True)
threading.Event().wait()
"""


def _vm_hwm(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def main(argv: list[str] | None = None) -> int:
    import psutil
    from support.dicomweb_lab import BOUNDARY, HostileDicomweb, Reply, endless_part, qido_answer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--send_mb", type=int, default=1536, help="MiB the server offers in the one endless part")
    parser.add_argument("--max_instance_mb", type=int, default=8)
    parser.add_argument("--pythonpath", default=None, help="a checkout whose radfm the node runs (default: this one)")
    parser.add_argument("--max_s", type=float, default=300.0, help="give up after this long")
    args = parser.parse_args(argv)

    study = "1.2.826.0.1.3680043.8.498.777"
    go = threading.Event()

    def search(_path: str) -> Reply:
        go.wait()  # the node's first search waits here while its idle memory is measured
        return Reply(200, [("Content-Type", "application/dicom+json")], [qido_answer([study])], "length")

    wado = f"/dicom-web/studies/{study}"
    server = HostileDicomweb({
        "/dicom-web/studies": search,
        wado: lambda _p: Reply(200, [("Content-Type", f'multipart/related; type="application/dicom"; '
                                                       f'boundary={BOUNDARY}')], endless_part(args.send_mb * MiB))})
    folder = Path(tempfile.mkdtemp(prefix="radfm-bench-pull-"))
    with server:
        config = folder / "node.json"
        config.write_text(json.dumps({
            "port": 0, "state_dir": "state", "max_instance_mb": args.max_instance_mb, "retry_first_s": 3600, "retry_max_s": 3600,
            "allowed_callers": [{"ae_title": "ORTHANC", "host": "127.0.0.1"}],
            "pull": {"url": server.url, "every_s": 3600}}))
        env = dict(os.environ)
        if args.pythonpath:
            env["PYTHONPATH"] = os.pathsep.join([args.pythonpath, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        log = (folder / "node.log").open("w")
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(config)], env=env, stdout=subprocess.PIPE, cwd=folder,
                                 stderr=log, text=True)
        try:
            assert child.stdout.readline().strip() == "started", "the node did not start (see node.log)"
            process = psutil.Process(child.pid)
            time.sleep(2.0)  # settled, its search waiting on the server
            idle = max(process.memory_info().rss for _ in range(20) if time.sleep(0.01) is None)
            go.set()
            started = time.monotonic()
            peak, last_sent, quiet_since = idle, -1, time.monotonic()
            while time.monotonic() - started < args.max_s:
                peak = max(peak, process.memory_info().rss)
                sent = server.bytes_sent(wado)
                if sent != last_sent:
                    last_sent, quiet_since = sent, time.monotonic()
                elif wado in server.requests and time.monotonic() - quiet_since > 3.0:
                    break  # the server has stopped sending: the node hung up, or took it all
                time.sleep(0.01)
            took = time.monotonic() - started
            hwm = _vm_hwm(child.pid)
            alive = child.poll() is None
        finally:
            child.terminate()
            child.wait(30)
            log.close()
    lines = (folder / "node.log").read_text(errors="replace").splitlines()
    said = [line for line in lines if "DICOMweb" in line or "pull" in line.lower()]
    limit = args.max_instance_mb * MiB + 256 * MiB
    command = "python scripts/bench_node_pull.py" + "".join(f" {shlex.quote(a)}" for a in (argv or sys.argv[1:]))
    print(f"`{command}`\n")
    print("| figure | value |\n|---|---|")
    print(f"| node code | {args.pythonpath or 'this checkout'} |")
    print(f"| max_instance_mb | {args.max_instance_mb} |")
    print(f"| offered by the server | one part of {args.send_mb} MiB, no closing boundary |")
    print(f"| sent before the node hung up or took it all (incl. socket buffers) | {last_sent / MiB:.1f} MiB |")
    print(f"| time from the search answered to the server idle | {took:.1f} s |")
    print(f"| node RSS idle | {idle / MiB:.0f} MiB |")
    print(f"| node RSS peak, sampled every 10 ms / kernel VmHWM | {peak / MiB:.0f} / "
          f"{(hwm or 0) / MiB:.0f} MiB |")
    grown = max(peak, hwm or 0) - idle
    print(f"| peak - idle | {grown / MiB:+.0f} MiB (limit: max_instance_mb + 256 = {limit // MiB} MiB) |")
    print(f"| within the limit | {'yes' if grown <= limit else 'NO'} |")
    print(f"| node still running afterwards | {'yes' if alive else 'no'} |")
    print(f"| node log on the pull | {said[-1][:200] if said else '-'} |")
    return 0 if grown <= limit else 1


if __name__ == "__main__":
    sys.exit(main())
