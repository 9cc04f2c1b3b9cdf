"""Measure the service guards: a 100 s generation stopped by a 1 s time limit, 20 slowloris sockets.

    python scripts/measure_http_guard.py

Prints the time to the 504, the next request's time, and how long the slowloris sockets were held.
"""

from __future__ import annotations

import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from radfm.answering.answerer import check_deadline
from radfm.answering.identity import ModelIdentity
from radfm.answering.limits import Limits
from radfm.http.http_guard import GuardLimits
from radfm.http.service import BackgroundServer, create_app

TOKEN_SECONDS = 0.05  # the slow answerer's "decoding" speed: 2000 tokens = 100 s


class SlowAnswerer:
    """No model: one token per 50 ms, checking the generation deadline like the model's stopping criterion."""

    identity = ModelIdentity("slow", "0", "0" * 64)
    max_images = 2

    def prepare(self, paths):
        return [str(path) for path in paths]

    def answer(self, prompt, images, options):
        for _ in range(options.max_new_tokens):
            check_deadline()
            time.sleep(TOKEN_SECONDS)
        return "done"


def slowloris_hold_s(port: int, budget_s: float = 60.0) -> float:
    """Seconds a socket sending an unfinished request head stays open."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port)) as client:
        client.settimeout(0.5)
        client.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        while time.monotonic() - started < budget_s:
            try:
                client.sendall(b"X-a: 1\r\n")
                client.recv(4096)  # the 408 or end of stream: the server has given up on us
                break
            except TimeoutError:
                continue
            except OSError:
                break
    return time.monotonic() - started


def main() -> None:
    scan = Path(tempfile.mkdtemp()) / "a.png"
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(scan)
    upload = ("files", ("a.png", scan.read_bytes(), "image/png"))
    limits = Limits(max_new_tokens=2000, max_beam_tokens=2000, generation_timeout_s=1.0)
    with BackgroundServer(create_app(SlowAnswerer(), limits), guard=GuardLimits(header_timeout_s=2.0)) as server:
        started = time.monotonic()
        slow = httpx.post(f"{server.url}/v1/answer", files=[upload], data={"prompt": "hi", "max_new_tokens": "2000"},
                          timeout=200)
        slow_s = time.monotonic() - started
        started = time.monotonic()
        quick = httpx.post(f"{server.url}/v1/answer", files=[upload], data={"prompt": "hi", "max_new_tokens": "2"},
                           timeout=200)
        quick_s = time.monotonic() - started
        print(f"2000-token slow generation (100 s unbounded), limit 1 s: HTTP {slow.status_code} after {slow_s:.2f} s; "
              f"next request HTTP {quick.status_code} after {quick_s:.2f} s")
        held: list[float] = []
        threads = [threading.Thread(target=lambda: held.append(slowloris_hold_s(server.port))) for _ in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        health = httpx.get(f"{server.url}/health").status_code
        print(f"20 slowloris sockets, header timeout 2 s: held median {statistics.median(held):.2f} s, "
              f"max {max(held):.2f} s; /health after: {health}")


if __name__ == "__main__":
    main()
