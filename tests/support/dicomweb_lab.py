"""A hostile DICOMweb server on 127.0.0.1, for the pull mode's tests, fuzz run and benchmark.

Each path answers with a :class:`Reply`: a status, headers, body chunks (a list, or a generator
that never ends), a delay before each chunk (a trickle), a delay before each byte of the status
line and headers, and how the body is framed (Content-Length, chunked, or until the connection
closes). The server counts the bytes it wrote per path, so a test can see how much of an
endless answer the node read before it hung up. Test equipment, never a DICOMweb server.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

LOOPBACK = "127.0.0.1"
BOUNDARY = "radfm-lab-boundary"


@dataclass
class Reply:
    """One HTTP answer. ``framing``: ``length`` (Content-Length; a finite body), ``chunked`` or ``close``."""

    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: Iterable[bytes] = ()
    framing: str = "close"
    delay_s: float = 0.0
    head_delay_s: float = 0.0


Route = Reply | Callable[[str], Reply]


def multipart_related(parts: list[bytes], boundary: str = BOUNDARY,
                      part_type: str | None = "application/dicom") -> tuple[str, bytes]:
    """``(Content-Type, body)`` of a WADO-RS answer holding ``parts`` (each an instance's bytes)."""
    head = f"Content-Type: {part_type}\r\n" if part_type else ""
    body = b"".join(f"--{boundary}\r\n{head}\r\n".encode() + part + b"\r\n" for part in parts)
    return f'multipart/related; type="application/dicom"; boundary={boundary}', body + f"--{boundary}--\r\n".encode()


def endless_part(total_bytes: int | None = None, chunk: int = 1 << 20, boundary: str = BOUNDARY) -> Iterator[bytes]:
    """The body of a WADO-RS answer whose one part never ends (or ends, unclosed, after ``total_bytes``)."""
    yield f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
    block = b"\0" * chunk
    sent = 0
    while total_bytes is None or sent < total_bytes:
        piece = block if total_bytes is None else block[:total_bytes - sent]
        sent += len(piece)
        yield piece


def qido_answer(uids: Iterable[object]) -> bytes:
    """A QIDO-RS study search answer (DICOM JSON) listing ``uids`` as StudyInstanceUIDs."""
    return json.dumps([{"0020000D": {"vr": "UI", "Value": [uid]}} for uid in uids]).encode()


def wado_reply(parts: list[bytes], **kwargs) -> Reply:
    """A well-formed WADO-RS answer with ``parts``; ``kwargs`` go to :class:`Reply` (framing, delays)."""
    content_type, body = multipart_related(parts)
    return Reply(200, [("Content-Type", content_type)], [body], **kwargs)


class HostileDicomweb:
    """The server: ``routes`` maps a path (``/dicom-web/studies``, ``/dicom-web/studies/<uid>``) to a
    :class:`Reply` or a function of the path returning one; other paths get 404.

    Use as a context manager; :attr:`url` is the DICOMweb root to configure, :attr:`requests` the paths
    asked for, :attr:`sent` the bytes written per path.
    """

    def __init__(self, routes: dict[str, Route] | None = None) -> None:
        self.routes: dict[str, Route] = dict(routes or {})
        self.requests: list[str] = []
        self.sent: dict[str, int] = {}
        self._closing = threading.Event()
        self._lock = threading.Lock()
        lab = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet: the tests read the node's log, not ours
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                lab._answer(self)

        self._server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="hostile-dicomweb", daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/dicom-web"

    def start(self) -> HostileDicomweb:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._closing.set()  # trickles and endless bodies stop writing
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> HostileDicomweb:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def bytes_sent(self, path: str) -> int:
        with self._lock:
            return self.sent.get(path, 0)

    def _count(self, path: str, n: int) -> None:
        with self._lock:
            self.sent[path] = self.sent.get(path, 0) + n

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        path = urlsplit(handler.path).path
        with self._lock:
            self.requests.append(path)
        route = self.routes.get(path)
        reply = Reply(404, [("Content-Type", "text/plain")], [b"not found"], "length") if route is None else (
            route(path) if callable(route) else route)
        body: Iterable[bytes] = reply.body
        headers = list(reply.headers)
        if reply.framing == "length":
            body = [b"".join(body)]
            headers.append(("Content-Length", str(len(body[0]))))
        elif reply.framing == "chunked":
            headers.append(("Transfer-Encoding", "chunked"))
        head = f"HTTP/1.1 {reply.status} Lab\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
        head = (head + "Connection: close\r\n\r\n").encode("latin-1")
        out = handler.wfile
        try:
            if reply.head_delay_s:
                for i in range(len(head)):
                    if self._closing.wait(reply.head_delay_s):
                        return
                    out.write(head[i:i + 1])
                    out.flush()
            else:
                out.write(head)
            for chunk in body:
                if reply.delay_s and self._closing.wait(reply.delay_s) or self._closing.is_set():
                    return
                if not chunk:
                    continue
                out.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if reply.framing == "chunked" else chunk)
                out.flush()
                self._count(path, len(chunk))
            if reply.framing == "chunked":
                out.write(b"0\r\n\r\n")
            out.flush()
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass  # the node hung up: what it read is counted
        finally:
            handler.close_connection = True


__all__ = ["BOUNDARY", "HostileDicomweb", "LOOPBACK", "Reply", "endless_part", "multipart_related", "qido_answer",
           "wado_reply"]
