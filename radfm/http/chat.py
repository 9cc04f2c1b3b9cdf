"""The browser chat page of ``radfm serve`` (``GET /``) and the small JSON API behind it.

Plain HTML/JS/CSS served from ``radfm/http/static/chat`` by the service's own FastAPI app
(no CDN, no inline script; the same process, limits and loopback default as ``/v1/answer``).

Routes::

    GET    /                                 the page
    GET    /chat/api/info                    model identity, window presets, limits
    POST   /chat/api/scans                   multipart ``files``: files, a DICOM selection or a zip -> scans
    GET    /chat/api/scans/ID/slice.png      ?view=original|model&slice=K&window=auto|PRESET
    DELETE /chat/api/scans/ID
    POST   /chat/api/answer                  JSON conversation -> server-sent events, token by token
    POST   /chat/api/export/sr               JSON answer record -> DICOM SR (or a zip, see below)

Uploaded scans go through the request path (``radfm.answering.request``) with ``prompt=None``:
read and preprocessed once (the model's input and the display volume are kept in memory), addressed
by a random id; the page sends ids, not files, with each question, which goes through the request
path again with the kept images. At most ``MAX_KEPT_SCANS`` and ``Limits.max_kept_scan_bytes``
(over all clients: model inputs, display volumes and files) are kept: the oldest are dropped with
their files, and all at shutdown.

An SR must reference DICOM images. When some scans of an answer are not DICOM (PNG, NIfTI,
NRRD), the export also writes one Secondary Capture image per such scan (its middle slice as
displayed, in a new study with an anonymous patient) and returns the SR and those images as a
zip, so that every reference in the SR resolves.
"""

from __future__ import annotations

import io
import json
import secrets
import threading
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import UploadFile
from starlette.requests import ClientDisconnect

from radfm.answering.conversation import Turn, conversation_prompt
from radfm.answering.options import refuse_unknown
from radfm.answering.refusal import BodyTooLarge, RequestError
from radfm.answering.request import AnswerRequest, AnswerResult, ScanInput
from radfm.answering.scans import Scan
from radfm.http.api_schema import CHAT_ANSWER_JSON, CHAT_SCANS_FORM, CHAT_SR_JSON
from radfm.http.http_guard import decode_json
from radfm.transforms.formats import label_of

STATIC_DIR = Path(__file__).resolve().parent / "static" / "chat"
MAX_KEPT_SCANS = 32
CHAT_OPTIONS = ("max_new_tokens", "do_sample", "temperature", "top_p", "top_k", "seed")
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; script-src 'self'; style-src 'self'; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@dataclass
class ChatScan:
    """An uploaded scan: where its files are, what the model receives, and how to display it."""

    id: str
    scan: Scan
    workdir: Path
    image: Any  # the preprocessed model input [3, H, W, D]
    modality: str
    label: str
    _display: Any = field(default=None, repr=False)

    def display(self):
        """The original scan for display (``radfm.rating.images``), read on first use."""
        if self._display is None:
            from radfm.rating.images import load_display_volume

            self._display = load_display_volume(self.scan.path, series_uid=self.scan.series_uid)
        return self._display

    def kept_bytes(self) -> int:
        """Bytes this scan holds in memory: the model input and the display volume (loaded here if not yet)."""
        return int(np.asarray(self.image).nbytes) + int(self.display().data.nbytes)

    def model_view(self) -> np.ndarray:
        """The model's input as [D, H, W] grey values (first channel), oriented like the original's display.

        Same display order as ``radfm.rating.images`` (:func:`~radfm.rating.images.display_order`):
        volumes are in RAS order in the model's input and shown anterior up, patient right on the
        left; 2D images (and volumes without geometry) keep their rows and columns.
        """
        from radfm.rating.images import display_order

        meta = getattr(self.image, "meta", None) or {}
        if "spatial_dims" in meta:
            oriented = meta["spatial_dims"] == 3 and meta.get("orientation_known", True) is not False
        else:  # a plain tensor: pictures are 2D, the other upload kinds are volumes with geometry
            oriented = self.scan.kind not in ("png", "jpeg")
        array = np.asarray(self.image[:1], dtype=np.float32)  # [1, H, W, D]
        return np.ascontiguousarray(display_order(array, oriented)[0])

    def describe(self) -> dict[str, Any]:
        original = self.display()
        shape = list(original.data.shape)
        original_shape = shape[1:3] + [shape[0]] if not original.rgb else shape[1:3]
        return {
            "id": self.id, "name": self.label, "kind": self.scan.kind, "modality": self.modality,
            "files": len(self.scan.names), "original_shape": original_shape, "original_depth": original.depth,
            "rgb": bool(original.rgb), "model_shape": [int(s) for s in self.image.shape],
            "model_depth": int(self.image.shape[-1]), "series_uid": self.scan.series_uid,
        }


def _modality(scan: Scan) -> str:
    """The DICOM Modality tag, else the file format and whether it is 2D or 3D."""
    if scan.kind == "dicom":
        import pydicom

        first = next(p for p in sorted(Path(scan.path).iterdir()) if p.is_file())
        return str(pydicom.dcmread(first, stop_before_pixels=True).get("Modality", "DICOM"))
    return label_of(scan.kind)


def _window(name: str | None) -> str | None:
    """A ``radfm.transforms.WINDOW_PRESETS`` name as the "LOW,HIGH" the slice renderer takes."""
    from radfm.transforms import WINDOW_PRESETS

    if name in (None, "", "auto"):
        return None
    if name not in WINDOW_PRESETS:
        raise ValueError(f"window: expected auto or one of {sorted(WINDOW_PRESETS)}, got {name!r}")
    low, high = WINDOW_PRESETS[name]
    return f"{low},{high}"


def _png(plane: np.ndarray, low: float, high: float) -> bytes:
    from PIL import Image

    scaled = (np.nan_to_num(plane, nan=low) - low) / max(high - low, 1e-6)
    buffer = io.BytesIO()
    Image.fromarray((np.clip(scaled, 0, 1) * 255 + 0.5).astype(np.uint8)).save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


class ChatScans:
    """The scans uploaded through the page (all clients together), newest last; thread safe.

    Kept within a count and a byte budget (what each scan holds in memory, its model input and
    display volume, plus the files on disk); the oldest are dropped first. ``release(folder)``
    removes an upload's folder once no kept scan uses it.
    """

    def __init__(self, max_bytes: int, release: Callable[[Path], None], max_kept: int = MAX_KEPT_SCANS) -> None:
        self.max_kept, self.max_bytes = max_kept, int(max_bytes)
        self._release_folder = release
        self._items: OrderedDict[str, ChatScan] = OrderedDict()
        self._bytes: dict[str, int] = {}
        self._lock = threading.Lock()

    def add(self, items: list[ChatScan]) -> None:
        """Keep one upload's scans (they share a folder, whose bytes count once)."""
        if not items:
            return
        files = _folder_bytes(items[0].workdir)
        sizes = [item.kept_bytes() + (files if i == 0 else 0) for i, item in enumerate(items)]
        if sum(sizes) > self.max_bytes:
            self._release_folder(items[0].workdir)
            raise RequestError(f"the upload needs {sum(sizes)} bytes on the server; the chat page keeps at most "
                               f"{self.max_bytes} bytes of scans", 413, code="too_large")
        with self._lock:
            for item, size in zip(items, sizes):
                self._items[item.id] = item
                self._bytes[item.id] = size
            while len(self._items) > self.max_kept or sum(self._bytes.values()) > self.max_bytes:
                scan_id, old = self._items.popitem(last=False)
                self._bytes.pop(scan_id, None)
                self._drop(old)

    def _drop(self, item: ChatScan) -> None:
        if all(other.workdir != item.workdir for other in self._items.values()):
            self._release_folder(item.workdir)

    def get(self, scan_id: str) -> ChatScan:
        with self._lock:
            if scan_id not in self._items:
                raise RequestError(f"scan {scan_id!r} is not (or no longer) on the server; upload it again", 404)
            return self._items[scan_id]

    def remove(self, scan_id: str) -> None:
        with self._lock:
            item = self._items.pop(scan_id, None)
            self._bytes.pop(scan_id, None)
            if item is not None:
                self._drop(item)

    def clear(self) -> None:
        with self._lock:
            items, self._items, self._bytes = list(self._items.values()), OrderedDict(), {}
        for folder in {item.workdir for item in items}:
            self._release_folder(folder)


def _error(error: RequestError) -> JSONResponse:
    return JSONResponse({"error": str(error)}, status_code=error.status_code, headers=SECURITY_HEADERS)


def _kept_items(result: AnswerResult) -> dict[str, Any]:
    """In the reading pool, while the files are there: the chat items and what the page shows of them."""
    workdir = result.workspace
    items, described = [], []
    for scan, image in zip(result.scans, result.images):
        label = scan.names[0] if len(scan.names) == 1 else f"{Path(scan.names[0]).parent.name or 'DICOM'} ({len(scan.names)} files)"
        item = ChatScan(secrets.token_hex(12), scan, workdir, image, _modality(scan), label)
        described.append(item.describe())
        items.append(item)
    return {"items": items, "described": described}


def add_chat_routes(app: FastAPI, service) -> None:
    """Register the page, its static files and its API on the service's app."""
    path = service.path
    scans = ChatScans(service.limits.max_kept_scan_bytes, path.release)
    service.chat_scans = scans
    app.mount("/chat/static", StaticFiles(directory=STATIC_DIR), name="chat-static")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers=SECURITY_HEADERS)

    @app.get("/chat/api/info")
    def info() -> JSONResponse:
        from radfm.transforms import WINDOW_PRESETS

        return JSONResponse({
            "model": service.answerer.identity.to_dict(), "verification": "UNVERIFIED",
            "max_images": service.limits.max_images, "max_new_tokens": service.limits.max_new_tokens,
            "default_max_new_tokens": min(256, service.limits.max_new_tokens),
            "window_presets": {name: list(bounds) for name, bounds in WINDOW_PRESETS.items()},
        }, headers=SECURITY_HEADERS)

    @app.post("/chat/api/scans", openapi_extra=CHAT_SCANS_FORM)
    async def upload(request: Request) -> JSONResponse:
        try:
            try:
                form = await request.form(max_files=service.limits.max_files + 1, max_fields=10)
            except (BodyTooLarge, ClientDisconnect):
                raise
            except Exception as error:  # noqa: BLE001 - malformed multipart
                raise RequestError(f"cannot parse the upload: {getattr(error, 'detail', error)}") from None
            try:
                files = [(k, v) for k, v in form.multi_items() if isinstance(v, UploadFile)]
                if not files:
                    raise RequestError("no files: send scans in the multipart field 'files'")
                inputs = [ScanInput(v.filename or f"file{i}", data=v.file) for i, (_, v) in enumerate(files)]
                result = await path.run(AnswerRequest(None, inputs, one_scan_per_input=False, keep_files=True,
                                                      after=_kept_items))
            finally:
                await form.close()
            scans.add(result.extra["items"])
            return JSONResponse({"scans": result.extra["described"]}, headers=SECURITY_HEADERS)
        except RequestError as error:
            return _error(error)

    @app.get("/chat/api/scans/{scan_id}/slice.png")
    async def slice_png(scan_id: str, view: str = "original", slice: int = 0, window: str = "auto") -> Response:
        try:
            item = scans.get(scan_id)
            data = await path.worker.read(_render, item, view, slice, window)
        except RequestError as error:
            return _error(error)
        except ValueError as error:
            return _error(RequestError(str(error), 422))
        return Response(data, media_type="image/png", headers=SECURITY_HEADERS)

    @app.delete("/chat/api/scans/{scan_id}")
    def delete_scan(scan_id: str) -> JSONResponse:
        scans.remove(scan_id)
        return JSONResponse({"deleted": scan_id}, headers=SECURITY_HEADERS)

    @app.post("/chat/api/answer", openapi_extra=CHAT_ANSWER_JSON)
    async def answer(request: Request):
        try:
            try:
                body = decode_json(await request.body())
            except ValueError as error:
                raise RequestError(f"the request body is not valid JSON ({error})") from None
            if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
                raise RequestError("expected JSON {\"messages\": [{\"role\", \"text\", \"scans\": [ids]}], ...}")
            refuse_unknown(list(body), ("messages", *CHAT_OPTIONS), "field")
            turns = []
            for i, message in enumerate(body["messages"]):
                if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
                    raise RequestError(f"messages[{i}]: expected an object with role user or assistant")
                ids = message.get("scans") or []
                if not isinstance(message.get("text"), str) or not isinstance(ids, list):
                    raise RequestError(f"messages[{i}]: 'text' must be a string and 'scans' a list of scan ids")
                turns.append(Turn(message["role"], message["text"], [scans.get(str(s)) for s in ids]))
            try:
                prompt, items = conversation_prompt(turns)
            except ValueError as error:
                raise RequestError(str(error), 422) from None
            inputs = [ScanInput(item.label, image=item.image, scan=item.scan) for item in items]
            options = {name: body[name] for name in CHAT_OPTIONS if name in body}
            events = path.stream(AnswerRequest(prompt, inputs, options))
            await events.__anext__()  # checked and queued: refusals still get their status
        except RequestError as error:
            return _error(error)

        async def stream():
            try:
                async for event, value in events:
                    if event == "text":
                        yield _event({"type": "text", "text": value})
                    elif event == "done":
                        yield _event({"type": "done", "answer": value.text, "prompt": value.prompt,
                                      "finish_reason": value.finish_reason, "scans": [i.id for i in items],
                                      "generation": value.options.to_dict(),
                                      "model": service.answerer.identity.to_dict(), "verification": "UNVERIFIED"})
            except RequestError as error:
                yield _event({"type": "error", "message": str(error)})
            finally:
                await events.aclose()

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={**SECURITY_HEADERS, "X-Accel-Buffering": "no"})

    @app.post("/chat/api/export/sr", openapi_extra=CHAT_SR_JSON)
    async def export_sr(request: Request) -> Response:
        try:
            try:
                body = decode_json(await request.body())
            except ValueError as error:
                raise RequestError(f"the request body is not valid JSON ({error})") from None
            if not isinstance(body, dict):
                raise RequestError("expected a JSON object {\"answer\", \"prompt\", \"scans\": [ids], \"generation\"}")
            answer_text, prompt = body.get("answer"), body.get("prompt")
            if not isinstance(answer_text, str) or not answer_text.strip() or not isinstance(prompt, str):
                raise RequestError("expected JSON {\"answer\", \"prompt\", \"scans\": [ids], \"generation\"}")
            ids = body.get("scans") or []
            if not isinstance(ids, list):
                raise RequestError("scans: expected a list of scan ids")
            items = [scans.get(str(s)) for s in ids]
            generation = body.get("generation") if isinstance(body.get("generation"), dict) else {}
            content, media_type, filename = await path.worker.read(
                _export_sr, service, answer_text, prompt, items, generation)
        except RequestError as error:
            return _error(error)
        except ValueError as error:
            return _error(RequestError(str(error), 422))
        return Response(content, media_type=media_type,
                        headers={**SECURITY_HEADERS, "Content-Disposition": f'attachment; filename="{filename}"'})


def _render(item: ChatScan, view: str, slice: int, window: str) -> bytes:
    """A slice as PNG: the original as displayed, or the model's input (in the reading pool)."""
    if view == "model":
        volume = item.model_view()
        if not 0 <= slice < volume.shape[0]:
            raise RequestError(f"slice {slice} out of range 0..{volume.shape[0] - 1}", 422)
        return _png(volume[slice], float(volume.min()), float(volume.max()))
    if view == "original":
        from radfm.rating.images import render_slice_png

        display = item.display()
        if not 0 <= slice < display.depth:
            raise RequestError(f"slice {slice} out of range 0..{display.depth - 1}", 422)
        return render_slice_png(display, slice, _window(window))
    raise RequestError(f"view: expected original or model, got {view!r}", 422)


def _event(payload: dict) -> bytes:
    return f"data: {json.dumps(payload)}\n\n".encode()


def _secondary_capture(item: ChatScan, study_uid: str, series_uid: str, number: int):
    """A Secondary Capture image of the scan's middle slice as displayed (for SR references)."""
    import highdicom as hd

    display = item.display()
    plane = display.data[display.depth // 2]
    if display.rgb:
        pixels, photometric = np.ascontiguousarray(plane, dtype=np.uint8), "RGB"
    else:
        low, high = display.auto_window
        pixels = (np.clip((plane - low) / max(high - low, 1e-6), 0, 1) * 255 + 0.5).astype(np.uint8)
        photometric = "MONOCHROME2"
    image = hd.sc.SCImage(
        pixel_array=pixels, photometric_interpretation=photometric, bits_allocated=8, coordinate_system="PATIENT",
        study_instance_uid=study_uid, series_instance_uid=series_uid, series_number=9902, sop_instance_uid=hd.UID(),
        instance_number=number, manufacturer="RadFM toolkit", patient_id="RADFM-CHAT", patient_name="Anonymous^RadFM chat",
        patient_orientation=("L", "P"),
    )
    image.SeriesDescription = "RadFM chat: non-DICOM input (middle slice)"
    image.ImageComments = f"{item.label} ({item.modality}); middle slice {display.depth // 2 + 1} of {display.depth}"
    return image


def _export_sr(service, answer_text: str, prompt: str, items: list[ChatScan], generation: dict) -> tuple[bytes, str, str]:
    """``(bytes, media type, file name)``: the SR alone, or a zip with Secondary Captures of non-DICOM scans."""
    import highdicom as hd

    from radfm.dicom.sr import build_sr, read_dicom_headers

    sources, captures = [], []
    study_uid, series_uid = hd.UID(), hd.UID()
    for item in items:
        if item.scan.kind == "dicom":
            sources += read_dicom_headers(item.scan.path)
        else:
            capture = _secondary_capture(item, study_uid, series_uid, len(captures) + 1)
            captures.append((item, capture))
            sources.append(capture)
    if not sources:
        raise RequestError("the answer has no scans to refer to; a DICOM SR needs at least one image", 422)
    parameters = [f"non_dicom_input={item.label} -> secondary capture {capture.SOPInstanceUID}" for item, capture in captures]
    parameters += [f"{key}={value}" for key, value in sorted(generation.items())]
    sr = build_sr(answer_text, prompt, sources, service.answerer.identity, parameters=parameters)

    def encoded(dataset) -> bytes:
        buffer = io.BytesIO()
        dataset.save_as(buffer, enforce_file_format=True)
        return buffer.getvalue()

    if not captures:
        return encoded(sr), "application/dicom", "radfm_answer_sr.dcm"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as bundle:
        bundle.writestr("radfm_answer_sr.dcm", encoded(sr))
        for number, (_, capture) in enumerate(captures, 1):
            bundle.writestr(f"secondary_capture_{number}.dcm", encoded(capture))
    return buffer.getvalue(), "application/zip", "radfm_answer_sr.zip"

