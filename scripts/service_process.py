"""`radfm serve` in a subprocess for the service benchmarks: start it, wait until it answers, measure its RSS.

Shared by ``bench_hostile_service.py`` and ``bench_chat_kept_scans.py`` (run them from ``scripts/``'s
parent: Python puts ``scripts/`` on ``sys.path`` for a script there).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil


def rss_with_children(process: psutil.Process) -> int:
    """Resident bytes of ``process`` and all its children (the service's reading pool included).

    Args:
        process: the service's process.

    Returns:
        The summed RSS in bytes; children that exit meanwhile count as 0.
    """
    total = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            total += member.memory_info().rss
        except psutil.Error:
            pass
    return total


@contextlib.contextmanager
def running_service(flags: list[str], tmpdir: Path, device: str = "cpu",
                    start_timeout_s: float = 120.0) -> Iterator[tuple[psutil.Process, str]]:
    """``radfm serve FLAGS`` on a free loopback port with ``TMPDIR=tmpdir``, until the block ends.

    Args:
        flags: the command's flags after ``serve`` (``--port`` and ``--device DEVICE`` are added).
        tmpdir: the service's temp folder (its request workspaces go there).
        device: the service's ``--device``.
        start_timeout_s: how long it may take to answer ``/health`` (a vLLM engine starts in minutes on a busy CPU).

    Yields:
        ``(process, url)`` once ``/health`` answers 200.

    Raises:
        SystemExit: the service exited before it answered.
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "radfm.cli", "serve", "--port", str(port), "--device", device,
                               *flags], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env={**os.environ, "TMPDIR": str(tmpdir), "HF_HUB_OFFLINE": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_timeout_s
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
            if server.poll() is not None:
                raise SystemExit("the service did not start")
        else:
            raise SystemExit(f"the service did not answer /health within {start_timeout_s:g} s")
        yield psutil.Process(server.pid), url
    finally:
        server.terminate()
        server.wait(timeout=60)
