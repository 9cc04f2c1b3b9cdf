"""Sending a report back: C-STORE to a DICOM peer, or STOW-RS to a DICOMweb server.

Each send is one try; the caller (:class:`radfm.node.node_runner.NodeRunner`) records the
outcome in the job table and retries with backoff. A try returns ``None`` when the peer
confirmed storage, otherwise a one-line reason (no patient data in it).
"""

from __future__ import annotations

from pathlib import Path

from radfm.node.node_config import Destination


def send_cstore(path: Path, destination: Destination, calling_ae: str, timeout_s: float = 30.0) -> str | None:
    """C-STORE the file at ``path`` to ``destination`` (its AE title, host and port)."""
    import pydicom
    from pynetdicom import AE

    dataset = pydicom.dcmread(path)
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout_s
    ae.add_requested_context(dataset.SOPClassUID, dataset.file_meta.TransferSyntaxUID)
    assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title)
    if not assoc.is_established:
        state = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "not established"
        return f"association with {destination.ae_title}@{destination.host}:{destination.port} {state}"
    try:
        status = assoc.send_c_store(dataset)
    finally:
        assoc.release()
    if status is None or "Status" not in status:
        return "no C-STORE response (connection lost or timed out)"
    if status.Status not in (0x0000, 0xB000, 0xB007, 0xB006):  # success and warnings: stored
        return f"C-STORE status 0x{int(status.Status):04X}"
    return None


def send_stow(path: Path, destination: Destination, timeout_s: float = 30.0) -> str | None:
    """STOW-RS the file at ``path`` to ``destination.url`` (the DICOMweb root)."""
    import pydicom
    import requests
    from dicomweb_client.api import DICOMwebClient

    dataset = pydicom.dcmread(path)
    session = requests.Session()
    session.request = _with_timeout(session.request, timeout_s)
    try:
        client = DICOMwebClient(url=destination.url, session=session)
        client.set_http_retry_params(retry=False)  # its own retries block the sender for ~30 s; ours back off
        response = client.store_instances([dataset])
    except requests.RequestException as error:
        return f"STOW-RS to {destination.url} failed: {type(error).__name__}"
    failed = response.get("00081198") if hasattr(response, "get") else None
    if failed:
        return f"STOW-RS to {destination.url}: the server refused the instance"
    return None


def _with_timeout(request, timeout_s: float):
    def call(*args, **kwargs):
        kwargs.setdefault("timeout", timeout_s)
        return request(*args, **kwargs)
    return call


def send(path: Path, destination: Destination, calling_ae: str) -> str | None:
    """Send the SR at ``path`` to ``destination`` (C-STORE or STOW-RS); ``None`` on success, else the error to retry with."""
    try:
        if destination.kind == "dimse":
            return send_cstore(path, destination, calling_ae)
        return send_stow(path, destination)
    except OSError as error:
        return f"{type(error).__name__}: {error.strerror or error}"
    except Exception as error:  # any other failure is retried too, with its kind named
        return f"{type(error).__name__}: {str(error)[:200]}"
