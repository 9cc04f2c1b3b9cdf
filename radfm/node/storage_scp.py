"""The node's DICOM side: a pynetdicom Storage SCP that takes instances from allow-listed callers.

Everything arriving is hostile until checked, and counted before it is trusted:
* the connection: connections that have not asked for an association yet are few (at most
  ``max_associations``, ``max_associations_per_host`` per host; a new one pushes the oldest silent one
  out) and short-lived (``association_request_timeout_s``), so silent sockets never lock an allowed
  PACS out; no PDU longer than :data:`MAX_PDU_BYTES` is read;
* the association: the calling AE title *and* the host it connects from must be a pair of the
  allow-list, checked when the association is requested (A-ASSOCIATE-RJ otherwise, before any
  instance byte is written); allowed callers hold at most ``max_associations`` associations,
  ``max_associations_per_host`` per host;
* each instance is written to a temp file as it arrives (never whole in memory) and its bytes are
  counted as its P-DATA PDUs arrive: past ``max_instance_mb`` the association is aborted and the partial
  file removed; a complete instance is refused when not parseable DICOM, when its UIDs are not UIDs,
  or when radfm.transforms' guards say its pixel data would inflate past ``max_scan_mb``; its header is
  read within the node's memory budget (the service's :class:`~radfm.answering.worker.MemoryBudget`),
  a deflated one from a bounded inflate to disk (pydicom would inflate it whole, twice);
* a study over ``max_instances_per_study`` instances is refused;
* an instance that is not an image (an SR, e.g. our own report coming back with the study)
  is acknowledged and dropped: the model cannot read it and it must not make a study look changed.
A refused instance gets a failure status; the node keeps running. Logs name UIDs, AE titles and
hosts, never the patient.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import socket
import socketserver
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from radfm.answering.worker import MemoryBudget
from radfm.dicom.dicom_uid import is_dicom_uid
from radfm.node.job_queue import JobQueue
from radfm.node.node_config import NodeConfig

logger = logging.getLogger("radfm.node")

MiB = 1024 * 1024
STATUS_OK = 0x0000
STATUS_NOT_AUTHORISED = 0x0124
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_CANNOT_UNDERSTAND = 0xC000
STATUS_PROCESSING_FAILURE = 0x0110
MAX_PDU_BYTES = 1 * MiB  # longest PDU read from a peer: we ask for 16 KiB P-DATA; an A-ASSOCIATE-RQ is a few kB
MAX_PDU_RECEIVED = 16382  # the P-DATA size we ask peers for (pynetdicom's default), the step of the size count
_DEFLATED = "1.2.840.10008.1.2.1.99"
_HEADER_READ_BYTES = 2 * MiB  # what reading a header costs besides its elements (pydicom's objects)


class InstanceRefused(ValueError):
    """An instance the node will not keep; ``status`` is the C-STORE status sent back."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def _uid(value: Any, name: str) -> str:
    text = str(value or "")
    if not is_dicom_uid(text):
        raise InstanceRefused(f"{name} is not a DICOM UID", STATUS_CANNOT_UNDERSTAND)
    return text


def _is_deflated(path: Path) -> bool:
    from pydicom.filereader import read_file_meta_info

    try:
        return str(read_file_meta_info(path).get("TransferSyntaxUID", "")) == _DEFLATED
    except Exception:  # no readable meta: the header read below refuses it
        return False


def header_read_bytes(path: Path, config: NodeConfig) -> int:
    """Memory that reading the header of the received file at ``path`` may take, for the memory budget.

    Args:
        path: the received instance.
        config: the node's limits (``max_scan_mb`` bounds the deflate guard's inflated head).

    Returns:
        The file's size (a plain header is read from the file's elements, at most all of them) plus,
        for a deflated file, the guard's inflated head and its parse (twice the head).
    """
    from radfm.transforms.guards import DICOM_INFLATED_HEADER_BYTES

    size = path.stat().st_size
    if _is_deflated(path):
        size += 2 * min(DICOM_INFLATED_HEADER_BYTES, config.max_scan_bytes)
    return size + _HEADER_READ_BYTES


def check_instance(path: Path, config: NodeConfig, scratch: Path | None = None) -> Any:
    """The header of the received file at ``path`` (DICOM file format) or :class:`InstanceRefused`.

    Args:
        path: the received instance (left unchanged).
        config: the node's limits.
        scratch: folder for the inflated copy of a deflated instance (default: the system's temp folder).

    Returns:
        The pydicom header (no pixel data).
    """
    from radfm.transforms.errors import ScanReadError
    from radfm.transforms.guards import check_dicom, check_dicom_inflation, write_inflated_dicom

    size = path.stat().st_size
    if size > config.max_instance_bytes:
        raise InstanceRefused(f"instance of {size} bytes exceeds max_instance_mb={config.max_instance_mb}",
                              STATUS_OUT_OF_RESOURCES)
    limit = config.max_scan_bytes
    fd, name = tempfile.mkstemp(dir=scratch, suffix=".dcm")
    os.close(fd)
    inflated = Path(name)
    try:
        check_dicom_inflation(path, limit)  # deflate bombs: counted, the head inflated at most 16 MiB
        # pydicom inflates a deflated file whole in memory, even for its header: a deflated instance is
        # read from a copy inflated to disk in 1 MiB pieces, counted against max_scan_mb
        readable = inflated if write_inflated_dicom(path, inflated, limit, name="instance") else path
        checked = check_dicom(readable, limit)  # the pixel-size claim; the header, parsed once
    except ScanReadError as error:
        message = str(error).replace(str(inflated), "instance").replace(str(path), "instance")
        raise InstanceRefused(f"refused by the scan guard: {message}", STATUS_OUT_OF_RESOURCES) from None
    except Exception as error:  # zlib and pydicom raise many kinds on hostile bytes
        raise InstanceRefused(f"not readable DICOM ({type(error).__name__})", STATUS_CANNOT_UNDERSTAND) from None
    finally:
        inflated.unlink(missing_ok=True)
    if checked is None:
        raise InstanceRefused("not readable DICOM (pydicom cannot read its header)", STATUS_CANNOT_UNDERSTAND)
    return checked.header


def _stop_waiting(assoc) -> None:
    """End the thread of an association still waiting for its A-ASSOCIATE-RQ (pynetdicom would wait
    ``acse_timeout`` on a closed socket): hand it an A-P-ABORT, which :meth:`StorageSCP._requested` ends."""
    if assoc is None:
        return
    from pynetdicom.pdu_primitives import A_P_ABORT

    assoc.dul.to_user_queue.put(A_P_ABORT())


class _Door:
    """Who is at the node's door: connections not yet asking for an association, and associations let in.

    Silent connections (no A-ASSOCIATE-RQ yet) are kept apart from admitted associations, so they can
    never use up the room of allowed callers: when ``pending_max`` of them (``per_host`` from one host)
    are open, a new connection pushes the oldest silent one out.
    """

    def __init__(self, pending_max: int, per_host: int, admitted_max: int) -> None:
        self.pending_max = pending_max
        self.per_host = per_host
        self.admitted_max = admitted_max
        self._lock = threading.Lock()
        self._pending: dict[socket.socket, tuple[str, float]] = {}
        self._waiting: dict[socket.socket, Any] = {}  # the pynetdicom Association waiting on each pending socket
        self._admitted: list[Any] = []  # pynetdicom Associations
        self.dropped_silent = 0

    def connection(self, sock: socket.socket, host: str) -> None:
        """A new TCP connection from ``host``: let it in, closing the oldest silent one when full."""
        with self._lock:
            self._pending = {s: v for s, v in self._pending.items() if s.fileno() != -1}
            self._waiting = {s: a for s, a in self._waiting.items() if s in self._pending}
            same_host = [s for s, (h, _) in self._pending.items() if h == host]
            if len(same_host) >= self.per_host or len(self._pending) >= self.pending_max:
                victims = same_host or list(self._pending)
                oldest = min(victims, key=lambda s: self._pending[s][1])
                old_host, since = self._pending.pop(oldest)
                self.dropped_silent += 1
                logger.warning("closed a connection from %s that sent no association request in %.1f s "
                               "(%d silent connections open)", old_host, time.monotonic() - since, len(victims))
                try:
                    oldest.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                _stop_waiting(self._waiting.pop(oldest, None))
            self._pending[sock] = (host, time.monotonic())

    def opened(self, sock: socket.socket, assoc) -> None:
        """``assoc`` waits for the A-ASSOCIATE-RQ on ``sock`` (so closing ``sock`` can end its thread at once)."""
        with self._lock:
            if sock in self._pending:
                self._waiting[sock] = assoc
            else:  # closed as silent before its association started
                _stop_waiting(assoc)

    def requested(self, sock: socket.socket | None) -> None:
        """The connection asked for an association: no longer silent."""
        with self._lock:
            self._pending.pop(sock, None)
            self._waiting.pop(sock, None)

    def admit(self, assoc, host: str) -> str | None:
        """Count ``assoc`` as an admitted association from ``host``; the reason when there is no room."""
        with self._lock:
            self._admitted = [a for a in self._admitted if a.is_alive()]
            from_host = sum(1 for a in self._admitted if a.requestor.address == host)
            if from_host >= self.per_host:
                return f"{from_host} associations already open from {host} (max_associations_per_host)"
            if len(self._admitted) >= self.admitted_max:
                return f"{len(self._admitted)} associations already open (max_associations)"
            self._admitted.append(assoc)
            return None

    def release(self, assoc) -> None:
        with self._lock:
            self._admitted = [a for a in self._admitted if a is not assoc]


class StorageSCP:
    """The Storage SCP (C-STORE, C-ECHO) on ``config.host:config.port``; :meth:`start` / :meth:`stop`."""

    def __init__(self, config: NodeConfig, queue: JobQueue) -> None:
        self.config = config
        self.queue = queue
        self.received = 0
        self.refused = 0
        self.ignored = 0
        self.aborted_oversized = 0
        self._server = None
        self._spool_tmp = queue.root / "tmp"
        self._spool_tmp.mkdir(exist_ok=True)
        # reading received headers: the service's budget, at most max_instance_mb at once
        self.budget = MemoryBudget(config.max_instance_bytes)
        self._door = _Door(config.max_associations, config.max_associations_per_host, config.max_associations)
        self._dataset_bytes: dict[int, int] = {}  # id(association) -> bytes of the data set being received

    def _caller_allowed(self, title: str, host: str) -> bool:
        return any(c.ae_title == title and c.host == host for c in self.config.allowed_callers)

    def handle_echo(self, event) -> int:
        """C-ECHO: success (only allowed callers get an association, see ``_requested``)."""
        return STATUS_OK  # only allowed callers get an association (_requested)

    def handle_store(self, event) -> int:
        """C-STORE: the instance pynetdicom already wrote to a temp file goes through :meth:`ingest`; returns its status."""
        caller = f"{event.assoc.requestor.ae_title.strip()}@{event.assoc.requestor.address}"
        # pynetdicom wrote the instance to a temp file as it arrived (STORE_RECV_CHUNKED_DATASET);
        # _pdu_received counted it on the way
        return self.ingest(Path(event.dataset_path), caller)

    def ingest(self, received: Path, caller: str) -> int:
        """Check the DICOM file at ``received`` and keep a copy in the spool; returns the C-STORE status.

        ``caller`` names the source in logs (``AE@host`` or ``DICOMweb``). Used by C-STORE and the pull mode.
        """
        temp = None
        try:
            with self.budget.hold(header_read_bytes(received, self.config)):
                header = check_instance(received, self.config, self._spool_tmp)
            study = _uid(header.get("StudyInstanceUID"), "StudyInstanceUID")
            series = _uid(header.get("SeriesInstanceUID"), "SeriesInstanceUID")
            sop = _uid(header.get("SOPInstanceUID"), "SOPInstanceUID")
            if "Rows" not in header:
                # not an image (an SR such as our own report, a presentation state): the model cannot
                # use it, and it must not make a study look changed when the PACS sends it again
                self.ignored += 1
                logger.debug("instance %s from %s is not an image; ignored", sop, caller)
                return STATUS_OK
            if self.queue.pending_count(study) >= self.config.max_instances_per_study:
                raise InstanceRefused(f"study has more than max_instances_per_study="
                                      f"{self.config.max_instances_per_study} instances", STATUS_OUT_OF_RESOURCES)
            digest = hashlib.sha256()
            fd, temp = tempfile.mkstemp(dir=self._spool_tmp, suffix=".dcm")
            with os.fdopen(fd, "wb") as out, received.open("rb") as source:
                for chunk in iter(lambda: source.read(1 << 20), b""):
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            target = self.queue.instance_path(study, series, sop)
            with self.queue.lock:  # the file and its row together: the sealer never sees one without the other
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(temp, target)
                self.queue.add_instance(study, series, sop, target, digest.hexdigest(),
                                        str(header.get("Modality", "")), str(header.get("SeriesDescription", ""))[:256],
                                        caller.split("@")[0])
            self.received += 1
            return STATUS_OK
        except InstanceRefused as error:
            self.refused += 1
            logger.warning("instance from %s refused: %s", caller, error)
            return error.status
        except OSError as error:
            self.refused += 1
            logger.error("instance from %s not stored: %s", caller, error.strerror)
            return STATUS_OUT_OF_RESOURCES
        except Exception as error:  # a bug must not stop the SCP; the sender gets a failure
            self.refused += 1
            logger.exception("instance from %s not stored (%s)", caller, type(error).__name__)
            return STATUS_PROCESSING_FAILURE
        finally:
            if temp is not None and os.path.exists(temp):  # not moved into the spool (an error on the way)
                os.unlink(temp)

    def start(self) -> None:
        """Listen on the configured port: decodable transfer syntaxes, allow-list at A-ASSOCIATE-RQ, P-DATA counted."""
        from pynetdicom import AE, _config, evt
        from pynetdicom.sop_class import Verification
        from pynetdicom.transport import ThreadedAssociationServer

        from radfm.dicom.transfer_syntaxes import decodable_storage_contexts, log_refused_transfer_syntaxes

        _config.STORE_RECV_CHUNKED_DATASET = True  # instances go to disk as they arrive, not into memory
        _config.LOG_HANDLER_LEVEL = "none"
        ae = AE(ae_title=self.config.ae_title)
        ae.supported_contexts = decodable_storage_contexts()  # compressed too, when a decoder here reads it
        ae.add_supported_context(Verification)
        ae.maximum_pdu_size = MAX_PDU_RECEIVED
        # our own door (_Door) counts allowed associations and silent connections; pynetdicom's count
        # (both kinds, and connections closing) only stops a flood
        ae.maximum_associations = 16 * self.config.max_associations + 64
        ae.network_timeout = 60
        ae.acse_timeout = self.config.association_request_timeout_s  # also how long a silent connection may stay
        ae.dimse_timeout = 60
        handlers = [(evt.EVT_C_STORE, self.handle_store), (evt.EVT_C_ECHO, self.handle_echo),
                    (evt.EVT_CONN_OPEN, self._connection_opened), (evt.EVT_REQUESTED, self._requested),
                    (evt.EVT_PDU_RECV, self._pdu_received), (evt.EVT_CONN_CLOSE, self._connection_closed),
                    (evt.EVT_REJECTED, self._rejected),
                    (evt.EVT_ACCEPTED, log_refused_transfer_syntaxes)]
        door = self._door

        class DoorServer(ThreadedAssociationServer):
            def verify_request(self, request, client_address) -> bool:  # socketserver's accept-time hook
                door.connection(request, client_address[0])
                return True

            def shutdown(self) -> None:  # started here, not by AE.start_server: not in the AE's server list
                socketserver.BaseServer.shutdown(self)
                self.server_close()

        self._server = ae.make_server((self.config.host, self.config.port), evt_handlers=handlers,
                                      server_class=DoorServer)
        threading.Thread(target=self._server.serve_forever, name="radfm-scp-accept", daemon=True).start()
        logger.info("listening as %s on %s:%d", self.config.ae_title, self.config.host, self.port)

    def _connection_opened(self, event) -> None:
        """Read no PDU longer than MAX_PDU_BYTES: pynetdicom reads a PDU whole, whatever length it states."""
        sock = event.assoc.dul.socket
        self._door.opened(sock.socket, event.assoc)
        recv = sock.recv

        def recv_bounded(nr_bytes: int):
            if nr_bytes > MAX_PDU_BYTES:
                logger.warning("connection from %s closed: a PDU of %d bytes (at most %d read)",
                               event.assoc.requestor.address, nr_bytes, MAX_PDU_BYTES)
                raise OSError(f"PDU of {nr_bytes} bytes refused")
            return recv(nr_bytes)

        sock.recv = recv_bounded

    def _requested(self, event) -> None:
        """The A-ASSOCIATE-RQ arrived: the calling AE title and host must be an allowed pair, with room left."""
        from pynetdicom.pdu_primitives import A_ASSOCIATE

        assoc = event.assoc
        self._door.requested(getattr(assoc.dul.socket, "socket", None))
        request = assoc.requestor.primitive
        if not isinstance(request, A_ASSOCIATE):  # the peer aborted or closed before asking
            assoc.is_aborted = True
            assoc.kill()
            return
        title = str(request.calling_ae_title).strip()
        host = assoc.requestor.address
        if not self._caller_allowed(title, host):
            known = any(c.ae_title == title for c in self.config.allowed_callers)
            why = (f"AE title {title} is allowed only from {', '.join(c.host for c in self.config.allowed_callers if c.ae_title == title)}"
                   if known else "calling AE title not on the allow-list")
            logger.warning("association from %s@%s rejected (%s)", title, host, why)
            assoc.acse.send_reject(0x01, 0x01, 0x03)  # permanent, service user, calling AE title not recognised
            assoc.kill()
            return
        full = self._door.admit(assoc, host)
        if full is not None:
            logger.warning("association from %s@%s rejected for now: %s", title, host, full)
            assoc.acse.send_reject(0x02, 0x03, 0x02)  # transient, presentation, local limit exceeded
            assoc.kill()

    def _pdu_received(self, event) -> None:
        """Count the data set of the instance being received, PDU by PDU; past max_instance_mb: abort."""
        from pynetdicom.pdu import P_DATA_TF

        if not isinstance(event.pdu, P_DATA_TF):
            return
        key = id(event.assoc)
        count = self._dataset_bytes.get(key, 0)
        for item in event.pdu.presentation_data_value_items:
            data = item.presentation_data_value or b""
            if data[:1] and data[0] & 1:  # a command fragment: a new message starts
                count = 0
            else:
                count += max(0, len(data) - 1)
        self._dataset_bytes[key] = count
        cap = self.config.max_instance_bytes
        if count > cap and not event.assoc.is_aborted:
            self.refused += 1
            self.aborted_oversized += 1
            logger.warning("association from %s@%s aborted: an instance passed max_instance_mb=%d while it was "
                           "received (%d bytes so far)", event.assoc.requestor.ae_title.strip(),
                           event.assoc.requestor.address, self.config.max_instance_mb, count)
            event.assoc.is_aborted = True
            # the DUL sends A-ABORT and reads no further P-DATA (this PDU is still written): the partial
            # file, at most the cap and one PDU, is removed when the connection closes
            event.assoc.abort(block=False)

    def _drop_partial(self, assoc) -> None:
        """Remove the temp file of an instance that will never be complete (aborted, connection lost)."""
        message = getattr(assoc.dimse, "message", None)
        handle = getattr(message, "_data_set_file", None)  # pynetdicom's NamedTemporaryFile(delete=False)
        if handle is None:
            return
        try:
            handle.close()
            os.unlink(handle.name)
        except OSError:
            pass

    def _connection_closed(self, event) -> None:
        self._dataset_bytes.pop(id(event.assoc), None)
        self._door.release(event.assoc)
        self._drop_partial(event.assoc)

    def _rejected(self, event) -> None:
        """pynetdicom's own rejections (our allow-list and room checks log in _requested)."""
        try:
            reason = event.assoc.acceptor.primitive.reason_str
        except Exception:  # a reason pynetdicom cannot name
            reason = "no reason given"
        logger.warning("association from %s@%s rejected by the DICOM layer (%s)",
                       str(event.assoc.requestor.ae_title).strip(), event.assoc.requestor.address, reason)

    @property
    def port(self) -> int:
        """The port listened on (the configured one until started; the real one when it was 0)."""
        return self._server.server_address[1] if self._server is not None else self.config.port

    def stop(self) -> None:
        """Stop listening and remove the spool's temp folder (partial instances included)."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        shutil.rmtree(self._spool_tmp, ignore_errors=True)
