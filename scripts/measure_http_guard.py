"""Measure the service guards: a 100 s generation stopped by a 1 s time limit, 20 slowloris sockets.

    python scripts/measure_http_guard.py

Prints the time to the 504, the next request's time, and how long the slowloris sockets were held.
"""

import socket, time, threading, httpx, numpy as np
from pathlib import Path
from PIL import Image
from radfm.interop.answerer import check_deadline
from radfm.interop.identity import ModelIdentity
from radfm.interop.service import BackgroundServer, ServiceLimits, create_app
from radfm.utils.http_guard import GuardLimits

class Slow:
    identity = ModelIdentity("slow", "0", "0" * 64); max_images = 2
    def prepare(self, paths): return [str(p) for p in paths]
    def answer(self, prompt, images, options):
        for _ in range(options.max_new_tokens):
            check_deadline(); time.sleep(0.05)
        return "done"

import tempfile
scan = Path(tempfile.mkdtemp()) / "a.png"
Image.fromarray(np.zeros((64, 64), np.uint8)).save(scan)
png = ("files", ("a.png", scan.read_bytes(), "image/png"))
limits = ServiceLimits(max_new_tokens=2000, max_beam_tokens=2000, generation_timeout_s=1.0)
with BackgroundServer(create_app(Slow(), limits), guard=GuardLimits(header_timeout_s=2.0)) as s:
    t = time.monotonic()
    r = httpx.post(f"{s.url}/v1/answer", files=[png], data={"prompt": "hi", "max_new_tokens": "2000"}, timeout=200)
    t1 = time.monotonic() - t
    t = time.monotonic()
    r2 = httpx.post(f"{s.url}/v1/answer", files=[png], data={"prompt": "hi", "max_new_tokens": "2"}, timeout=200)
    t2 = time.monotonic() - t
    print(f"2000-token slow generation (100 s unbounded), limit 1 s: HTTP {r.status_code} after {t1:.2f} s; next request HTTP {r2.status_code} after {t2:.2f} s")
    held = []
    def attack():
        c = socket.create_connection(("127.0.0.1", s.port)); c.settimeout(0.5); start = time.monotonic()
        c.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        while time.monotonic() - start < 60:
            try:
                c.sendall(b"X-a: 1\r\n")
                if not c.recv(4096): break
                break
            except socket.timeout: continue
            except OSError: break
        held.append(time.monotonic() - start); c.close()
    ts = [threading.Thread(target=attack) for _ in range(20)]
    [x.start() for x in ts]; [x.join() for x in ts]
    print(f"20 slowloris sockets, header timeout 2 s: held median {sorted(held)[10]:.2f} s, max {max(held):.2f} s; /health after: {httpx.get(s.url + '/health').status_code}")
