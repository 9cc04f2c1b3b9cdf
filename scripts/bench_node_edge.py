"""Node memory and answer time at the Storage SCP's edge under attack (issue 28).

    python scripts/bench_node_edge.py
    python scripts/bench_node_edge.py --clients 3 --silent 8 --max_instance_mb 8

Starts ``radfm node run`` (the real node, demo model, a study is never stable during the run so no
job starts) and samples the node process's RSS (psutil, every 20 ms) while:

(b) ``--clients`` pynetdicom clients C-STORE at once the 510 KiB Deflated Explicit VR instance whose
    header honestly claims 4096 x 4096 x 16 16-bit frames (it inflates to 512 MiB; the node's
    ``max_scan_mb`` is its default 2048, so the instance is taken);
(c) ``--silent`` TCP sockets that send nothing are open while the allowed caller sends a study
    (20 CT slices): the time from its first association request to the last instance answered.

Each peak is reported against the idle node (after one small instance was received, so the readers
are imported) and against the bound ``max_instance_mb`` + 256 MiB. Prints Markdown with the command.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the lab: tests/support, not installed
from hostile_node_peers import deflated_instance, idle_sockets  # noqa: E402

MiB = 1024 * 1024
LOOPBACK = "127.0.0.1"


class RssSampler:
    """Peak RSS of process ``pid`` while in the ``with`` block."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self.process.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(0.02)

    def __enter__(self) -> RssSampler:
        self.peak = self.process.memory_info().rss
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        time.sleep(0.5)
        self._stop.set()
        self._thread.join()


def _store_ct(port: int, files: list[Path], deadline_s: float = 120.0) -> tuple[float, int, list[int]]:
    """Send ``files`` on one association, retrying the association until accepted.

    Returns (seconds from the first request to the last answer, rejected tries, statuses).
    """
    import pydicom
    from pynetdicom import AE
    from support.synthetic import CT_IMAGE_STORAGE

    started = time.perf_counter()
    rejected = 0
    while time.perf_counter() - started < deadline_s:
        ae = AE(ae_title="TESTSCU")
        ae.add_requested_context(CT_IMAGE_STORAGE)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
        assoc = ae.associate(LOOPBACK, port, ae_title="RADFM")
        if not assoc.is_established:
            rejected += 1
            time.sleep(0.5)
            continue
        statuses = [getattr(assoc.send_c_store(pydicom.dcmread(f)), "Status", -1) for f in files]
        assoc.release()
        return time.perf_counter() - started, rejected, statuses
    return float("inf"), rejected, []


def _store_file(port: int, path: Path, results: list, index: int) -> None:
    from pydicom.uid import DeflatedExplicitVRLittleEndian
    from pynetdicom import AE
    from support.synthetic import CT_IMAGE_STORAGE

    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(CT_IMAGE_STORAGE, [DeflatedExplicitVRLittleEndian])
    ae.acse_timeout = ae.network_timeout = 60
    ae.dimse_timeout = 600  # the node reads the three one after the other (its memory budget)
    started = time.perf_counter()
    assoc = ae.associate(LOOPBACK, port, ae_title="RADFM")
    if not assoc.is_established:
        results[index] = ("association refused", time.perf_counter() - started)
        return
    status = assoc.send_c_store(path)  # the file's data set as stored (deflated), read from disk in pieces
    if assoc.is_established:
        assoc.release()
    code = getattr(status, "Status", None)
    results[index] = (f"0x{code:04X}" if code is not None else "no answer", time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=3, help="clients sending the deflated instance at once")
    parser.add_argument("--silent", type=int, default=8, help="silent TCP sockets held open during (c)")
    parser.add_argument("--max_instance_mb", type=int, default=8)
    args = parser.parse_args(argv)

    from support.orthanc_lab import NodeProcess, free_port
    from support.synthetic import write_ct_series

    with tempfile.TemporaryDirectory(prefix="radfm-bench-edge-") as root:
        root = Path(root)
        bomb = deflated_instance(root / "deflated.dcm")  # 4096 x 4096 x 16 x 16 bit = 512 MiB inflated
        warm, *study = write_ct_series(root / "ct", slices=21, size=64)
        port = free_port()
        node = NodeProcess(root, {"ae_title": "RADFM", "host": LOOPBACK, "port": port, "state_dir": "state",
                                  "allowed_callers": [{"ae_title": "TESTSCU", "host": LOOPBACK}],
                                  "stable_after_s": 3600, "max_instance_mb": args.max_instance_mb})
        node.start(timeout_s=300)
        try:
            rss = psutil.Process(node.process.pid)
            started_rss = rss.memory_info().rss
            _store_ct(port, [warm])
            time.sleep(1)
            idle = rss.memory_info().rss
            bound = args.max_instance_mb * MiB + 256 * MiB

            results: list = [None] * args.clients
            with RssSampler(node.process.pid) as b:
                t0 = time.perf_counter()
                threads = [threading.Thread(target=_store_file, args=(port, bomb, results, i))
                           for i in range(args.clients)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                b_seconds = time.perf_counter() - t0
            time.sleep(1)
            idle_c = rss.memory_info().rss

            silent = idle_sockets(LOOPBACK, port, args.silent)
            try:
                time.sleep(0.5)
                with RssSampler(node.process.pid) as c:
                    c_seconds, c_rejected, c_statuses = _store_ct(port, study)
            finally:
                for sock in silent:
                    sock.close()
        finally:
            node.stop()
        log = node.log_path.read_text(errors="replace") if node.log_path.exists() else ""

    command = " ".join(["python scripts/bench_node_edge.py", *(argv if argv is not None else sys.argv[1:])])
    print(f"`{command}`")
    print()
    print(f"Node: `radfm node run`, max_instance_mb {args.max_instance_mb}, max_scan_mb 2048 (default); RSS "
          f"after start {started_rss / MiB:.0f} MiB, idle (after one small instance) {idle / MiB:.0f} MiB; "
          f"bound = max_instance_mb + 256 MiB = {bound // MiB} MiB over idle.")
    print()
    print("| scenario | node peak RSS over idle | within bound | answers | time |")
    print("|---|---|---|---|---|")
    answers = ", ".join(r[0] for r in results)
    print(f"| (b) {args.clients} clients C-STORE the 510 KiB deflated instance (512 MiB inflated) at once "
          f"| {(b.peak - idle) / MiB:+.0f} MiB | {'yes' if b.peak - idle <= bound else '**no**'} | {answers} "
          f"| {b_seconds:.1f} s (each: {', '.join(f'{r[1]:.1f}' for r in results)} s) |")
    answered = c_statuses == [0] * len(study)
    print(f"| (c) {args.silent} silent sockets open, the allowed caller sends a {len(study)}-instance study "
          f"| {(c.peak - idle_c) / MiB:+.0f} MiB | {'yes' if c.peak - idle_c <= bound else '**no**'} "
          f"| {'all 0x0000' if answered else c_statuses or 'not answered'}; associations refused first: {c_rejected} "
          f"| {c_seconds:.2f} s |")
    print()
    blamed = log.count("calling AE title not on the allow-list")
    print(f"Node log: {blamed} line(s) blaming the calling AE title; "
          f"{log.count('sent no association request')} silent connection(s) closed by the node.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
