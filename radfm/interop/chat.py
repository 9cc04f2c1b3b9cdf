"""The browser chat page of ``radfm serve`` (``GET /``) and the small JSON API behind it.

Plain HTML/JS/CSS served from ``radfm/interop/static/chat`` by the service's own FastAPI app
(no CDN, no inline script; the same process, limits and loopback default as ``/v1/answer``).

Routes::

    GET    /                                 the page
    GET    /chat/api/info                    model identity, window presets, limits
    POST   /chat/api/scans                   multipart ``files``: files, a DICOM selection or a zip -> scans
    GET    /chat/api/scans/ID/slice.png      ?view=original|model&slice=K&window=auto|PRESET
    DELETE /chat/api/scans/ID
    POST   /chat/api/answer                  JSON conversation -> server-sent events, token by token
    POST   /chat/api/export/sr               JSON answer record -> DICOM SR (or a zip, see below)

Uploaded scans are preprocessed once (the model's input is kept in memory) and addressed by a
random id; the page sends ids, not files, with each question. At most ``MAX_KEPT_SCANS`` are
kept: older ones are dropped with their files.

An SR must reference DICOM images. When some scans of an answer are not DICOM (PNG, NIfTI,
NRRD), the export also writes one Secondary Capture image per such scan (its middle slice as
displayed, in a new study with an anonymous patient) and returns the SR and those images as a
zip, so that every reference in the SR resolves.
"""

from __future__ import annotations

import io
import json
import secrets
import shutil
import tempfile
import threading
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from radfm.interop.answerer import GenerationOptions
from radfm.interop.conversation import Turn, conversation_prompt, is_zip, save_scan_bytes, stream_answer
from radfm.interop.uploads import BodyTooLarge, Scan, UploadError, group_scans, save_uploads

STATIC_DIR = Path(__file__).resolve().parent / "static" / "chat"
MAX_KEPT_SCANS = 32
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
    return {"png": "PNG image (2D)", "jpeg": "JPEG image (2D)", "nifti": "NIfTI volume", "nrrd": "NRRD volume"}[scan.kind]


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


class ChatScans:
    """The scans uploaded through the page, newest last; thread safe."""

    def __init__(self, max_kept: int = MAX_KEPT_SCANS) -> None:
        self.max_kept = max_kept
        self._items: OrderedDict[str, ChatScan] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, item: ChatScan) -> None:
        with self._lock:
            self._items[item.id] = item
            while len(self._items) > self.max_kept:
                _, old = self._items.popitem(last=False)
                self._release(old)

    def _release(self, item: ChatScan) -> None:
        """Delete the item's upload folder once no kept scan (one upload can hold several) uses it."""
        if all(other.workdir != item.workdir for other in self._items.values()):
            shutil.rmtree(item.workdir, ignore_errors=True)

    def get(self, scan_id: str) -> ChatScan:
        with self._lock:
            if scan_id not in self._items:
                raise UploadError(f"scan {scan_id!r} is not (or no longer) on the server; upload it again", 404)
            return self._items[scan_id]

    def remove(self, scan_id: str) -> None:
        with self._lock:
            item = self._items.pop(scan_id, None)
            if item is not None:
                self._release(item)

    def clear(self) -> None:
        with self._lock:
            items, self._items = list(self._items.values()), OrderedDict()
        for item in items:
            shutil.rmtree(item.workdir, ignore_errors=True)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=SECURITY_HEADERS)


def _options(body: dict, limits) -> GenerationOptions:
    values: dict[str, Any] = {}
    for name in ("max_new_tokens", "do_sample", "temperature", "top_p", "top_k", "seed"):
        if body.get(name) not in (None, ""):
            values[name] = body[name]
    values.setdefault("max_new_tokens", min(GenerationOptions.max_new_tokens, limits.max_new_tokens))
    try:  # the same validation (and caps) as the multipart route's _parse_options
        return GenerationOptions(**values).validate(max_new_tokens_limit=limits.max_new_tokens)
    except (TypeError, ValueError) as error:
        raise UploadError(str(error), 422) from None


def add_chat_routes(app: FastAPI, service) -> None:
    """Register the page, its static files and its API on the service's app."""
    scans = ChatScans()
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
            "default_max_new_tokens": min(GenerationOptions.max_new_tokens, service.limits.max_new_tokens),
            "window_presets": {name: list(bounds) for name, bounds in WINDOW_PRESETS.items()},
        }, headers=SECURITY_HEADERS)

    @app.post("/chat/api/scans")
    async def upload(request: Request) -> JSONResponse:
        workdir = Path(tempfile.mkdtemp(prefix="radfm-chat-scan-"))
        keep = False
        try:
            try:
                form = await request.form(max_files=service.limits.max_files + 1, max_fields=10)
            except BodyTooLarge:
                return _error(413, f"request body exceeds the limit of {service.limits.max_request_bytes} bytes")
            except Exception as error:  # noqa: BLE001 - malformed multipart
                return _error(400, f"cannot parse the upload: {getattr(error, 'detail', error)}")
            try:
                files = [v for k, v in form.multi_items() if isinstance(v, UploadFile)]
                if not files:
                    return _error(400, "no files: send scans in the multipart field 'files'")
                if len(files) > service.limits.max_files:
                    return _error(413, f"{len(files)} files uploaded; the limit is {service.limits.max_files}")
                heads = []
                for upload_file in files:
                    heads.append(await upload_file.read(4))
                    await upload_file.seek(0)
                if not any(is_zip(head) for head in heads):  # plain files: exactly the /v1/answer upload path
                    saved = await save_uploads(form, workdir, service.limits)
                else:  # a zipped DICOM folder (with or without other files)
                    saved = []
                    for upload_file in files:
                        data = await upload_file.read()
                        saved += await run_in_threadpool(
                            save_scan_bytes, upload_file.filename or "upload", data, workdir, first_index=len(saved),
                            max_files=service.limits.max_files - len(saved), max_bytes=service.limits.max_request_bytes)
                        if len(saved) > service.limits.max_files:
                            return _error(413, f"{len(saved)} files; the limit is {service.limits.max_files}")
            finally:
                await form.close()
            grouped = await run_in_threadpool(group_scans, saved, workdir)
            added = []
            for index, scan in enumerate(grouped):
                try:
                    images, _, _ = await run_in_threadpool(service._prepare, [scan])
                except ValueError as error:
                    raise UploadError(f"cannot read scan: {error}", 422) from None
                label = scan.names[0] if len(scan.names) == 1 else f"{Path(scan.names[0]).parent.name or 'DICOM'} ({len(scan.names)} files)"
                item = ChatScan(secrets.token_hex(12), scan, workdir, images[0], await run_in_threadpool(_modality, scan),
                                label.replace(f"{workdir}/", ""))
                added.append(await run_in_threadpool(item.describe))
                scans.add(item)
            keep = True
            return JSONResponse({"scans": added}, headers=SECURITY_HEADERS)
        except UploadError as error:
            return _error(error.status_code, str(error).replace(f"{workdir}/", ""))
        except ValueError as error:  # display reader
            return _error(422, str(error).replace(f"{workdir}/", ""))
        finally:
            if not keep:
                await run_in_threadpool(shutil.rmtree, workdir, True)

    @app.get("/chat/api/scans/{scan_id}/slice.png")
    async def slice_png(scan_id: str, view: str = "original", slice: int = 0, window: str = "auto") -> Response:
        try:
            item = scans.get(scan_id)
            if view == "model":
                volume = item.model_view()
                if not 0 <= slice < volume.shape[0]:
                    raise UploadError(f"slice {slice} out of range 0..{volume.shape[0] - 1}", 422)
                data = await run_in_threadpool(_png, volume[slice], float(volume.min()), float(volume.max()))
            elif view == "original":
                from radfm.rating.images import render_slice_png

                display = await run_in_threadpool(item.display)
                if not 0 <= slice < display.depth:
                    raise UploadError(f"slice {slice} out of range 0..{display.depth - 1}", 422)
                data = await run_in_threadpool(render_slice_png, display, slice, _window(window))
            else:
                raise UploadError(f"view: expected original or model, got {view!r}", 422)
        except UploadError as error:
            return _error(error.status_code, str(error))
        except ValueError as error:
            return _error(422, str(error))
        return Response(data, media_type="image/png", headers=SECURITY_HEADERS)

    @app.delete("/chat/api/scans/{scan_id}")
    def delete_scan(scan_id: str) -> JSONResponse:
        scans.remove(scan_id)
        return JSONResponse({"deleted": scan_id}, headers=SECURITY_HEADERS)

    @app.post("/chat/api/answer")
    async def answer(request: Request):
        try:
            body = await request.json()
            if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
                raise UploadError("expected JSON {\"messages\": [{\"role\", \"text\", \"scans\": [ids]}], ...}")
            turns = []
            for i, message in enumerate(body["messages"]):
                if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
                    raise UploadError(f"messages[{i}]: expected an object with role user or assistant")
                ids = message.get("scans") or []
                if not isinstance(message.get("text"), str) or not isinstance(ids, list):
                    raise UploadError(f"messages[{i}]: 'text' must be a string and 'scans' a list of scan ids")
                turns.append(Turn(message["role"], message["text"], [scans.get(str(s)) for s in ids]))
            try:
                prompt, items = conversation_prompt(turns)
            except ValueError as error:
                raise UploadError(str(error), 422) from None
            if len(items) > service.limits.max_images:
                raise UploadError(f"{len(items)} scans in the conversation; the limit is {service.limits.max_images}", 413)
            if len(prompt) > service.limits.max_prompt_chars:
                raise UploadError(f"prompt of {len(prompt)} characters exceeds the limit of {service.limits.max_prompt_chars}", 413)
            options = _options(body, service.limits)
            if service.waiting >= service.limits.max_queue:
                raise UploadError(f"{service.waiting} requests already waiting (limit {service.limits.max_queue}); retry later", 503)
        except UploadError as error:
            return _error(error.status_code, str(error))
        except ValueError as error:  # body is not JSON
            return _error(400, f"the request body is not valid JSON ({error})")

        async def events():
            try:
                async for event, value in stream_answer(service, prompt, [i.image for i in items], options):
                    if event == "text":
                        yield _event({"type": "text", "text": value})
                    else:
                        text, stream = value
                        yield _event({"type": "done", "answer": text, "prompt": prompt,
                                      "finish_reason": "cancelled" if stream.cancelled else stream.finish_reason,
                                      "scans": [i.id for i in items], "generation": options.to_dict(),
                                      "model": service.answerer.identity.to_dict(), "verification": "UNVERIFIED"})
            except (UploadError, ValueError) as error:
                yield _event({"type": "error", "message": str(error)})

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={**SECURITY_HEADERS, "X-Accel-Buffering": "no"})

    @app.post("/chat/api/export/sr")
    async def export_sr(request: Request) -> Response:
        try:
            body = await request.json()
            answer_text, prompt = body.get("answer"), body.get("prompt")
            if not isinstance(answer_text, str) or not answer_text.strip() or not isinstance(prompt, str):
                raise UploadError("expected JSON {\"answer\", \"prompt\", \"scans\": [ids], \"generation\"}")
            items = [scans.get(str(s)) for s in body.get("scans") or []]
            generation = body.get("generation") if isinstance(body.get("generation"), dict) else {}
            content, media_type, filename = await run_in_threadpool(
                _export_sr, service, answer_text, prompt, items, generation)
        except UploadError as error:
            return _error(error.status_code, str(error))
        except ValueError as error:
            return _error(422, str(error))
        return Response(content, media_type=media_type,
                        headers={**SECURITY_HEADERS, "Content-Disposition": f'attachment; filename="{filename}"'})


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

    from radfm.interop.sr import build_sr, read_dicom_headers

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
        raise UploadError("the answer has no scans to refer to; a DICOM SR needs at least one image", 422)
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

