"""Client for the local RadFM service (``radfm serve``), with no dependency beyond the standard library.

It runs inside 3D Slicer's Python (which has neither radfm nor httpx) and in CI. The Slicer
widget only collects files and shows results; everything testable lives here:

* :func:`build_multipart` — the ``multipart/form-data`` body the service expects (field
  ``files`` per scan file, ``prompt``, generation options, ``sr``).
* :func:`ask` — POST it and parse the answer; errors come back as :class:`ServiceError`
  carrying the service's reason.
* :func:`save_sr` — write the DICOM SR returned by the service (atomically).
"""

from __future__ import annotations

import base64
import json
import mimetypes
import os
import tempfile
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_URL = "http://127.0.0.1:8765"
_CONTENT_TYPES = {".nii": "application/octet-stream", ".gz": "application/gzip", ".dcm": "application/dicom",
                  ".png": "image/png", ".nrrd": "application/octet-stream"}


class ServiceError(RuntimeError):
    """The service refused or failed a request; ``status`` is the HTTP status (0: unreachable)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"RadFM service error {status}: {reason}" if status else f"RadFM service unreachable: {reason}")
        self.status = status
        self.reason = reason


@dataclass
class Answer:
    """What the service returned for one question."""

    text: str
    prompt: str
    model: dict = field(default_factory=dict)
    scans: list = field(default_factory=list)
    timing_s: dict = field(default_factory=dict)
    sr: bytes | None = None  # DICOM SR (only when requested and DICOM files were sent)
    sr_error: str | None = None

    def summary(self) -> str:
        """One line naming the model and its weights, shown under the answer."""
        weights = str(self.model.get("weights_sha256", "?"))[:12]
        return f"{self.model.get('name', 'RadFM')} {self.model.get('version', '')} (weights {weights}…), UNVERIFIED"


def build_multipart(files: list[str | Path], fields: dict[str, str]) -> tuple[bytes, str]:
    """``(body, content_type)`` of a multipart form: every path as a ``files`` part, then ``fields``.

    A DICOM series is sent as its slice files; the service groups them by SeriesInstanceUID.
    """
    if not files:
        raise ValueError("no scan files to send")
    boundary = f"radfm-{uuid.uuid4().hex}"
    chunks: list[bytes] = []
    for name, value in fields.items():
        chunks.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode() + str(value).encode("utf-8") + b"\r\n"
        )
    for path in files:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"scan file {path} does not exist")
        content_type = _CONTENT_TYPES.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        safe_name = path.name.replace('"', "_")
        header = (f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{safe_name}"\r\n'
                  f"Content-Type: {content_type}\r\n\r\n")
        chunks.append(header.encode() + path.read_bytes() + b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


def parse_answer(status: int, body: bytes) -> Answer:
    """Turn a service response into an :class:`Answer` or raise :class:`ServiceError` with its reason."""
    try:
        payload = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ServiceError(status, f"not a JSON answer: {body[:200]!r}") from None
    if status != 200:
        reason = payload.get("error") or payload.get("detail") or payload
        raise ServiceError(status, str(reason))
    if "answer" not in payload:
        raise ServiceError(status, "the response has no 'answer' field")
    sr = base64.b64decode(payload["sr"]) if payload.get("sr") else None
    return Answer(text=payload["answer"], prompt=payload.get("prompt", ""), model=payload.get("model", {}),
                  scans=payload.get("scans", []), timing_s=payload.get("timing_s", {}), sr=sr,
                  sr_error=payload.get("sr_error"))


def ask(
    files: list[str | Path],
    prompt: str,
    url: str = DEFAULT_URL,
    max_new_tokens: int | None = None,
    want_sr: bool = False,
    timeout_s: float = 600.0,
    **options: str | int | float | bool,
) -> Answer:
    """Send scan files and a prompt to the service; returns the parsed :class:`Answer`."""
    if not prompt.strip():
        raise ValueError("the prompt is empty")
    fields = {"prompt": prompt, "sr": "true" if want_sr else "false"}
    if max_new_tokens is not None:
        fields["max_new_tokens"] = str(int(max_new_tokens))
    fields.update({k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in options.items()})
    body, content_type = build_multipart(files, fields)
    request = urllib.request.Request(url.rstrip("/") + "/v1/answer", data=body, method="POST",
                                     headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return parse_answer(response.status, response.read())
    except urllib.error.HTTPError as error:
        return parse_answer(error.code, error.read())
    except (urllib.error.URLError, OSError) as error:
        raise ServiceError(0, f"{url}: {getattr(error, 'reason', error)} (is `radfm serve` running?)") from None


def health(url: str = DEFAULT_URL, timeout_s: float = 5.0) -> dict:
    """The service's ``/health`` JSON (model identity, queue), or :class:`ServiceError`."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=timeout_s) as response:
            return json.loads(response.read().decode("utf-8"))
    except (urllib.error.URLError, OSError) as error:
        raise ServiceError(0, f"{url}: {getattr(error, 'reason', error)} (is `radfm serve` running?)") from None


def save_sr(answer: Answer, path: str | Path) -> Path:
    """Write the answer's DICOM SR to ``path`` (temp file + rename); explains why when there is none."""
    if answer.sr is None:
        raise ValueError(answer.sr_error or "the service returned no SR: ask again with want_sr=True and DICOM input")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(answer.sr)
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return path


def answer_text_for_node(answer: Answer) -> str:
    """The text stored in the Slicer text node: prompt, answer and provenance."""
    return f"Prompt: {answer.prompt}\n\nAnswer: {answer.text}\n\nModel: {answer.summary()}\n"
