"""The HTTP doors' bodies as pydantic models, and the OpenAPI of ``/openapi.json`` generated from them.

The routes read their bodies themselves (so each answers refusals in its own format, and the body
limit counts the bytes before anything is parsed), then validate them with these models; the
route decorators publish the same models' JSON schema (:func:`openapi_body`), so a client
generator or a fuzzer sees exactly what is validated.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationInfo, field_validator, model_serializer

from radfm.answering.options import GenerationOptions, check_number, read_bool, refusal, shown

MAX_STOP_STRINGS = 4


def _inline(schema: Any, defs: dict[str, Any]) -> Any:
    """``schema`` with every ``#/$defs/...`` reference replaced by its definition (the models are not recursive)."""
    if isinstance(schema, dict):
        if "$ref" in schema and schema["$ref"].startswith("#/$defs/"):
            return _inline(defs[schema["$ref"].rsplit("/", 1)[-1]], defs)
        return {k: _inline(v, defs) for k, v in schema.items() if k != "$defs"}
    if isinstance(schema, list):
        return [_inline(v, defs) for v in schema]
    return schema


def openapi_body(model: type[BaseModel], media_type: str, **extra_properties: dict[str, Any]) -> dict[str, Any]:
    """``openapi_extra`` for a route whose body ``model`` validates: the model's JSON schema, references inlined.

    Args:
        model: the body's model.
        media_type: ``application/json`` or ``multipart/form-data``.
        **extra_properties: properties the model does not validate itself (the uploaded files of a form).

    Returns:
        ``{"requestBody": {...}}`` for FastAPI's ``openapi_extra``.
    """
    schema = model.model_json_schema()
    schema = _inline(schema, schema.get("$defs", {}))
    schema.setdefault("properties", {}).update(extra_properties)
    if extra_properties:
        schema["required"] = [*schema.get("required", []), *extra_properties]
    return {"requestBody": {"required": True, "content": {media_type: {"schema": schema}}}}


# ---------------------------------------------------------------- POST /v1/answer (multipart form) ----
FILES_SCHEMA = {"type": "array", "items": {"type": "string", "format": "binary"},
                "description": "scan files: DICOM slices (one file each), NIfTI, NRRD, PNG, JPEG, or a zip of them"}


class AnswerForm(GenerationOptions):
    """The non-file fields of ``POST /v1/answer``: the question, ``sr`` and the generation options.

    Unknown fields are refused (``extra="forbid"``: a misspelt option must not be ignored).
    """

    prompt: str = Field(description="the question; one <image> per scan, or none")
    sr: bool = Field(False, description="also return a DICOM SR (base64) when DICOM was sent")

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompt(cls, raw: Any) -> str:
        if not isinstance(raw, str) or not raw.strip():
            raise refusal("missing_value", "missing form field 'prompt' (the question, optionally with <image> "
                                           "placeholders)")
        return raw

    @field_validator("sr", mode="before")
    @classmethod
    def _sr(cls, raw: Any) -> bool:
        return read_bool("sr", raw)

    def options(self) -> GenerationOptions:
        """The generation options of this form, already checked (nothing is parsed again)."""
        options = GenerationOptions.model_construct(**self.model_dump(include=set(GenerationOptions.model_fields)))
        options._limits = self._limits
        return options


# ---------------------------------------------------------------- POST /v1/chat/completions ----
class ImageURL(BaseModel):
    """An image part's URL: a ``data:image/png|jpeg;base64,...`` URL (the service fetches nothing)."""

    model_config = ConfigDict(extra="ignore")  # "detail" and other hints change nothing here
    url: str = Field(description="data:image/png|jpeg;base64,...")


class FileSpec(BaseModel):
    """A file part's file: a NIfTI, NRRD, DICOM file or a zip of a DICOM series, base64 in ``file_data``."""

    model_config = ConfigDict(extra="ignore")
    filename: str | None = Field(None, description="its suffix tells NIfTI, NRRD, DICOM or zip apart")
    file_data: str | None = Field(None, description="base64 or a data URL")
    file_id: str | None = Field(None, description="not supported (uploaded-file ids)")


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: str


class ImagePart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["image_url"]
    image_url: ImageURL


class FilePart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["file"]
    file: FileSpec


def _part_kind(part: Any) -> str | None:
    kind = part.get("type") if isinstance(part, dict) else None
    return f"#{kind}" if kind in ("text", "image_url", "file") else None


def _content_kind(content: Any) -> str | None:
    return "#str" if isinstance(content, str) else "#parts" if isinstance(content, list) else \
        "#none" if content is None else None


# a tag is a loc element starting with "#" (openai_api drops them from the parameter path)
ContentPart = Annotated[
    Annotated[TextPart, Tag("#text")] | Annotated[ImagePart, Tag("#image_url")] | Annotated[FilePart, Tag("#file")],
    Discriminator(_part_kind, custom_error_type="unsupported_part",
                  custom_error_message="content part type is not supported; use text, image_url or file")]


class ChatMessage(BaseModel):
    """One message: ``content`` a string or a list of parts (text, image_url, file); ``developer`` is ``system``."""

    model_config = ConfigDict(extra="ignore")  # e.g. "name": accepted, changes nothing
    role: Literal["system", "developer", "user", "assistant"]
    content: Annotated[Annotated[str, Tag("#str")] | Annotated[list[ContentPart], Tag("#parts")]
                       | Annotated[None, Tag("#none")],
                       Discriminator(_content_kind, custom_error_type="invalid_type",
                                     custom_error_message="expected a string or a list of content parts")] = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool | None = None


# accepted only at their no-op value
NEUTRAL = {"presence_penalty": 0, "frequency_penalty": 0, "logprobs": False, "logit_bias": {}, "tools": [],
           "response_format": {"type": "text"}}


class ChatCompletionRequest(BaseModel):
    """A Chat Completions body (OpenAI's names; ``min_tokens``/``ignore_eos`` are vLLM's sampling extras).

    Unknown parameters are refused (``extra="forbid"``, as OpenAI's own API answers
    "Unrecognized request argument"); parameters that change nothing here (``user``, ``metadata``,
    ``store``, ...) are accepted and ignored; the penalties, ``logprobs``, ``tools`` and the like only
    at their no-op value.
    """

    model_config = ConfigDict(extra="forbid")

    messages: list[ChatMessage] = Field(min_length=1)
    model: str | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1, description="longest answer in tokens")
    max_completion_tokens: int | None = Field(None, ge=1, description="OpenAI's newer name of max_tokens (wins)")
    min_tokens: int | None = Field(None, ge=0, description="vLLM extra: EOS not allowed before this many tokens")
    ignore_eos: bool | None = Field(None, description="vLLM extra: never stop at EOS (answer of max_tokens tokens)")
    temperature: float | None = Field(None, ge=0, description="0 or absent: greedy (reproducible)")
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = None
    n: Literal[1] | None = None
    stop: str | list[str] | None = Field(None, description=f"up to {MAX_STOP_STRINGS} stop strings")
    # accepted and ignored (they do not change the answer)
    user: Any = None
    metadata: Any = None
    store: Any = None
    service_tier: Any = None
    parallel_tool_calls: Any = None
    # accepted only at their no-op value (NEUTRAL)
    presence_penalty: float | None = Field(None, description="only 0")
    frequency_penalty: float | None = Field(None, description="only 0")
    logprobs: bool | None = Field(None, description="only false")
    logit_bias: dict[str, Any] | None = Field(None, description="only {}")
    tools: list[Any] | None = Field(None, description="only []")
    response_format: dict[str, Any] | None = Field(None, description='only {"type": "text"}')

    @field_validator("max_tokens", "max_completion_tokens", "min_tokens", "seed", "n", "temperature", "top_p",
                     mode="before")
    @classmethod
    def _number(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None:
            return None
        integer = info.field_name not in ("temperature", "top_p")
        try:
            check_number(info.field_name, value, integer=integer)
        except ValueError as error:
            raise refusal("invalid_type", str(error)) from None
        if info.field_name == "n" and value != 1:
            raise refusal("unsupported_value", f"n={value}: this server returns one choice (n=1)")
        if info.field_name == "temperature" and value < 0:
            raise refusal("invalid_value", f"temperature: expected >= 0, got {value!r}")
        return int(value) if integer else float(value)

    @field_validator("stream", "ignore_eos", mode="before")
    @classmethod
    def _flag(cls, value: Any, info: ValidationInfo) -> Any:
        if value not in (None, True, False) or isinstance(value, (int, float)) and not isinstance(value, bool):
            raise refusal("invalid_type", f"{info.field_name}: expected true or false")
        return value

    @field_validator("stop", mode="before")
    @classmethod
    def _stop(cls, value: Any) -> Any:
        stop = [value] if isinstance(value, str) else value
        if stop is not None and (not isinstance(stop, list) or not all(isinstance(s, str) for s in stop)
                                 or len(stop) > MAX_STOP_STRINGS):
            raise refusal("invalid_type", f"stop: expected a string or a list of up to {MAX_STOP_STRINGS} strings")
        return stop

    @field_validator(*NEUTRAL, mode="before")
    @classmethod
    def _neutral(cls, value: Any, info: ValidationInfo) -> Any:
        if value not in (NEUTRAL[info.field_name], None):
            raise refusal("unsupported_value", f"{info.field_name}={shown(value)} is not supported by this server")
        return value

    def option_values(self) -> dict[str, Any]:
        """The generation options this body asks for, by the request path's names (checked by ``parse_options``).

        No ``temperature``/``top_p`` (or ``temperature`` 0) is greedy; OpenAI has no top-k, so sampling
        draws from the whole (nucleus-cut) vocabulary.
        """
        values: dict[str, Any] = {}
        max_tokens = self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens
        if max_tokens is not None:
            values["max_new_tokens"] = max_tokens
        if self.min_tokens is not None:
            values["min_new_tokens"] = self.min_tokens
        if self.ignore_eos is not None:
            values["ignore_eos"] = self.ignore_eos
        if self.temperature not in (None, 0.0) or (self.top_p is not None and self.top_p < 1.0):
            values.update(do_sample=True, top_k=0)
            if self.temperature not in (None, 0.0):
                values["temperature"] = self.temperature
            if self.top_p is not None:
                values["top_p"] = self.top_p
        if self.seed is not None:
            values["seed"] = self.seed
        return values


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    refusal: None = None


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    logprobs: None = None
    finish_reason: str | None


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class ChatCompletion(BaseModel):
    """The answer (``object: chat.completion``); ``radfm`` carries the prompt, the options and the verification."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    system_fingerprint: str
    radfm: dict[str, Any]


class ChunkDelta(BaseModel):
    """What a chunk adds: the role (first chunk), text, or nothing (the last chunk); absent keys are left out."""

    model_config = ConfigDict(extra="forbid")
    role: Literal["assistant"] | None = None
    content: str | None = None

    @model_serializer(mode="wrap")
    def _present_only(self, handler: Any) -> dict[str, Any]:
        return {k: v for k, v in handler(self).items() if v is not None}


class ChunkChoice(BaseModel):
    index: int = 0
    delta: ChunkDelta
    logprobs: None = None
    finish_reason: str | None = None


class ChatCompletionChunk(BaseModel):
    """One server-sent event of a streamed answer (``object: chat.completion.chunk``)."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[ChunkChoice]
    usage: Usage | None = None


class OpenAIErrorBody(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIError(BaseModel):
    """Every refusal of the OpenAI routes."""

    error: OpenAIErrorBody


# ---------------------------------------------------------------- the chat page (hand-written; not validated here) ----
def _body(media_type: str, schema: dict) -> dict:
    return {"requestBody": {"required": True, "content": {media_type: {"schema": schema}}}}


_OPTIONS = _inline(GenerationOptions.model_json_schema(), {})["properties"]

CHAT_SCANS_FORM = _body("multipart/form-data", {
    "type": "object", "required": ["files"], "properties": {"files": FILES_SCHEMA},
})

CHAT_ANSWER_JSON = _body("application/json", {
    "type": "object", "required": ["messages"], "additionalProperties": False,
    "properties": {
        "messages": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["role", "text"], "additionalProperties": False,
            "properties": {"role": {"type": "string", "enum": ["user", "assistant"]},
                           "text": {"type": "string", "description": "one <image> per scan id"},
                           "scans": {"type": "array", "items": {"type": "string"},
                                     "description": "ids from POST /chat/api/scans"}}}},
        **{k: v for k, v in _OPTIONS.items() if k in ("max_new_tokens", "do_sample", "temperature", "top_p",
                                                     "top_k", "seed")},
    },
})

CHAT_SR_JSON = _body("application/json", {
    "type": "object", "required": ["answer", "prompt"],
    "properties": {"answer": {"type": "string"}, "prompt": {"type": "string"},
                   "scans": {"type": "array", "items": {"type": "string"}},
                   "generation": {"type": "object"}},
})

ANSWER_FORM = openapi_body(AnswerForm, "multipart/form-data", files=FILES_SCHEMA)
CHAT_COMPLETIONS_JSON = openapi_body(ChatCompletionRequest, "application/json")
