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
  ``temperature: 0`` is greedy too;
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

from radfm.http.api_schema import CHAT_COMPLETIONS_JSON
from radfm.answering.conversation import PLACEHOLDER, Turn, conversation_prompt
from radfm.answering.options import check_number, parse_options, shown
from radfm.answering.refusal import RequestError
from radfm.answering.request import AnswerRequest, ScanInput
from radfm.http.http_guard import decode_json

# accepted and ignored (they do not change the answer); anything not listed is refused
_IGNORED = {"user", "metadata", "store", "service_tier", "stream_options", "parallel_tool_calls", "model"}
_HANDLED = {"messages", "stream", "max_tokens", "max_completion_tokens", "temperature", "top_p", "n", "stop", "seed"}
# accepted only at their no-op value
_NEUTRAL = {"presence_penalty": 0, "frequency_penalty": 0, "logprobs": False, "logit_bias": {}, "tools": [],
            "response_format": {"type": "text"}}
_IMAGE_MIME = {"image/png": ("png", ".png"), "image/jpeg": ("jpeg", ".jpg"), "image/jpg": ("jpeg", ".jpg")}
MAX_STOP_STRINGS = 4


def _error_type(status: int) -> str:
    return "invalid_request_error" if status < 500 else ("server_error" if status != 503 else "rate_limit_error")


def openai_body(error: RequestError) -> dict[str, Any]:
    """OpenAI's error shape; the request path's ``max_new_tokens`` is this door's ``max_tokens``."""
    param = "max_tokens" if error.field == "max_new_tokens" else error.field
    message = str(error).replace("max_new_tokens", "max_tokens")
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
    def __init__(self) -> None:
        self.turns: list[Turn] = []
        self.files: list[tuple[str, bytes, str]] = []  # (name, bytes, param) in order
        self.options: dict[str, Any] = {}  # raw values; the request path validates them
        self.stop: list[str] = []
        self.stream = False
        self.include_usage = False


def _parse_content(content: Any, param: str, role: str, parsed: _ParsedRequest) -> Turn:
    if isinstance(content, str):
        return Turn(role, content)
    if content is None and role == "assistant":
        return Turn(role, "")
    if not isinstance(content, list):
        raise APIError(400, f"{param}: expected a string or a list of content parts", param, "invalid_type")
    pieces: list[str] = []
    scans: list[int] = []
    text_has_placeholders = any(isinstance(p, dict) and p.get("type") == "text" and PLACEHOLDER in str(p.get("text", ""))
                                for p in content)
    for j, part in enumerate(content):
        where = f"{param}[{j}]"
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise APIError(400, f"{where}: expected an object with a 'type'", where, "invalid_type")
        kind = part["type"]
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise APIError(400, f"{where}.text: expected a string", f"{where}.text", "invalid_type")
            pieces.append(part["text"])
            continue
        if role != "user":
            raise APIError(400, f"{where}: {role} messages may hold text only, not {kind!r}", where, "invalid_value")
        if kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            mime, data = _decode_base64(url, f"{where}.image_url.url", expect_mime=True)
            if mime not in _IMAGE_MIME:
                raise APIError(400, f"{where}.image_url.url: data URL of type {mime!r}; expected image/png or image/jpeg "
                                    "(send 3D scans and DICOM as 'file' parts)", f"{where}.image_url.url", "invalid_image_url")
            name = f"image{len(parsed.files)}{_IMAGE_MIME[mime][1]}"
        elif kind == "file":
            spec = part.get("file")
            if not isinstance(spec, dict):
                raise APIError(400, f"{where}.file: expected an object with 'filename' and 'file_data'", f"{where}.file", "invalid_type")
            if "file_id" in spec and "file_data" not in spec:
                raise APIError(400, f"{where}.file.file_id: uploaded-file ids are not supported; send the bytes as "
                                    "base64 in 'file_data'", f"{where}.file.file_id", "unsupported_value")
            name = spec.get("filename")
            if not isinstance(name, str) or not name.strip():
                raise APIError(400, f"{where}.file.filename: a file name is required (its suffix tells NIfTI, NRRD, "
                                    "DICOM or zip apart)", f"{where}.file.filename", "missing_value")
            _, data = _decode_base64(spec.get("file_data"), f"{where}.file.file_data", expect_mime=False)
        else:
            raise APIError(400, f"{where}: content part type {kind!r} is not supported; use text, image_url or file",
                           f"{where}.type", "unsupported_value")
        if not data:
            raise APIError(400, f"{where}: the scan is empty", where, "invalid_value")
        scans.append(len(parsed.files))
        parsed.files.append((name, data, where))
        if not text_has_placeholders:
            pieces.append(PLACEHOLDER)
    return Turn(role, " ".join(p.strip() for p in pieces if p.strip()), scans)


def _number(body: dict, key: str, kind: type, low: float | None = None) -> Any:
    value = body.get(key)
    if value is None:
        return None
    try:
        check_number(key, value, integer=kind is int)
    except ValueError as error:
        raise APIError(400, str(error), key, "invalid_type") from None
    if low is not None and value < low:
        raise APIError(400, f"{key}: expected >= {low}, got {value!r}", key, "invalid_value")
    return kind(value)


def parse_request(body: Any, service) -> _ParsedRequest:
    """Validate a chat-completions body; raises :class:`APIError` naming the parameter."""
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object", None, "invalid_json")
    unknown = sorted(set(body) - _IGNORED - _HANDLED - set(_NEUTRAL))
    if unknown:
        raise APIError(400, f"unrecognized request argument(s): {', '.join(unknown)}", unknown[0], "unsupported_parameter")
    for key, neutral in _NEUTRAL.items():
        if key in body and body[key] not in (neutral, None):
            raise APIError(400, f"{key}={shown(body[key])} is not supported by this server", key, "unsupported_value")
    requested = body.get("model")
    if requested is not None and requested != model_id(service):
        raise APIError(404, f"the model {requested!r} does not exist; this server serves {model_id(service)!r}",
                       "model", "model_not_found")
    parsed = _ParsedRequest()
    parsed.stream = body.get("stream") in (True,)
    if body.get("stream") not in (None, True, False):
        raise APIError(400, "stream: expected true or false", "stream", "invalid_type")
    options = body.get("stream_options")
    parsed.include_usage = parsed.stream and isinstance(options, dict) and options.get("include_usage") is True
    n = _number(body, "n", int)
    if n not in (None, 1):
        raise APIError(400, f"n={n}: this server returns one choice (n=1)", "n", "unsupported_value")
    stop = body.get("stop")
    stop = [stop] if isinstance(stop, str) else stop
    if stop is not None and (not isinstance(stop, list) or not all(isinstance(s, str) for s in stop)
                             or len(stop) > MAX_STOP_STRINGS):
        raise APIError(400, f"stop: expected a string or a list of up to {MAX_STOP_STRINGS} strings", "stop", "invalid_type")
    parsed.stop = [s for s in (stop or []) if s]

    values: dict[str, Any] = {}
    max_tokens = _number(body, "max_completion_tokens", int)
    max_tokens = _number(body, "max_tokens", int) if max_tokens is None else max_tokens
    if max_tokens is not None:
        values["max_new_tokens"] = max_tokens
    temperature, top_p = _number(body, "temperature", float), _number(body, "top_p", float)
    if temperature is not None and temperature < 0:
        raise APIError(400, f"temperature: expected >= 0, got {temperature}", "temperature", "invalid_value")
    if (temperature not in (None, 0.0)) or (top_p is not None and top_p < 1.0):
        values["do_sample"] = True
        if temperature not in (None, 0.0):
            values["temperature"] = temperature
        if top_p is not None:
            values["top_p"] = top_p
        values["top_k"] = 0  # OpenAI has no top-k: sample from the whole (nucleus-cut) vocabulary
    seed = _number(body, "seed", int)
    if seed is not None:
        values["seed"] = seed
    parse_options(values, service.limits)  # refused before the messages are looked at (run() checks again)
    parsed.options = values

    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise APIError(400, "messages: expected a non-empty list of messages", "messages", "invalid_type")
    for i, message in enumerate(messages):
        param = f"messages[{i}]"
        if not isinstance(message, dict):
            raise APIError(400, f"{param}: expected an object with 'role' and 'content'", param, "invalid_type")
        role = message.get("role")
        role = "system" if role == "developer" else role
        if role not in ("system", "user", "assistant"):
            raise APIError(400, f"{param}.role: {message.get('role')!r} is not supported; expected system, user or "
                                "assistant", f"{param}.role", "unsupported_value")
        parsed.turns.append(_parse_content(message.get("content"), f"{param}.content", role, parsed))
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

    @app.post("/v1/chat/completions", openapi_extra=CHAT_COMPLETIONS_JSON)
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
        return JSONResponse({
            "id": completion_id, "object": "chat.completion", "created": created, "model": model_id(service),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": result.text, "refusal": None},
                         "logprobs": None, "finish_reason": result.finish_reason}],
            "usage": _usage(result),
            "system_fingerprint": service.answerer.identity.weights_sha256[:16],
            "radfm": {"prompt": result.prompt, "verification": "UNVERIFIED", "generation": result.options.to_dict()},
        })


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
        return _sse({"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
                     "system_fingerprint": service.answerer.identity.weights_sha256[:16],
                     "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]})

    yield chunk({"role": "assistant", "content": ""})
    try:
        async for event, value in events:
            if event == "text":
                yield chunk({"content": value})
            elif event == "done":
                yield chunk({}, value.finish_reason)
                if parsed.include_usage:
                    yield _sse({"id": completion_id, "object": "chat.completion.chunk", "created": created,
                                "model": model, "choices": [], "usage": _usage(value)})
    except RequestError as error:
        yield _sse(openai_body(error))
    finally:
        await events.aclose()  # client gone: the generation stops, the request's folder is removed
    yield _sse("[DONE]")
