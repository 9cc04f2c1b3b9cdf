"""The node's DICOM side: a pynetdicom Storage SCP that takes instances from allow-listed callers.

Everything arriving is hostile until checked:
* the association: the calling AE title must be allowed (pynetdicom rejects others at
  association time) and it must connect from the host the allow-list pairs with that title
  (checked for every C-ECHO and C-STORE: status 0x0124, refused, not authorised);
* each instance is written to a temp file as it arrives (never whole in memory), refused when
  larger than ``max_instance_mb``, when it is not parseable DICOM, when its UIDs are not UIDs,
  or when radfm.transforms' guards say its pixel data would inflate past ``max_scan_mb``;
* a study over ``max_instances_per_study`` instances is refused;
* an instance that is not an image (an SR, e.g. our own report coming back with the study)
  is acknowledged and dropped: the model cannot read it and it must not make a study look changed.
A refused instance gets a failure status; the node keeps running. Logs name UIDs and AE titles,
never the patient.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from radfm.hospital.job_queue import JobQueue
from radfm.hospital.node_config import NodeConfig

logger = logging.getLogger("radfm.node")

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
STATUS_OK = 0x0000
STATUS_NOT_AUTHORISED = 0x0124
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_CANNOT_UNDERSTAND = 0xC000
STATUS_PROCESSING_FAILURE = 0x0110


class InstanceRefused(ValueError):
    """An instance the node will not keep; ``status`` is the C-STORE status sent back."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def _uid(value: Any, name: str) -> str:
    text = str(value or "")
    if len(text) > 64 or not _UID.match(text):
        raise InstanceRefused(f"{name} is not a DICOM UID", STATUS_CANNOT_UNDERSTAND)
    return text


def check_instance(path: Path, config: NodeConfig) -> Any:
    """The header of the received file at ``path`` (DICOM file format) or :class:`InstanceRefused`."""
    import pydicom

    from radfm.transforms.errors import ScanReadError
    from radfm.transforms.guards import check_dicom

    size = path.stat().st_size
    if size > config.max_instance_mb * 1024 * 1024:
        raise InstanceRefused(f"instance of {size} bytes exceeds max_instance_mb={config.max_instance_mb}",
                              STATUS_OUT_OF_RESOURCES)
    try:
        check_dicom(path, config.max_scan_mb * 1024 * 1024)  # deflate bombs and pixel-size claims
    except ScanReadError as error:
        raise InstanceRefused(f"refused by the scan guard: {str(error).replace(str(path), 'instance')}",
                              STATUS_OUT_OF_RESOURCES) from None
    try:
        header = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as error:  # pydicom raises many kinds on hostile bytes
        raise InstanceRefused(f"not readable DICOM ({type(error).__name__})", STATUS_CANNOT_UNDERSTAND) from None
    return header


class StorageSCP:
    """The Storage SCP (C-STORE, C-ECHO) on ``config.host:config.port``; :meth:`start` / :meth:`stop`."""

    def __init__(self, config: NodeConfig, queue: JobQueue) -> None:
        self.config = config
        self.queue = queue
        self.received = 0
        self.refused = 0
        self.ignored = 0
        self._server = None
        self._spool_tmp = queue.root / "tmp"
        self._spool_tmp.mkdir(exist_ok=True)

    def _caller_allowed(self, event) -> bool:
        title = event.assoc.requestor.ae_title.strip()
        address = event.assoc.requestor.address
        return any(c.ae_title == title and c.host == address for c in self.config.allowed_callers)

    def handle_echo(self, event) -> int:
        if not self._caller_allowed(event):
            logger.warning("C-ECHO from %s@%s refused: not on the allow-list", event.assoc.requestor.ae_title.strip(),
                           event.assoc.requestor.address)
            return STATUS_NOT_AUTHORISED
        return STATUS_OK

    def handle_store(self, event) -> int:
        caller = f"{event.assoc.requestor.ae_title.strip()}@{event.assoc.requestor.address}"
        if not self._caller_allowed(event):
            self.refused += 1
            logger.warning("instance from %s refused: caller not on the allow-list", caller)
            return STATUS_NOT_AUTHORISED
        # pynetdicom wrote the instance to a temp file as it arrived (STORE_RECV_CHUNKED_DATASET)
        return self.ingest(Path(event.dataset_path), caller)

    def ingest(self, received: Path, caller: str) -> int:
        """Check the DICOM file at ``received`` and keep a copy in the spool; returns the C-STORE status.

        ``caller`` names the source in logs (``AE@host`` or ``DICOMweb``). Used by C-STORE and the pull mode.
        """
        temp = None
        try:
            header = check_instance(received, self.config)
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
        from pynetdicom import AE, _config, evt
        from pynetdicom.sop_class import Verification

        from radfm.hospital.transfer_syntaxes import decodable_storage_contexts, log_refused_transfer_syntaxes

        _config.STORE_RECV_CHUNKED_DATASET = True  # instances go to disk as they arrive, not into memory
        _config.LOG_HANDLER_LEVEL = "none"
        ae = AE(ae_title=self.config.ae_title)
        ae.require_calling_aet = sorted({c.ae_title for c in self.config.allowed_callers})
        ae.supported_contexts = decodable_storage_contexts()  # compressed too, when a decoder here reads it
        ae.add_supported_context(Verification)
        ae.maximum_associations = 8
        ae.network_timeout = 60
        ae.acse_timeout = 30
        ae.dimse_timeout = 60
        handlers = [(evt.EVT_C_STORE, self.handle_store), (evt.EVT_C_ECHO, self.handle_echo),
                    (evt.EVT_REJECTED, self._rejected), (evt.EVT_ACCEPTED, log_refused_transfer_syntaxes)]
        self._server = ae.start_server((self.config.host, self.config.port), block=False, evt_handlers=handlers)
        logger.info("listening as %s on %s:%d", self.config.ae_title, self.config.host, self.port)

    def _rejected(self, event) -> None:
        logger.warning("association from %s@%s rejected (calling AE title not on the allow-list)",
                       event.assoc.requestor.ae_title.strip(), event.assoc.requestor.address)

    @property
    def port(self) -> int:
        return self._server.server_address[1] if self._server is not None else self.config.port

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        shutil.rmtree(self._spool_tmp, ignore_errors=True)
