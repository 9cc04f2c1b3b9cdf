"""DICOMweb pull mode: QIDO-RS finds new studies matching a filter, WADO-RS fetches them.

Each fetched instance goes through the same checks and spool as a C-STOREd one
(:meth:`StorageSCP.ingest <radfm.node.storage_scp.StorageSCP.ingest>`), so a pulled study
becomes a job once it is stable, exactly like a pushed one. A study is fetched once; the
``pulled`` table in the node's SQLite file remembers it across restarts.

The server is trusted no more than a C-STORE caller; its bytes are counted while they arrive:

* **one deadline per poll** (``pull.timeout_s``) covers the search and every study fetched in it,
  whatever the server does: a status line, headers or body trickled one byte at a time are cut at
  the deadline (anyio cancels the read), and a socket silent for :data:`IDLE_TIMEOUT_S` earlier;
* **the search answer** is read up to :data:`MAX_QIDO_BYTES`, then parsed; study UIDs that are not
  UIDs are skipped;
* **each WADO-RS part** is parsed from the stream (python-multipart's streaming parser) into a
  temp file, and refused the moment it passes ``max_instance_mb``: an endless part costs one read
  buffer of memory and ``max_instance_mb`` of disk; a finished part goes to ``StorageSCP.ingest``;
* **redirects** are followed only to the configured scheme, host and port;
* **one failed study does not stop the others**: a study whose fetch fails (an HTTP error, a
  malformed or refused part, the deadline) loses what it had fetched (no job is made of part of a
  study), and is tried again after ``retry_first_s`` doubling up to ``retry_max_s``, at most
  ``max_attempts`` times, then marked failed with the reason (``radfm node status`` lists it).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from radfm.dicom.dicom_uid import is_dicom_uid
from radfm.node.node_config import NodeConfig
from radfm.node.storage_scp import StorageSCP

logger = logging.getLogger("radfm.node")

IDLE_TIMEOUT_S = 30.0  # a socket silent this long ends the request (the poll's deadline may end it sooner)
MAX_QIDO_BYTES = 4 * 1024 * 1024  # the search answer: ~1-2 KiB per study; a bigger one asks for a narrower filter
MAX_PART_HEADER_BYTES = 16 * 1024  # the MIME headers of one WADO-RS part
MAX_REDIRECTS = 5
WADO_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'  # each instance as stored
_STATUS_MEANING = {0xA700: "too large, over a scan guard's limit or max_instances_per_study",
                   0xC000: "not readable DICOM or its UIDs are not UIDs", 0x0110: "a processing failure"}


class PullError(Exception):
    """What the DICOMweb server answered cannot be taken; the message says what and where."""


class ServerUnreachable(PullError):
    """The DICOMweb server could not be reached: the poll ends, no study is counted as failed."""


class _Stopped(Exception):
    """The node is stopping: the fetch in progress is abandoned."""


class _PartWriter:
    """Feeds a WADO-RS body, chunk by chunk, to python-multipart's streaming parser.

    Each part's bytes go to a temp file in ``folder`` as they are parsed, counted against
    ``max_part_bytes``; finished parts wait in :attr:`finished` until the caller takes them.
    """

    def __init__(self, boundary: bytes, folder: Path, max_part_bytes: int, max_mb: int) -> None:
        from python_multipart.multipart import MultipartParser

        self.folder = folder
        self.max_part_bytes = max_part_bytes
        self.max_mb = max_mb
        self.parts = 0
        self.ended = False
        self.finished: list[Path] = []
        self._file = None
        self._path: Path | None = None
        self._size = 0
        self._headers: dict[str, str] = {}
        self._field = bytearray()
        self._value = bytearray()
        self._header_bytes = 0
        self._parser = MultipartParser(boundary, callbacks={
            "on_part_begin": self._begin, "on_header_field": self._header_field,
            "on_header_value": self._header_value, "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished, "on_part_data": self._data,
            "on_part_end": self._end, "on_end": self._all_ended})

    def feed(self, chunk: bytes) -> None:
        from python_multipart.exceptions import MultipartParseError

        if self.ended:
            return  # the epilogue after the closing boundary carries nothing
        try:
            self._parser.write(chunk)
        except MultipartParseError as error:
            raise PullError(f"the multipart answer is malformed in part {max(self.parts, 1)}: {error}") from None

    def close(self) -> None:
        """Remove every temp file still here (a part cut off, parts not taken)."""
        if self._file is not None:
            self._file.close()
            self._file = None
        for path in [*self.finished, *([self._path] if self._path is not None else [])]:
            path.unlink(missing_ok=True)
        self.finished.clear()
        self._path = None

    # ---- parser callbacks ----
    def _begin(self) -> None:
        self.parts += 1
        self._headers, self._size, self._header_bytes = {}, 0, 0
        fd, name = tempfile.mkstemp(dir=self.folder, suffix=".dcm")
        self._file, self._path = os.fdopen(fd, "wb"), Path(name)

    def _count_header(self, n: int) -> None:
        self._header_bytes += n
        if self._header_bytes > MAX_PART_HEADER_BYTES:
            raise PullError(f"part {self.parts}: MIME headers longer than {MAX_PART_HEADER_BYTES} bytes")

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        self._value += data[start:end]

    def _header_end(self) -> None:
        name = self._field.decode("latin-1").strip().lower()
        self._headers[name] = self._value.decode("latin-1").strip()
        self._field, self._value = bytearray(), bytearray()

    def _headers_finished(self) -> None:
        kind = self._headers.get("content-type", "application/dicom").split(";")[0].strip().lower()
        if kind != "application/dicom":
            raise PullError(f"part {self.parts}: Content-Type {kind[:100]!r}, expected application/dicom")
        encoding = self._headers.get("content-transfer-encoding", "binary").lower()
        if encoding not in ("binary", "8bit", "7bit"):
            raise PullError(f"part {self.parts}: Content-Transfer-Encoding {encoding[:100]!r}, expected binary")
        claim = self._headers.get("content-length", "")
        if claim.isdigit() and int(claim) > self.max_part_bytes:  # a stated size over the cap: no need to read it
            raise PullError(f"part {self.parts}: Content-Length {claim} exceeds max_instance_mb={self.max_mb}")

    def _data(self, data: bytes, start: int, end: int) -> None:
        self._size += end - start
        if self._size > self.max_part_bytes:  # counted as it arrives: an endless part stops here
            raise PullError(f"part {self.parts}: more than max_instance_mb={self.max_mb} "
                            f"({self._size} bytes read when it was refused)")
        self._file.write(data[start:end])

    def _end(self) -> None:
        self._file.close()
        self._file = None
        self.finished.append(self._path)
        self._path = None

    def _all_ended(self) -> None:
        self.ended = True


def _boundary(content_type: str) -> bytes:
    from python_multipart.multipart import parse_options_header

    kind, options = parse_options_header(content_type)
    boundary = options.get(b"boundary", b"")
    if kind != b"multipart/related" or not 1 <= len(boundary) <= 70:
        raise PullError(f"WADO-RS answer of Content-Type {content_type[:200]!r}, expected multipart/related "
                        "with a boundary of 1-70 characters")
    return boundary


def _study_uid(study: Any) -> str | None:
    """The StudyInstanceUID of one QIDO-RS result, or ``None`` when it is not a UID."""
    if not isinstance(study, dict):
        return None
    attribute = study.get("0020000D")
    values = attribute.get("Value") if isinstance(attribute, dict) else None
    uid = values[0] if isinstance(values, list) and values else None
    return uid if is_dicom_uid(uid) else None


class DicomwebPull:
    """The pull mode of one node: :meth:`poll_once` is one poll (search, then fetch each new study).

    Args:
        config: the node's config (``config.pull`` set).
        scp: the node's Storage SCP, whose ``ingest`` checks and spools each instance.
        stop: set when the node stops; a fetch in progress is then abandoned.
    """

    def __init__(self, config: NodeConfig, scp: StorageSCP, stop: threading.Event | None = None) -> None:
        import httpx

        if config.pull is None:
            raise ValueError("the node config has no pull section")
        self.config = config
        self.pull = config.pull
        self.scp = scp
        self.queue = scp.queue
        self._stop = stop or threading.Event()
        base = httpx.URL(self.pull.url)
        self._origin = (base.scheme, base.host, base.port)
        self._tmp = self.queue.root / "tmp"
        self._tls = httpx.create_ssl_context()  # built once: loading the CA bundle per poll costs ~50 ms

    # ---- one poll ---------------------------------------------------------------------------------
    def poll_once(self) -> int:
        """Search for new studies and fetch each one due, within the poll's deadline.

        Returns:
            How many instances were taken into the spool.

        Raises:
            PullError: the search could not be done or answered wrongly, or the server could not be
                reached (a failing study is recorded on the study instead, and the poll goes on).
        """
        import anyio

        return anyio.run(self._poll)

    async def _poll(self) -> int:
        import anyio
        import httpx

        deadline = time.monotonic() + self.pull.timeout_s
        async with httpx.AsyncClient(timeout=IDLE_TIMEOUT_S, follow_redirects=False, verify=self._tls) as client:
            with anyio.move_on_after(self.pull.timeout_s) as scope:
                uids = await self._new_studies(client)
            if scope.cancelled_caught:
                raise PullError(f"QIDO-RS search at {self.pull.url}: no complete answer within "
                                f"pull.timeout_s={self.pull.timeout_s:g}")
            taken = 0
            for i, uid in enumerate(uids):
                left = deadline - time.monotonic()
                if left <= 0 or self._stop.is_set():
                    logger.warning("DICOMweb pull: %d new study(s) left for the next poll (%s)", len(uids) - i,
                                   "the node is stopping" if self._stop.is_set() else
                                   f"pull.timeout_s={self.pull.timeout_s:g} reached")
                    break
                self.queue.pull_begin(uid)
                try:
                    with anyio.move_on_after(left) as scope:
                        count = await self._fetch_study(client, uid)
                    if scope.cancelled_caught:
                        raise PullError(f"not fetched whole within the poll's deadline "
                                        f"(pull.timeout_s={self.pull.timeout_s:g})")
                except ServerUnreachable:
                    self.queue.pull_abandoned(uid)
                    raise
                except PullError as error:
                    self.queue.pull_failed(uid, str(error), self.config.retry_first_s, self.config.retry_max_s,
                                           self.config.max_attempts)
                    continue
                except _Stopped:
                    self.queue.pull_abandoned(uid)
                    break
                except BaseException:
                    self.queue.pull_abandoned(uid)
                    raise
                self.queue.mark_pulled(uid)
                logger.info("study %s: %d instance(s) pulled over DICOMweb", uid, count)
                taken += count
        return taken

    # ---- HTTP ---------------------------------------------------------------------------------------
    @asynccontextmanager
    async def _get(self, client, url: str, params: dict[str, str] | None, accept: str) -> AsyncIterator[Any]:
        """GET ``url`` as a stream; redirects followed only to the configured scheme, host and port."""
        import httpx

        what = "QIDO-RS search" if params is not None else "WADO-RS"
        for _ in range(MAX_REDIRECTS + 1):
            try:
                async with client.stream("GET", url, params=params, headers={
                        "Accept": accept, "Accept-Encoding": "identity"}) as response:
                    if response.is_redirect:
                        target = response.url.join(response.headers.get("Location", ""))
                        if (target.scheme, target.host, target.port) != self._origin:
                            raise PullError(f"{what}: redirect to {target.scheme}://{target.host}"
                                            f"{':' if target.port else ''}{target.port or ''} refused "
                                            f"(only {self.pull.url}'s host is trusted)")
                        url, params = str(target), None
                        continue
                    encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
                    if encoding not in ("", "identity"):  # a compressed body would inflate past what is counted
                        raise PullError(f"{what}: Content-Encoding {encoding[:100]!r}, expected identity")
                    yield response
                    return
            except (httpx.ConnectError, httpx.ConnectTimeout) as error:
                raise ServerUnreachable(f"{what}: {self.pull.url} unreachable ({type(error).__name__}: "
                                        f"{error})") from None
            except httpx.HTTPError as error:
                raise PullError(f"{what}: {type(error).__name__}: {error}") from None
        raise PullError(f"{what}: more than {MAX_REDIRECTS} redirects")

    async def _new_studies(self, client) -> list[str]:
        """Study UIDs the QIDO-RS search returns that are due to be fetched (new, or their retry wait over)."""
        body = bytearray()
        async with self._get(client, f"{self.pull.url}/studies", dict(self.pull.filter),
                             "application/dicom+json") as response:
            if response.status_code == 204:  # no match
                return []
            if response.status_code != 200:
                raise PullError(f"QIDO-RS search answered HTTP {response.status_code}")
            async for chunk in response.aiter_raw():
                body += chunk
                if len(body) > MAX_QIDO_BYTES:
                    raise PullError(f"QIDO-RS search answer larger than {MAX_QIDO_BYTES} bytes: "
                                    "narrow pull.filter (e.g. StudyDate)")
        try:
            found = json.loads(body)
        except (ValueError, RecursionError) as error:
            raise PullError(f"QIDO-RS search answer is not JSON ({type(error).__name__})") from None
        if not isinstance(found, list):
            raise PullError(f"QIDO-RS search answer is a JSON {type(found).__name__}, expected an array")
        uids: list[str] = []
        for study in found:
            uid = _study_uid(study)
            if uid is None:
                logger.debug("DICOMweb pull: a search result without a valid StudyInstanceUID skipped")
            elif uid not in uids and self.queue.pull_due(uid):
                uids.append(uid)
        return uids

    async def _fetch_study(self, client, uid: str) -> int:
        """Stream the study's WADO-RS answer part by part into the spool; returns the instances taken."""
        cap = self.config.max_instance_bytes
        taken = 0
        async with self._get(client, f"{self.pull.url}/studies/{uid}", None, WADO_ACCEPT) as response:
            if response.status_code != 200:
                raise PullError(f"WADO-RS answered HTTP {response.status_code}")
            parts = _PartWriter(_boundary(response.headers.get("Content-Type", "")), self._tmp, cap,
                                self.config.max_instance_mb)
            try:
                async for chunk in response.aiter_raw():
                    if self._stop.is_set():
                        raise _Stopped()
                    parts.feed(chunk)
                    while parts.finished:
                        path = parts.finished.pop(0)
                        try:
                            status = self.scp.ingest(path, "DICOMweb")
                        finally:
                            path.unlink(missing_ok=True)
                        if status != 0:
                            raise PullError(f"instance in part {parts.parts} refused with status 0x{status:04X} "
                                            f"({_STATUS_MEANING.get(status, 'see the node log')})")
                        taken += 1
                if not parts.ended:
                    raise PullError(f"the answer ended inside part {max(parts.parts, 1)} "
                                    "(no closing multipart boundary)")
            finally:
                parts.close()
        return taken
