"""OpenAI-compatible routes on the inference service: ``POST /v1/chat/completions``, ``GET /v1/models``.

Clients written for OpenAI's Chat Completions API (the official ``openai`` package, LangChain,
…) talk to ``radfm serve`` unchanged:

* message ``content`` is a string or a list of parts: ``text``; ``image_url`` with a
  ``data:image/png|jpeg;base64,…`` URL (the service fetches nothing from the network);
  ``file`` with ``{"filename", "file_data"}`` holding a base64 (or data-URL) NIfTI, NRRD,
  DICOM file or a zip of a DICOM series;
* scans become ``<image>`` positions in message order: where a message's text has no
  ``<image>``, each scan part is placed where it stands among the text parts; where the text
  has placeholders, they must match the message's scans one to one;
* ``max_tokens`` (or ``max_completion_tokens``), ``temperature``, ``top_p``, ``seed``, ``stop``
  and ``n=1``; no ``temperature``/``top_p`` means greedy decoding (reproducible);
  ``temperature: 0`` is greedy too; vLLM's sampling extras ``min_tokens`` and ``ignore_eos``
  fix an answer's length (benchmarks);
* the body is validated by :class:`~radfm.http.api_schema.ChatCompletionRequest` (the
  error's ``param`` is pydantic's error location) and its options parsed once;
* ``stream: true`` answers with server-sent events in OpenAI's ``chat.completion.chunk``
  format ending with ``data: [DONE]`` (``stream_options.include_usage`` adds a usage chunk);
* errors are ``{"error": {"message", "type", "param", "code"}}``.

Limits are those of ``POST /v1/answer`` (body size, files, scans per prompt, prompt length,
queue, ``max_new_tokens``) and generation runs on the same single model worker.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError

from radfm.answering.conversation import PLACEHOLDER, Turn, conversation_prompt
from radfm.answering.options import GenerationOptions, field_path, parse_options
from radfm.answering.refusal import RequestError
from radfm.answering.request import AnswerRequest, ScanInput
from radfm.http.api_schema import (
    CHAT_COMPLETIONS_JSON,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessage,
    OpenAIError,
)
from radfm.http.http_guard import decode_json

_IMAGE_MIME = {"image/png": ("png", ".png"), "image/jpeg": ("jpeg", ".jpg"), "image/jpg": ("jpeg", ".jpg")}


def _error_type(status: int) -> str:
    return "invalid_request_error" if status < 500 else ("server_error" if status != 503 else "rate_limit_error")


# the request path's option names that this door spells OpenAI's (or vLLM's) way
_PARAM_OF = {"max_new_tokens": "max_tokens", "min_new_tokens": "min_tokens"}


def openai_body(error: RequestError) -> dict[str, Any]:
    """OpenAI's error shape; the request path's ``max_new_tokens`` is this door's ``max_tokens``."""
    param = _PARAM_OF.get(error.field, error.field)
    message = str(error)
    for ours, theirs in _PARAM_OF.items():
        message = message.replace(ours, theirs)
    return {"error": {"message": message, "type": _error_type(error.status_code), "param": param, "code": error.code}}


_KEPT_STATUS = (404, 413, 429, 503, 504, 507)  # OpenAI answers other refusals of a request with 400


def openai_error(error: RequestError) -> JSONResponse:
    status = error.status_code if error.status_code in _KEPT_STATUS or error.status_code >= 500 else 400
    return JSONResponse(openai_body(error), status_code=status)


def APIError(status: int, message: str, param: str | None = None, code: str | None = None) -> RequestError:
    """A refusal of this door, with OpenAI's ``param`` and ``code``."""
    return RequestError(message, status, field=param, code=code)


def model_id(service) -> str:
    """The id clients pass as ``model``: the loaded model's name."""
    return str(service.answerer.identity.name)


def _decode_base64(value: Any, param: str, expect_mime: bool) -> tuple[str | None, bytes]:
    """``(mime type or None, bytes)`` from a data URL or (for files) plain base64."""
    if not isinstance(value, str) or not value:
        raise APIError(400, f"{param}: expected a non-empty string", param, "invalid_value")
    mime = None
    if value.startswith("data:"):
        header, sep, payload = value.partition(",")
        if not sep or not header.endswith(";base64"):
            raise APIError(400, f"{param}: expected a base64 data URL 'data:<type>;base64,<data>'", param, "invalid_value")
        mime = header[5:-7].lower()
    elif expect_mime:
        scheme = value.split(":", 1)[0] if ":" in value[:10] else "a bare value"
        raise APIError(400, f"{param}: only data: URLs are accepted (got {scheme}); the service fetches nothing "
                            "from the network", param, "invalid_image_url")
    else:
        payload = value
    try:
        return mime, base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise APIError(400, f"{param}: not valid base64", param, "invalid_base64") from None


class _ParsedRequest:
    def __init__(self, body: ChatCompletionRequest, options: GenerationOptions) -> None:
        self.turns: list[Turn] = []
        self.files: list[tuple[str, bytes, str]] = []  # (name, bytes, param) in order
        self.options = options  # parsed once, against the service's limits; the request path reuses them
        self.stop: list[str] = [s for s in (body.stop or []) if s]
        self.stream = body.stream is True
        self.include_usage = self.stream and body.stream_options is not None and body.stream_options.include_usage is True


def _parse_content(message: ChatMessage, param: str, role: str, parsed: _ParsedRequest) -> Turn:
    """One validated message as a turn: its text, and its scans (decoded) as ``<image>`` positions."""
    content = message.content
    if isinstance(content, str):
        return Turn(role, content)
    if content is None:
        if role == "assistant":
            return Turn(role, "")
        raise APIError(400, f"{param}: expected a string or a list of content parts", param, "invalid_type")
    pieces: list[str] = []
    scans: list[int] = []
    text_has_placeholders = any(part.type == "text" and PLACEHOLDER in part.text for part in content)
    for j, part in enumerate(content):
        where = f"{param}[{j}]"
        if part.type == "text":
            pieces.append(part.text)
            continue
        if role != "user":
            raise APIError(400, f"{where}: {role} messages may hold text only, not {part.type!r}", where, "invalid_value")
        if part.type == "image_url":
            mime, data = _decode_base64(part.image_url.url, f"{where}.image_url.url", expect_mime=True)
            if mime not in _IMAGE_MIME:
                raise APIError(400, f"{where}.image_url.url: data URL of type {mime!r}; expected image/png or image/jpeg "
                                    "(send 3D scans and DICOM as 'file' parts)", f"{where}.image_url.url", "invalid_image_url")
            name = f"image{len(parsed.files)}{_IMAGE_MIME[mime][1]}"
        else:  # file
            spec = part.file
            if spec.file_id is not None and spec.file_data is None:
                raise APIError(400, f"{where}.file.file_id: uploaded-file ids are not supported; send the bytes as "
                                    "base64 in 'file_data'", f"{where}.file.file_id", "unsupported_value")
            name = spec.filename
            if not name or not name.strip():
                raise APIError(400, f"{where}.file.filename: a file name is required (its suffix tells NIfTI, NRRD, "
                                    "DICOM or zip apart)", f"{where}.file.filename", "missing_value")
            _, data = _decode_base64(spec.file_data, f"{where}.file.file_data", expect_mime=False)
        if not data:
            raise APIError(400, f"{where}: the scan is empty", where, "invalid_value")
        scans.append(len(parsed.files))
        parsed.files.append((name, data, where))
        if not text_has_placeholders:
            pieces.append(PLACEHOLDER)
    return Turn(role, " ".join(p.strip() for p in pieces if p.strip()), scans)


def _body_error(error: ValidationError) -> RequestError:
    """The first problem pydantic found, in OpenAI's terms: ``param`` is its location (union tags dropped)."""
    details = error.errors(include_url=False)
    unknown = sorted(str(d["loc"][0]) for d in details if d["type"] == "extra_forbidden" and len(d["loc"]) == 1)
    if unknown:
        return APIError(400, f"unrecognized request argument(s): {', '.join(unknown)}", unknown[0], "unsupported_parameter")
    detail = details[0]
    param = field_path(part for part in detail["loc"] if not (isinstance(part, str) and part.startswith("#")))
    kind = detail["type"]
    if kind == "unsupported_part":
        kind = detail["input"].get("type") if isinstance(detail["input"], dict) else None
        if not isinstance(kind, str):
            return APIError(400, f"{param}: expected an object with a 'type'", param, "invalid_type")
        return APIError(400, f"{param}: content part type {kind!r} is not supported; use text, image_url or file",
                        f"{param}.type", "unsupported_value")
    if kind in ("invalid_type", "invalid_value", "unsupported_value"):
        message = detail["msg"] if detail["msg"].startswith(param) else f"{param}: {detail['msg']}"
        return APIError(400, message, param, kind)
    code = "missing_value" if kind == "missing" else "invalid_value" if "literal" in kind or "too_" in kind \
        or kind.endswith(("_than", "_equal")) else "invalid_type"
    return APIError(400, f"{param}: {detail['msg']}", param, code)


def parse_request(body: Any, service) -> _ParsedRequest:
    """Validate a chat-completions body (:class:`ChatCompletionRequest`) and parse its options once.

    Args:
        body: the decoded JSON body.
        service: the :class:`~radfm.http.service.InferenceService` (its model id and limits).

    Returns:
        The turns, the decoded scans, the checked options, stop strings and streaming flags.

    Raises:
        RequestError: an :func:`APIError` naming the parameter (from pydantic's error location).
    """
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object", None, "invalid_json")
    try:
        request = ChatCompletionRequest.model_validate(body)
    except ValidationError as error:
        raise _body_error(error) from None
    if request.model is not None and request.model != model_id(service):
        raise APIError(404, f"the model {request.model!r} does not exist; this server serves {model_id(service)!r}",
                       "model", "model_not_found")
    parsed = _ParsedRequest(request, parse_options(request.option_values(), service.limits))
    for i, message in enumerate(request.messages):
        role = "system" if message.role == "developer" else message.role
        parsed.turns.append(_parse_content(message, f"messages[{i}].content", role, parsed))
    if parsed.turns[-1].role != "user":
        raise APIError(400, "messages: the last message must come from the user", "messages", "invalid_value")
    return parsed


def _sse(payload: dict | str) -> bytes:
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n".encode()


def add_openai_routes(app: FastAPI, service) -> None:
    """Register ``/v1/models`` and ``/v1/chat/completions`` on the service's app."""

    @app.get("/v1/models")
    def list_models() -> dict:
        identity = service.answerer.identity
        return {"object": "list", "data": [{
            "id": model_id(service), "object": "model", "created": 0, "owned_by": "radfm-toolkit",
            "radfm": {**identity.to_dict(), "max_images": service.limits.max_images, "verification": "UNVERIFIED"},
        }]}

    @app.post("/v1/chat/completions", openapi_extra=CHAT_COMPLETIONS_JSON, responses={
        200: {"model": ChatCompletion, "description": "the answer; with stream: true, server-sent "
              "chat.completion.chunk events ending with data: [DONE]",
              "content": {"text/event-stream": {"schema": ChatCompletionChunk.model_json_schema()}}},
        **{status: {"model": OpenAIError} for status in (400, 404, 413, 503, 504)}})
    async def chat_completions(request: Request):
        try:
            try:
                body = decode_json(await request.body())
            except ValueError as error:
                raise APIError(400, f"the request body is not valid JSON ({error})", None, "invalid_json") from None
            parsed = parse_request(body, service)
            answer_request = _answer_request(parsed)
            events = service.path.stream(answer_request)
            await events.__anext__()  # scans read and queued: refusals still get their status
        except RequestError as error:
            return openai_error(error)
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        if parsed.stream:
            return StreamingResponse(_stream(service, parsed, events, completion_id, created),
                                     media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        try:
            async for event, value in events:
                if event == "done":
                    result = value
        except RequestError as error:
            return openai_error(error)
        return JSONResponse(ChatCompletion(
            id=completion_id, created=created, model=model_id(service),
            choices=[{"message": {"content": result.text}, "finish_reason": result.finish_reason}],
            usage=_usage(result), system_fingerprint=service.answerer.identity.weights_sha256[:16],
            radfm={"prompt": result.prompt, "verification": "UNVERIFIED", "generation": result.options.to_dict()},
        ).model_dump())


def _answer_request(parsed: _ParsedRequest) -> AnswerRequest:
    """The conversation as one prompt, each scan part one scan in ``<image>`` order."""
    try:
        prompt, order = conversation_prompt(parsed.turns)
    except ValueError as error:
        raise APIError(400, f"messages: {error}", "messages", "invalid_value") from None
    scans = [ScanInput(parsed.files[i][0], data=parsed.files[i][1], field=parsed.files[i][2]) for i in order]
    return AnswerRequest(prompt, scans, parsed.options, one_scan_per_input=True, stop=parsed.stop)


def _usage(result) -> dict[str, int]:
    return result.usage or {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}


async def _stream(service, parsed: _ParsedRequest, events, completion_id: str, created: int):
    """SSE body in OpenAI's ``chat.completion.chunk`` format."""
    model = model_id(service)

    def chunk(delta: dict, finish: str | None = None) -> bytes:
        return _sse(ChatCompletionChunk(
            id=completion_id, created=created, model=model, system_fingerprint=service.answerer.identity.weights_sha256[:16],
            choices=[{"delta": delta, "finish_reason": finish}]).model_dump(exclude={"usage"}))

    yield chunk({"role": "assistant", "content": ""})
    try:
        async for event, value in events:
            if event == "text":
                yield chunk({"content": value})
            elif event == "done":
                yield chunk({}, value.finish_reason)
                if parsed.include_usage:
                    yield _sse(ChatCompletionChunk(id=completion_id, created=created, model=model, choices=[],
                                                   usage=_usage(value)).model_dump(exclude={"system_fingerprint"}))
    except RequestError as error:
        yield _sse(openai_body(error))
    finally:
        await events.aclose()  # client gone: the generation stops, the request's folder is removed
    yield _sse("[DONE]")
