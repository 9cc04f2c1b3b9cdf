"""Local inference service: ``POST /v1/answer`` (multipart scans + prompt) -> answer JSON.

* One model instance; requests wait in a FIFO queue served by a single worker thread, so
  the GPU never runs two requests at once. Uploads are read and preprocessed in parallel
  (bounded) while earlier requests run.
* Binds 127.0.0.1 by default and refuses other addresses unless ``allow_remote`` is set:
  there is no authentication and uploads are patient data.
* Limits: request bytes, uploaded files, images per prompt, queue length, prompt length,
  ``max_new_tokens``, ``num_beams`` and ``max_new_tokens x num_beams``; finite sampling values.
  Bad uploads get a 4xx with a reason naming the file or field.
* Each generation has a time limit (``generation_timeout_s``): decoding stops at the deadline,
  the worker is free for the next request and the client gets 504.
* The HTTP layer (:mod:`radfm.utils.http_guard`) drops connections whose request head or body
  is too slow (408) and, on loopback, refuses foreign ``Host``/``Origin`` headers (403).
* ``GET /health`` says whether the model is loaded and how long the queue is.

The model sits behind an "answerer" (:mod:`radfm.interop.answerer`), so tests and
benchmarks can start the real HTTP stack with a tiny random model.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import shutil
import socket
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from radfm.interop.answerer import Answerer, GenerationOptions, GenerationTimeout, build_prompt, generation_deadline
from radfm.interop.uploads import BodyTooLarge, Scan, UploadError, group_scans, save_uploads
from radfm.transforms.errors import ScanTooLargeError
from radfm.utils.http_guard import GuardLimits, guarded_server

log = logging.getLogger("radfm.service")
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


@dataclass
class ServiceLimits:
    """Request limits; ``max_images`` defaults to what the model takes per prompt."""

    max_request_bytes: int = 512 * 1024 * 1024
    max_files: int = 2000  # uploaded files (a DICOM series is one file per slice)
    max_images: int | None = None  # scans per prompt
    max_queue: int = 32  # requests waiting for the model before 503
    max_new_tokens: int = 1024
    max_num_beams: int = GenerationOptions.MAX_NUM_BEAMS
    max_beam_tokens: int = GenerationOptions.MAX_BEAM_TOKENS  # max_new_tokens x num_beams
    generation_timeout_s: float = 300.0  # per request, from the start of its generation
    max_prompt_chars: int = 8000
    parallel_preprocess: int = 2  # uploads preprocessed at once (memory bound)
    # decoded bytes of one scan, checked from its header before decompressing (radfm.transforms.guards)
    max_scan_bytes: int = 2 * 1024**3


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
            response = JSONResponse(
                {"error": f"request body of {int(declared)} bytes exceeds the limit of {self.max_bytes} bytes"},
                status_code=413,
            )
            return await response(scope, receive, send)
        received = 0

        async def counting_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise BodyTooLarge()
            return message

        return await self.app(scope, counting_receive, send)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _parse_options(form, limits: ServiceLimits) -> GenerationOptions:
    """Generation options from form fields; a bad value raises ``UploadError`` naming the field."""
    values: dict[str, Any] = {}
    for option in fields(GenerationOptions):
        raw = form.get(option.name)
        if raw is None or raw == "":
            continue
        if isinstance(raw, UploadFile):
            raise UploadError(f"field {option.name!r} must be a value, not a file", 422)
        try:
            if option.name == "do_sample":
                if raw.lower() not in ("true", "false", "1", "0"):
                    raise ValueError
                values[option.name] = raw.lower() in ("true", "1")
            elif option.name in ("temperature", "top_p", "repetition_penalty"):
                values[option.name] = float(raw)
            else:
                values[option.name] = int(raw)
        except ValueError:
            raise UploadError(f"field {option.name!r}: cannot read {raw!r} as {option.type}", 422) from None
    values.setdefault("max_new_tokens", min(GenerationOptions.max_new_tokens, limits.max_new_tokens))
    try:
        return GenerationOptions(**values).validate(max_new_tokens_limit=limits.max_new_tokens,
                                                    max_num_beams=limits.max_num_beams,
                                                    max_beam_tokens=limits.max_beam_tokens)
    except ValueError as error:
        raise UploadError(str(error), 422) from None


class InferenceService:
    """The FastAPI app plus the single model worker and its queue bookkeeping."""

    def __init__(self, answerer: Answerer, limits: ServiceLimits | None = None) -> None:
        self.answerer = answerer
        self.limits = limits or ServiceLimits()
        if self.limits.max_images is None:
            self.limits.max_images = int(answerer.max_images)
        self._model_worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="radfm-model")
        self._prepare_slots = threading.BoundedSemaphore(self.limits.parallel_preprocess)
        self._count_lock = threading.Lock()
        self.waiting = 0  # requests queued for the model (not yet running)
        self.running = 0
        self.served = 0
        self.app = self._build_app()

    # ---- the model queue ---------------------------------------------------------------
    def _run_model(self, prompt: str, images: list, options: GenerationOptions, queued_at: float,
                   **answer_kwargs) -> tuple[str, float, float]:
        with self._count_lock:
            self.waiting -= 1
            self.running += 1
        started = time.perf_counter()
        limit = self.limits.generation_timeout_s
        try:
            with generation_deadline(limit):
                text = self.answerer.answer(prompt, images, options, **answer_kwargs)  # e.g. stream= (chat, OpenAI API)
            if limit is not None and time.perf_counter() - started > limit:  # an answerer that ignored the deadline
                raise GenerationTimeout(f"generation took longer than the time limit of {limit:g} s")
        finally:
            with self._count_lock:
                self.running -= 1
                self.served += 1
        return text, started - queued_at, time.perf_counter() - started

    async def _queue_for_model(self, prompt: str, images: list, options: GenerationOptions, **answer_kwargs):
        """Run the answerer on the single model worker; a run past the time limit raises ``UploadError`` 504."""
        with self._count_lock:
            if self.waiting >= self.limits.max_queue:
                raise UploadError(f"{self.waiting} requests already waiting (limit {self.limits.max_queue}); retry later", 503)
            self.waiting += 1
        future = self._model_worker.submit(self._run_model, prompt, images, options, time.perf_counter(), **answer_kwargs)
        try:
            return await asyncio.wrap_future(future)
        except GenerationTimeout as error:  # every route queued here answers 504 the same way
            raise UploadError(f"{error}; ask for fewer max_new_tokens or num_beams", 504) from None

    def _prepare(self, scans: list[Scan]) -> tuple[list, float, float]:
        """``(images, seconds waiting for a preprocessing slot, seconds preprocessing)``."""
        arrived = time.perf_counter()
        from radfm.transforms import scan_size_limit

        with self._prepare_slots:
            started = time.perf_counter()
            with scan_size_limit(self.limits.max_scan_bytes):  # every reader behind the answerer gets the limit
                images = self.answerer.prepare([scan.path for scan in scans])
        return images, started - arrived, time.perf_counter() - started

    # ---- HTTP --------------------------------------------------------------------------
    def _build_app(self) -> FastAPI:
        app = FastAPI(
            title="RadFM local inference service",
            description="POST scans (DICOM series, NIfTI, PNG) and a prompt; get the model's answer. "
            "Answers are machine-generated and unverified.",
        )

        @app.get("/health")
        def health() -> dict:
            return {
                "status": "ok",
                "model": self.answerer.identity.to_dict(),
                "queue": {"waiting": self.waiting, "running": self.running, "served": self.served},
                "limits": asdict(self.limits),
            }

        @app.post("/v1/answer")
        async def answer(request: Request) -> JSONResponse:
            """Multipart form: ``files`` (one or more), ``prompt``, optional generation fields, ``sr``."""
            started = time.perf_counter()
            workdir = Path(tempfile.mkdtemp(prefix="radfm-upload-"))
            try:
                return await self._answer(request, workdir, started)
            except BodyTooLarge:
                return _error(413, f"request body exceeds the limit of {self.limits.max_request_bytes} bytes")
            except UploadError as error:
                return _error(error.status_code, str(error).replace(f"{workdir}/", ""))
            finally:
                await run_in_threadpool(shutil.rmtree, workdir, True)

        from radfm.interop.chat import add_chat_routes
        from radfm.interop.openai_api import add_openai_routes

        add_openai_routes(app, self)  # POST /v1/chat/completions, GET /v1/models
        add_chat_routes(app, self)  # the browser chat page at /
        return _BodyLimit(app, self.limits.max_request_bytes)

    async def _answer(self, request: Request, workdir: Path, started: float) -> JSONResponse:
        content_type = request.headers.get("content-type", "")
        if not content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
            raise UploadError(f"expected a multipart/form-data upload, got content type {content_type or 'none'!r}", 415)
        try:
            form = await request.form(max_files=self.limits.max_files + 1, max_fields=100, max_part_size=1 << 20)
        except BodyTooLarge:
            raise
        except Exception as error:  # malformed multipart body
            raise UploadError(f"cannot parse the multipart body: {getattr(error, 'detail', error)}") from None
        try:
            prompt = form.get("prompt")
            if not isinstance(prompt, str) or not prompt.strip():
                raise UploadError("missing form field 'prompt' (the question, optionally with <image> placeholders)")
            if len(prompt) > self.limits.max_prompt_chars:
                raise UploadError(f"prompt of {len(prompt)} characters exceeds the limit of {self.limits.max_prompt_chars}", 413)
            options = _parse_options(form, self.limits)
            want_sr = str(form.get("sr", "false")).lower() in ("true", "1", "yes")
            saved = await save_uploads(form, workdir, self.limits)
        finally:
            await form.close()
        scans = await run_in_threadpool(group_scans, saved, workdir, max_scan_bytes=self.limits.max_scan_bytes)
        if len(scans) > self.limits.max_images:
            raise UploadError(f"{len(scans)} scans uploaded; the limit is {self.limits.max_images} per prompt", 413)
        try:
            prompt = build_prompt(prompt, len(scans))
        except ValueError as error:
            raise UploadError(f"{error} (scans: {[s.names[0] for s in scans]}; a DICOM series counts once)", 422) from None

        try:
            images, prepare_wait_s, prepare_s = await run_in_threadpool(self._prepare, scans)
        except ValueError as error:  # ScanReadError and friends name the file
            too_large = isinstance(error, ScanTooLargeError) or isinstance(error.__cause__, ScanTooLargeError)
            raise UploadError(f"cannot read scan: {error}", 413 if too_large else 422) from None
        try:
            text, queued_s, generate_s = await self._queue_for_model(prompt, images, options)
        except UploadError:
            raise
        except ValueError as error:
            raise UploadError(str(error), 422) from None
        body: dict[str, Any] = {
            "answer": text,
            "prompt": prompt,
            "scans": [scan.describe() for scan in scans],
            "model": self.answerer.identity.to_dict(),
            "generation": options.to_dict(),
            "verification": "UNVERIFIED",
            "timing_s": {"preprocess_wait": round(prepare_wait_s, 4), "preprocess": round(prepare_s, 4),
                         "queued": round(queued_s, 4),
                         "generate": round(generate_s, 4), "total": round(time.perf_counter() - started, 4)},
        }
        if want_sr:
            body.update(await run_in_threadpool(self._sr_for, text, prompt, scans, options))
        return JSONResponse(body)

    def _sr_for(self, text: str, prompt: str, scans: list[Scan], options: GenerationOptions) -> dict[str, str]:
        """``{"sr": base64 DICOM}`` when a DICOM series was uploaded, else ``{"sr_error": why}``."""
        import io

        from radfm.interop.sr import SRExportError, build_sr, read_dicom_headers

        sources = [h for scan in scans if scan.kind == "dicom" for h in read_dicom_headers(scan.path)]
        parameters = [f"non_dicom_input={scan.names[0]}" for scan in scans if scan.kind != "dicom"]
        parameters += [f"{k}={v}" for k, v in sorted(options.to_dict().items())]
        try:
            dataset = build_sr(text, prompt, sources, self.answerer.identity, parameters=parameters)
        except SRExportError as error:
            return {"sr_error": str(error)}
        buffer = io.BytesIO()
        dataset.save_as(buffer, enforce_file_format=True)
        return {"sr": base64.b64encode(buffer.getvalue()).decode("ascii")}

    def close(self) -> None:
        self._model_worker.shutdown(wait=True)


def create_app(answerer: Answerer, limits: ServiceLimits | None = None):
    """The ASGI app for ``answerer`` (FastAPI wrapped in the body-size limit)."""
    return InferenceService(answerer, limits).app


class BackgroundServer:
    """Run an ASGI app with uvicorn in a thread on a loopback port (tests, benchmarks, Slicer).

    ``port=0`` picks a free port; ``url`` is known once ``start()`` returns.
    """

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0, guard: GuardLimits | None = None) -> None:
        self.socket = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind((host, port))
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


def serve(
    model: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8765,
    allow_remote: bool = False,
    dtype: str = "auto",
    device: str = "auto",
    device_map: str | None = None,
    max_memory: str | None = None,
    offload_folder: str | None = None,
    quantize: str | None = None,
    max_request_mb: int = 512,
    max_files: int = 2000,
    max_queue: int = 32,
    max_new_tokens_limit: int = 1024,
    max_num_beams: int = GenerationOptions.MAX_NUM_BEAMS,
    max_beam_tokens: int = GenerationOptions.MAX_BEAM_TOKENS,
    generation_timeout_s: float = 300.0,
    header_timeout_s: float = 10.0,
    body_timeout_s: float = 600.0,
    max_scan_mb: int = 2048,
) -> None:
    """Serve a RadFM model over HTTP: chat page at /, POST /v1/answer, POST /v1/chat/completions
    (OpenAI-compatible), GET /health; API docs at /docs.

    Args:
        model: saved model folder (default: the demo model bundles/radfm/models/demo/).
        host: address to bind; 127.0.0.1 unless --allow_remote (no authentication!).
        port: TCP port.
        allow_remote: permit a non-loopback host (put the service behind an authenticating proxy).
        dtype: auto | float32 | bfloat16 | float16.
        device: auto | cpu | cuda | cuda:N (ignored with --device_map).
        device_map: "auto" to spread the LLM over GPUs/CPU/disk with accelerate.
        max_memory: per-device caps for device_map, e.g. "0=22GiB,1=22GiB,cpu=64GiB".
        offload_folder: folder for weights offloaded to disk.
        quantize: "8bit" or "4bit" (needs bitsandbytes and a CUDA GPU).
        max_request_mb: largest request body in MiB.
        max_files: most uploaded files per request (DICOM slices count one each).
        max_queue: requests allowed to wait for the model before 503.
        max_new_tokens_limit: largest max_new_tokens a request may ask for.
        max_num_beams: largest num_beams a request may ask for.
        max_beam_tokens: largest max_new_tokens x num_beams a request may ask for.
        generation_timeout_s: a generation still running after this many seconds is stopped (504).
        header_timeout_s: connections that have not sent their request head by then are closed (408).
        body_timeout_s: the whole request body must arrive within this many seconds (408).
        max_scan_mb: largest decoded size of one uploaded scan in MiB, checked from its header (413).
    """
    from radfm.interop.answerer import ModelAnswerer
    from radfm.model.loading import resolve_model_dir

    if host not in LOOPBACK_HOSTS and not allow_remote:
        raise SystemExit(
            f"refusing to bind {host!r}: the service has no authentication and receives patient data. "
            "Use 127.0.0.1 (default), or pass --allow_remote behind an authenticating proxy."
        )
    model_dir = resolve_model_dir(model)
    import radfm.transforms  # noqa: F401  (imports ITK/MONAI now, not during the first request)

    placement = dict(dtype=dtype, device=device, device_map=device_map, max_memory=max_memory,
                     offload_folder=offload_folder, quantization=quantize)
    print(f"loading {model_dir} ({', '.join(f'{k}={v}' for k, v in placement.items() if v is not None)}) ...", flush=True)
    answerer = ModelAnswerer.from_model_dir(model_dir, **placement)
    limits = ServiceLimits(max_request_bytes=int(max_request_mb) * 1024 * 1024, max_files=int(max_files),
                           max_queue=int(max_queue), max_new_tokens=int(max_new_tokens_limit),
                           max_num_beams=int(max_num_beams), max_beam_tokens=int(max_beam_tokens),
                           generation_timeout_s=float(generation_timeout_s),
                           max_scan_bytes=int(max_scan_mb) * 1024 * 1024)
    guard = GuardLimits(header_timeout_s=float(header_timeout_s), body_timeout_s=float(body_timeout_s))
    print(f"RadFM service on http://{host}:{port} (model {answerer.identity.name}, "
          f"weights sha256 {answerer.identity.weights_sha256[:12]}...)", flush=True)
    guarded_server(create_app(answerer, limits), host, int(port), guard, log_level="info").run()
