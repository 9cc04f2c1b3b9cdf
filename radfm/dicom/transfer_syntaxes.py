"""Which transfer syntaxes the node takes over C-STORE: those the installed decoders can read, as stored.

A PACS sends an instance in the transfer syntax it was stored in (JPEG 2000, JPEG-LS, RLE, ...)
when the receiver accepts it, and transcodes only when it can (Debian's Orthanc without its GDCM
plugin cannot transcode JPEG 2000 at all). So the Storage SCP offers every storage SOP class with
the uncompressed syntaxes plus each compressed one that pydicom reports it can decode here
(``pydicom.pixels.get_decoder(uid).is_available``: a plugin such as Pillow with OpenJPEG, pyjpegls,
pylibjpeg or GDCM is installed), decided once when the node starts. Anything else (e.g. JPEG
lossless without pylibjpeg-libjpeg or GDCM, HTJ2K, MPEG video) is refused at association, and
:func:`log_refused_transfer_syntaxes` names the syntax in the node's log.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger("radfm.node")

# always read without a codec (pydicom itself); pynetdicom's defaults for a storage context
UNCOMPRESSED = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.2")
_CONTEXT_REJECTED_TRANSFER_SYNTAX = 0x04  # A-ASSOCIATE-AC result: transfer syntaxes not supported


def _decoder_available(uid: str) -> bool:
    """Whether pydicom can decode pixel data in transfer syntax ``uid`` with what is installed."""
    try:
        from pydicom.pixels import get_decoder
    except ImportError:  # pydicom 2.x: the pixel data handlers
        import pydicom.config

        return any(h.supports_transfer_syntax(uid) and h.is_available() for h in pydicom.config.pixel_data_handlers)
    try:
        return bool(get_decoder(uid).is_available)
    except NotImplementedError:  # no decoder for this syntax at all
        return False


def decodable_transfer_syntaxes() -> list[str]:
    """The transfer syntaxes the node accepts: uncompressed ones, then every compressed one pydicom can decode.

    Returns:
        Transfer syntax UIDs in the order the node prefers them (uncompressed first).
    """
    from pydicom.uid import AllTransferSyntaxes

    compressed = [str(uid) for uid in AllTransferSyntaxes if str(uid) not in UNCOMPRESSED]
    return list(UNCOMPRESSED) + [uid for uid in compressed if _decoder_available(uid)]


def decodable_storage_contexts() -> list[Any]:
    """pynetdicom's storage presentation contexts, each with :func:`decodable_transfer_syntaxes`.

    Returns:
        ``PresentationContext`` items for ``AE.supported_contexts`` (every storage SOP class).
    """
    from pynetdicom import AllStoragePresentationContexts, build_context

    syntaxes = decodable_transfer_syntaxes()
    return [build_context(context.abstract_syntax, syntaxes) for context in AllStoragePresentationContexts]


def _name(uid: str) -> str:
    from pydicom.uid import UID

    name = UID(uid).name
    return f"{name} ({uid})" if name != uid else uid


def refused_transfer_syntaxes(event: Any) -> list[str]:
    """One line per presentation context refused for its transfer syntaxes in an accepted association.

    Args:
        event: pynetdicom's ``EVT_ACCEPTED`` event (the node is the acceptor).

    Returns:
        Lines naming the SOP class and the transfer syntaxes the peer proposed for it.
    """
    assoc = event.assoc
    proposed = {cx.context_id: cx for cx in assoc.requestor.requested_contexts}
    lines = []
    for context in assoc.rejected_contexts:
        if context.result != _CONTEXT_REJECTED_TRANSFER_SYNTAX:
            continue
        asked = proposed.get(context.context_id, context)
        lines.append(f"{_name(str(context.abstract_syntax))} in "
                     f"{', '.join(_name(str(uid)) for uid in asked.transfer_syntax)}")
    return lines


def log_refused_transfer_syntaxes(event: Any) -> None:
    """``EVT_ACCEPTED`` handler: log each presentation context refused because no decoder here reads it.

    Args:
        event: pynetdicom's ``EVT_ACCEPTED`` event.
    """
    caller = f"{event.assoc.requestor.ae_title.strip()}@{event.assoc.requestor.address}"
    for line in refused_transfer_syntaxes(event):
        logger.warning("association from %s: refused %s: no installed decoder reads this transfer syntax "
                       "(docs/hospital.md lists what the node accepts)", caller, line)
