"""The shared HTTP guard, attacked on loopback: slowloris heads and bodies, DNS rebinding, foreign origins."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest

from radfm.http.http_guard import GuardLimits, is_loopback
from radfm.http.service import BackgroundServer

FAST = GuardLimits(header_timeout_s=0.6, body_idle_timeout_s=0.6, body_timeout_s=5.0)


async def echo_app(scope, receive, send):
    """Reads the whole body and answers its length."""
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": str(size).encode()})


def Running(app, limits: GuardLimits = FAST) -> BackgroundServer:
    """The guarded uvicorn server on a free loopback port (the one both apps use)."""
    return BackgroundServer(app, guard=limits)


def _drip(port: int, chunks: list[bytes], gap_s: float, budget_s: float) -> tuple[bytes, float]:
    """Send ``chunks`` ``gap_s`` apart (then keep dripping header bytes) until the server hangs up.

    Returns what the server sent and how long the socket stayed open (at most ``budget_s``).
    """
    client = socket.create_connection(("127.0.0.1", port), timeout=budget_s)
    client.settimeout(gap_s)
    started, received = time.monotonic(), b""
    try:
        index = 0
        while time.monotonic() - started < budget_s:
            try:
                client.sendall(chunks[index] if index < len(chunks) else b"X")
            except OSError:
                break
            index += 1
            try:
                data = client.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                break
            if not data:
                break
            received += data
        return received, time.monotonic() - started
    finally:
        client.close()


def test_slowloris_heads_are_dropped(tmp_path):
    """A few sockets each dribbling a partial request head are answered 408 and closed within the header timeout."""
    head = [b"GET / HTTP/1.1\r\n", b"Host: 127.0.0.1\r\n", b"X-a: 1\r\n", b"X-b: 2\r\n", b"X-c: 3\r\n"]
    with Running(echo_app) as running:
        results: list = [None] * 4

        def attack(i: int) -> None:
            results[i] = _drip(running.port, head, gap_s=0.15, budget_s=8.0)

        threads = [threading.Thread(target=attack, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=15)
        for received, held_s in results:
            assert held_s < 4.0, f"slowloris socket held {held_s:.1f} s"
            assert received.startswith(b"HTTP/1.1 408")
        assert httpx.get(f"http://127.0.0.1:{running.port}/").status_code == 200  # still serving


def test_slow_body_gets_408():
    head = (b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n")
    with Running(echo_app) as running:
        client = socket.create_connection(("127.0.0.1", running.port), timeout=5)
        client.sendall(head + b"x" * 10)  # then nothing
        started = time.monotonic()
        reply = b""
        while chunk := client.recv(4096):  # head and body may come in separate segments; the server closes
            reply += chunk
        client.close()
    assert reply.startswith(b"HTTP/1.1 408") and b"request body not received in time" in reply
    assert time.monotonic() - started < 4


@pytest.mark.parametrize("headers, reason", [
    ({"Host": "evil.example"}, "DNS rebinding"),
    ({"Host": "evil.example:8765"}, "DNS rebinding"),
    ({"Origin": "http://evil.example"}, "Origin"),
    ({"Origin": "null"}, "Origin"),
    ({"Origin": "http://127.0.0.1:1"}, "Origin"),  # another local port is another site
])
def test_rebinding_host_and_foreign_origin_are_refused(headers, reason):
    with Running(echo_app) as running:
        refused = httpx.post(f"http://127.0.0.1:{running.port}/", content=b"abc", headers=headers)
        same_site = httpx.post(f"http://localhost:{running.port}/", content=b"abc",
                               headers={"Origin": f"http://localhost:{running.port}"})
    assert refused.status_code == 403 and reason in refused.json()["error"]
    assert same_site.status_code == 200 and same_site.text == "3"


def test_loopback_names():
    assert all(is_loopback(h) for h in ("127.0.0.1", "localhost", "::1", "[::1]", "127.1.2.3"))
    assert not any(is_loopback(h) for h in ("evil.example", "10.0.0.1", "0.0.0.0", ""))
