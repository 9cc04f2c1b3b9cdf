"""``radfm rate serve`` runs behind the shared HTTP guard: rebinding Host refused, slow request heads dropped."""

from __future__ import annotations

import socket
import time

import httpx

from radfm.http.http_guard import GuardLimits
from radfm.http.service import BackgroundServer
from radfm.rating.app import create_app


def test_rating_app_refuses_rebinding_and_drops_slow_heads(study):
    folder, _ = study
    with BackgroundServer(create_app(folder), guard=GuardLimits(header_timeout_s=0.6)) as running:
        assert httpx.get(f"{running.url}/signin", headers={"Host": "evil.example"}).status_code == 403
        assert httpx.post(f"{running.url}/signin", data={"token": "x"},
                          headers={"Origin": "http://evil.example"}).status_code == 403
        assert httpx.get(f"{running.url}/signin").status_code == 200
        client = socket.create_connection(("127.0.0.1", running.port), timeout=5)
        client.sendall(b"GET /signin HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never the rest
        started = time.monotonic()
        reply = client.recv(4096)
        client.close()
    assert reply.startswith(b"HTTP/1.1 408") and time.monotonic() - started < 4


def test_rate_serve_builds_the_guarded_server(study, monkeypatch):
    """The CLI entry goes through ``guarded_server`` (not a bare ``uvicorn.run``)."""
    import radfm.http.http_guard as guard
    from radfm.rating.cli import RateCommands

    built = {}

    class FakeServer:
        def run(self):
            built["ran"] = True

    def fake_guarded_server(app, host, port, *args, **kwargs):
        built.update(host=host, port=port)
        return FakeServer()

    monkeypatch.setattr(guard, "guarded_server", fake_guarded_server)
    RateCommands().serve(str(study[0]), port=9999)
    assert built == {"host": "127.0.0.1", "port": 9999, "ran": True}
