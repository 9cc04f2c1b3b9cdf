"""``radfm serve``: the HTTP doors of the request path, on one FastAPI app.

* ``POST /v1/answer`` (multipart scans + prompt -> answer JSON) is defined here; the chat
  page (:mod:`radfm.http.chat`) and the OpenAI-compatible routes
  (:mod:`radfm.http.openai_api`) are added to the same app. Every route only translates
  its wire format to an :class:`~radfm.answering.request.AnswerRequest` and a
  :class:`~radfm.answering.refusal.RequestError` back: limits, temp folders, reading, the queue
  and the model are :class:`~radfm.answering.request.RequestPath`'s.
* Binds 127.0.0.1 by default and refuses other addresses unless ``allow_remote`` is set:
  there is no authentication and uploads are patient data.
* The body limit holds for declared and chunked bodies (413 on every route); the HTTP layer
  (:mod:`radfm.http.http_guard`) drops slow clients (408) and, on loopback, refuses foreign
  ``Host``/``Origin`` headers (403). ``/docs`` is off (no script from a CDN); the schema is at
  ``/openapi.json``.
* ``GET /health`` says whether the model is loaded and how long the queue is.
"""

from __future__ import annotations

import base64
import io
import logging
import threading
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.requests import ClientDisconnect

from radfm.answering.limits import Limits
from radfm.answering.options import GenerationOptions, request_error
from radfm.answering.refusal import BodyTooLarge, RequestError
from radfm.answering.request import AnswerRequest, AnswerResult, RequestPath, ScanInput
from radfm.answering.scans import Scan
from radfm.http.api_schema import ANSWER_FORM, AnswerForm
from radfm.http.http_guard import GuardLimits, bind_socket, guarded_server

log = logging.getLogger("radfm.service")
FILE_FIELDS = ("files", "file")  # the multipart fields that carry scans
ANSWER_FIELDS = (*AnswerForm.model_fields, *FILE_FIELDS)


def error_response(error: RequestError) -> JSONResponse:
    """A refusal on the plain routes: ``{"error": message}`` with the error's status."""
    return JSONResponse({"error": str(error)}, status_code=error.status_code)


def parse_answer_form(form: Any, limits: Limits) -> AnswerForm:
    """The non-file fields of ``POST /v1/answer`` as an :class:`AnswerForm`, options checked against ``limits``.

    Args:
        form: the parsed multipart form (Starlette's ``FormData``); file fields are the caller's.
        limits: the service's limits (the options' caps).

    Returns:
        The validated form; ``.options()`` are the request's generation options (parsed once, here).

    Raises:
        RequestError: 400 for a missing prompt, 422 naming the field (pydantic's error location) otherwise.
    """
    values = {key: form.get(key) for key in dict.fromkeys(form.keys()) if key not in FILE_FIELDS}
    values = {key: value for key, value in values.items() if value != "" or key == "prompt"}
    values.setdefault("prompt", None)  # its validator names what is missing
    values.setdefault("max_new_tokens", min(GenerationOptions.model_fields["max_new_tokens"].default,
                                            limits.max_new_tokens))
    try:
        checked = AnswerForm.model_validate(values, context={"limits": limits})
    except ValidationError as error:
        refusal = request_error(error, "form field", ANSWER_FIELDS)
        if refusal.field == "prompt":
            refusal.status_code = 400
        raise refusal from None
    checked._limits = limits
    return checked


class _BodyLimit:
    """ASGI middleware: 413 on a declared Content-Length over the limit; counts streamed bytes too."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await _too_large(scope, self.max_bytes)(scope, receive, send)
        received = 0

        async def counting_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise BodyTooLarge()  # the app's handler answers 413 in the route's format
            return message

        return await self.app(scope, counting_receive, send)


def _too_large(scope, max_bytes: int) -> JSONResponse:
    error = RequestError(f"request body exceeds the limit of {max_bytes} bytes", 413, code="request_too_large")
    if scope.get("path", "").startswith("/v1/chat/"):
        from radfm.http.openai_api import openai_error

        return openai_error(error)
    return error_response(error)


class InferenceService:
    """The FastAPI app around one :class:`RequestPath` (the model, its limits and workers)."""

    def __init__(self, answerer, limits: Limits | None = None) -> None:
        self.path = RequestPath(answerer, limits)
        self.answerer = answerer
        self.limits = self.path.limits
        self.app = self._build_app()

    def _build_app(self):
        app = FastAPI(
            title="RadFM local inference service",
            description="POST scans (DICOM series, NIfTI, PNG) and a prompt; get the model's answer. "
            "Answers are machine-generated and unverified.",
            docs_url=None, redoc_url=None,  # Swagger UI would load scripts from a CDN: the schema is /openapi.json
        )

        @app.exception_handler(BodyTooLarge)
        async def body_too_large(request: Request, _: BodyTooLarge):
            return _too_large(request.scope, self.limits.max_request_bytes)

        @app.exception_handler(ClientDisconnect)
        async def client_gone(request: Request, _: ClientDisconnect):
            return JSONResponse({"error": "client disconnected"}, status_code=400)  # nobody reads it; no traceback

        @app.get("/health")
        def health() -> dict:
            return {"status": "ok", "model": self.answerer.identity.to_dict(), "queue": self.path.counters(),
                    "limits": self.limits.to_dict()}

        @app.post("/v1/answer", openapi_extra=ANSWER_FORM)
        async def answer(request: Request) -> JSONResponse:
            """Multipart form: ``files`` (one or more, or a zip), ``prompt``, optional generation fields, ``sr``."""
            try:
                return JSONResponse(await self._answer(request))
            except RequestError as error:
                return error_response(error)

        from radfm.http.chat import add_chat_routes
        from radfm.http.openai_api import add_openai_routes

        add_openai_routes(app, self)  # POST /v1/chat/completions, GET /v1/models
        add_chat_routes(app, self)  # the browser chat page at /
        app.router.on_shutdown.append(self.close)
        return _BodyLimit(app, self.limits.max_request_bytes)

    async def _answer(self, request: Request) -> dict[str, Any]:
        content_type = request.headers.get("content-type", "")
        if not content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
            raise RequestError(f"expected a multipart/form-data upload, got content type {content_type or 'none'!r}", 415)
        try:
            form = await request.form(max_files=self.limits.max_files + 1, max_fields=100, max_part_size=1 << 20)
        except (BodyTooLarge, ClientDisconnect):
            raise
        except Exception as error:  # malformed multipart body
            raise RequestError(f"cannot parse the multipart body: {getattr(error, 'detail', error)}") from None
        try:
            uploads = [(key, value) for key, value in form.multi_items() if isinstance(value, UploadFile)]
            stray = sorted({key for key, _ in uploads if key not in FILE_FIELDS})
            if stray:
                raise RequestError(f"file(s) sent in field(s) {stray}; send scans in the field 'files'", 400)
            if not uploads:
                raise RequestError("no scans uploaded: send one or more files in the multipart field 'files'", 400)
            fields = parse_answer_form(form, self.limits)
            scans = [ScanInput(upload.filename or f"file{i}", data=upload.file) for i, (_, upload) in enumerate(uploads)]
            result = await self.path.run(AnswerRequest(fields.prompt, scans, fields.options(), one_scan_per_input=False,
                                                       after=self._sr_for if fields.sr else None))
        finally:
            await form.close()
        body = result.record(self.answerer.identity)
        body.pop("image_shapes")
        return body

    def _sr_for(self, result: AnswerResult) -> dict[str, str]:
        """``{"sr": base64 DICOM}`` when a DICOM series was sent, else ``{"sr_error": why}`` (scans still on disk)."""
        from radfm.dicom.sr import SRExportError, build_sr, read_dicom_headers

        scans: list[Scan] = result.scans
        sources = [h for scan in scans if scan.kind == "dicom" for h in read_dicom_headers(scan.path)]
        parameters = [f"non_dicom_input={scan.names[0]}" for scan in scans if scan.kind != "dicom"]
        parameters += [f"{k}={v}" for k, v in sorted(result.options.to_dict().items())]
        try:
            dataset = build_sr(result.text, result.prompt, sources, self.answerer.identity, parameters=parameters)
        except SRExportError as error:
            return {"sr_error": str(error)}
        buffer = io.BytesIO()
        dataset.save_as(buffer, enforce_file_format=True)
        return {"sr": base64.b64encode(buffer.getvalue()).decode("ascii")}

    def close(self) -> None:
        """Remove every temp folder still held (kept chat scans included) and stop the workers."""
        chat = getattr(self, "chat_scans", None)
        if chat is not None:
            chat.clear()
        self.path.close()


def create_app(answerer, limits: Limits | None = None):
    """The ASGI app for ``answerer`` (FastAPI wrapped in the body-size limit)."""
    return InferenceService(answerer, limits).app


class BackgroundServer:
    """Run an ASGI app with uvicorn in a thread on a loopback port (tests, benchmarks, Slicer).

    ``port=0`` picks a free port; ``url`` is known once ``start()`` returns.
    """

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0, guard: GuardLimits | None = None) -> None:
        self.socket = bind_socket(host, port)
        self.host, self.port = host, self.socket.getsockname()[1]
        self.server = guarded_server(app, host, self.port, guard, lifespan="off")
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout_s: float = 20.0) -> BackgroundServer:
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the service did not start on {self.url}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.socket.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
