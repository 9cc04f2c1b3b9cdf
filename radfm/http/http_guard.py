"""Guards shared by the toolkit's HTTP servers (``radfm serve`` and ``radfm rate serve``).

* **Header timeout** (:class:`GuardedH11Protocol`): a connection that has not sent a complete
  request head within ``header_timeout_s`` is answered 408 and closed. uvicorn has no such
  limit, so a few sockets sending one header byte at a time ("slowloris") would otherwise be
  held for ever.
* **Body timeouts** (:class:`HttpGuard`): the body must keep arriving (at most
  ``body_idle_timeout_s`` between chunks) and be complete within ``body_timeout_s``; otherwise
  the client gets 408 and the app sees a disconnect (so it cleans up its temp files).
* **Host / Origin check** (:class:`HttpGuard`, for servers bound to loopback): a request whose
  ``Host`` is not a loopback name (DNS rebinding: ``Host: evil.example``), or whose ``Origin``
  is another site, is refused with 403 before the app sees it.
* **JSON bodies** (:func:`decode_json`): every route that takes JSON decodes it here, with a
  bounded parser (nesting at most 200 deep, numbers at most 4300 digits, no ``NaN`` or
  ``Infinity``), so a hostile body is a ``ValueError`` saying where it went wrong, never a
  ``RecursionError`` deep in the standard library's decoder.

:func:`guarded_server` builds a uvicorn server with all of these.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
_NOT_JSON_LITERALS = {bytes: (b"NaN", b"Infinity"), str: ("NaN", "Infinity")}


@dataclass
class GuardLimits:
    """Timeouts in seconds for reading a request."""

    header_timeout_s: float = 10.0  # request line + headers
    body_idle_timeout_s: float = 30.0  # longest gap between body chunks
    body_timeout_s: float = 600.0  # whole body (a 512 MB upload at ~1 MB/s)

    def check(self) -> GuardLimits:
        """Raise ``ValueError`` naming a timeout that is not a positive, finite number of seconds."""
        for name in ("header_timeout_s", "body_idle_timeout_s", "body_timeout_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
                raise ValueError(f"--{name}={value!r}: expected a number of seconds > 0")
        return self


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or address, IPv6 with or without brackets) is this machine only."""
    host = host.strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _split_host(value: str) -> tuple[str, int | None]:
    """``"host[:port]"`` (IPv6 in brackets) -> ``(host, port)``; port ``None`` when absent or unreadable."""
    try:
        parts = urlsplit(f"//{value}")
        return (parts.hostname or ""), parts.port
    except ValueError:
        return "", None


def decode_json(raw: bytes | str) -> object:
    """Parse a request body as JSON with bounded nesting and number sizes.

    pydantic-core's parser (FastAPI's own, in Rust) stops at 200 levels of nesting and at
    numbers longer than 4300 digits, refuses ``NaN``/``Infinity`` literals and is faster than
    :func:`json.loads`; a number too large for a float (``1e400``) becomes ``inf``, which the
    option checks refuse naming their field.

    Args:
        raw: the request body.

    Returns:
        The decoded value (dicts, lists, strings, ints, floats, booleans, ``None``).

    Raises:
        ValueError: the body is not JSON, or is nested too deep, or holds a number too long;
            the message says which and where (line, column).
    """
    from pydantic_core import from_json

    try:
        return from_json(raw, allow_inf_nan=False)
    except ValueError as error:
        reason = str(error)
        if reason.startswith("recursion limit exceeded"):
            reason = reason.replace("recursion limit exceeded", "arrays/objects nested more than 200 deep", 1)
        elif reason.startswith("number out of range"):
            reason = reason.replace("number out of range", "a number with more than 4300 digits", 1)
        elif reason.startswith("expected value") and any(word in raw for word in _NOT_JSON_LITERALS[type(raw)]):
            reason += "; NaN and Infinity are not JSON numbers"
        raise ValueError(reason) from None


def _json_response(status: int, message: str) -> tuple[dict, dict]:
    body = json.dumps({"error": message}).encode()
    start = {"type": "http.response.start", "status": status,
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                         (b"connection", b"close")]}
    return start, {"type": "http.response.body", "body": body}


class HttpGuard:
    """ASGI middleware: Host/Origin check (when ``loopback_only``) and body read timeouts."""

    def __init__(self, app, limits: GuardLimits | None = None, loopback_only: bool = True) -> None:
        self.app = app
        self.limits = limits or GuardLimits()
        self.loopback_only = loopback_only

    def _refusal(self, scope) -> str | None:
        headers = dict(scope.get("headers", []))
        host_header = headers.get(b"host", b"").decode("latin-1")
        host, _ = _split_host(host_header)
        if not is_loopback(host):
            return (f"Host {host_header!r} is not this server: it only answers requests addressed to "
                    "127.0.0.1 or localhost (DNS rebinding protection)")
        origin = headers.get(b"origin")
        if origin is not None:
            origin_text = origin.decode("latin-1")
            parts = urlsplit(origin_text)
            try:
                origin_port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
            except ValueError:
                origin_port = None
            server_port = (scope.get("server") or (None, None))[1]
            if (parts.scheme not in ("http", "https") or not is_loopback(parts.hostname or "")
                    or (server_port is not None and origin_port != server_port)):
                return f"cross-site request refused: Origin {origin_text!r} is not this server"
        return None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if self.loopback_only:
            refusal = self._refusal(scope)
            if refusal is not None:
                start, body = _json_response(403, refusal)
                await send(start)
                await send(body)
                return None
        limits = self.limits
        started = time.monotonic()
        state = {"timed_out": False, "body_done": False, "response_started": False}

        async def timed_receive():
            if state["timed_out"]:
                return {"type": "http.disconnect"}
            if state["body_done"]:  # after the body only a disconnect can come: no timeout
                return await receive()
            remaining = limits.body_timeout_s - (time.monotonic() - started)
            try:
                message = await asyncio.wait_for(receive(), timeout=max(0.0, min(limits.body_idle_timeout_s, remaining)))
            except TimeoutError:
                if state["response_started"]:  # the app answered without the body: just stop reading
                    return {"type": "http.disconnect"}
                state["timed_out"] = True
                start, body = _json_response(
                    408, f"request body not received in time (more than {limits.body_idle_timeout_s:g} s between "
                    f"chunks or {limits.body_timeout_s:g} s in all)")
                await send(start)
                await send(body)
                return {"type": "http.disconnect"}
            if message.get("type") == "http.request" and not message.get("more_body", False):
                state["body_done"] = True
            return message

        async def guarded_send(message):
            if not state["timed_out"]:  # the 408 has been sent: the app's late reply is dropped
                if message.get("type") == "http.response.start":
                    state["response_started"] = True
                await send(message)

        return await self.app(scope, timed_receive, guarded_send)


def _guarded_protocol(header_timeout_s: float):
    """A uvicorn h11 protocol class that answers 408 and closes connections whose request head is late."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11Protocol(H11Protocol):
        _head_timer: asyncio.TimerHandle | None = None

        def _arm_head_timer(self) -> None:
            self._disarm_head_timer()
            self._head_timer = self.loop.call_later(header_timeout_s, self._head_timed_out)

        def _disarm_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timed_out(self) -> None:
            self._head_timer = None
            if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
                return
            if self.conn.our_state is h11.IDLE and self.conn.their_state is h11.IDLE:
                self.transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain\r\n"
                                     b"content-length: 34\r\nconnection: close\r\n\r\n"
                                     b"request head not received in time")
            self.transport.close()

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm_head_timer()

        def handle_events(self) -> None:
            super().handle_events()
            if self.conn.their_state is not h11.IDLE:  # the request head is in
                self._disarm_head_timer()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
                self._arm_head_timer()  # keep-alive: the next request's head has the same limit

        def connection_lost(self, exc) -> None:
            self._disarm_head_timer()
            super().connection_lost(exc)

    GuardedH11Protocol.header_timeout_s = header_timeout_s
    return GuardedH11Protocol


def bind_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``(host, port)`` as uvicorn binds one (``SO_REUSEADDR``), for ``Server.run(sockets=...)``.

    Binding before a slow start (loading a model) says at once that the port is taken, and
    holds it until the server listens.

    Args:
        host: address or name to bind (IPv6 when it holds a colon).
        port: TCP port (0: a free one).

    Returns:
        The bound socket (not yet listening).

    Raises:
        OSError: the address cannot be bound (``errno.EADDRINUSE`` when another process listens there).
    """
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def guarded_server(app, host: str, port: int, limits: GuardLimits | None = None,
                   log_level: str = "warning", **config_kwargs):
    """A ``uvicorn.Server`` for ``app`` with the header timeout, body timeouts and (on loopback) Host/Origin check.

    ``config_kwargs`` go to ``uvicorn.Config`` (e.g. ``lifespan="off"``). Call ``.run()`` on it,
    or ``.run(sockets=[...])`` with a socket already bound.
    """
    import uvicorn

    limits = (limits or GuardLimits()).check()
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"--port={port!r}: expected a TCP port in 0..65535")
    wrapped = HttpGuard(app, limits, loopback_only=is_loopback(host))
    config = uvicorn.Config(wrapped, host=host, port=port, log_level=log_level,
                            http=_guarded_protocol(limits.header_timeout_s), **config_kwargs)
    return uvicorn.Server(config)
