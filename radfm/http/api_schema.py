"""Request bodies of the HTTP doors as OpenAPI, for ``/openapi.json`` (documentation only).

The routes read their bodies themselves (so each answers refusals in its own format); these
schemas say what they accept, so a client generator or a fuzzer sees every route.
"""

from __future__ import annotations

_OPTIONS = {
    "max_new_tokens": {"type": "integer", "minimum": 1, "description": "longest answer in tokens"},
    "do_sample": {"type": "boolean", "description": "sample instead of greedy decoding"},
    "temperature": {"type": "number", "minimum": 0.01, "maximum": 100},
    "top_p": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
    "top_k": {"type": "integer", "minimum": 0},
    "num_beams": {"type": "integer", "minimum": 1},
    "repetition_penalty": {"type": "number", "minimum": 0.01, "maximum": 100},
    "seed": {"type": "integer", "minimum": 0},
}


def _body(media_type: str, schema: dict) -> dict:
    return {"requestBody": {"required": True, "content": {media_type: {"schema": schema}}}}


_FILES = {"type": "array", "items": {"type": "string", "format": "binary"},
          "description": "scan files: DICOM slices (one file each), NIfTI, NRRD, PNG, JPEG, or a zip of them"}

ANSWER_FORM = _body("multipart/form-data", {
    "type": "object", "required": ["prompt", "files"], "additionalProperties": False,
    "properties": {"prompt": {"type": "string", "description": "the question; one <image> per scan, or none"},
                   "files": _FILES,
                   "sr": {"type": "boolean", "description": "also return a DICOM SR (base64) when DICOM was sent"},
                   **_OPTIONS},
})

CHAT_SCANS_FORM = _body("multipart/form-data", {
    "type": "object", "required": ["files"], "properties": {"files": _FILES},
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

_PART = {"oneOf": [
    {"type": "object", "required": ["type", "text"],
     "properties": {"type": {"const": "text"}, "text": {"type": "string"}}},
    {"type": "object", "required": ["type", "image_url"],
     "properties": {"type": {"const": "image_url"},
                    "image_url": {"type": "object", "required": ["url"],
                                  "properties": {"url": {"type": "string",
                                                         "description": "data:image/png|jpeg;base64,..."}}}}},
    {"type": "object", "required": ["type", "file"],
     "properties": {"type": {"const": "file"},
                    "file": {"type": "object", "required": ["filename", "file_data"],
                             "properties": {"filename": {"type": "string"},
                                            "file_data": {"type": "string", "description": "base64 or data URL"}}}}},
]}

CHAT_COMPLETIONS_JSON = _body("application/json", {
    "type": "object", "required": ["messages"],
    "properties": {
        "model": {"type": "string"},
        "messages": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["role", "content"],
            "properties": {"role": {"type": "string", "enum": ["system", "developer", "user", "assistant"]},
                           "content": {"oneOf": [{"type": "string"}, {"type": "array", "items": _PART}]}}}},
        "max_tokens": {"type": "integer", "minimum": 1}, "max_completion_tokens": {"type": "integer", "minimum": 1},
        "temperature": {"type": "number", "minimum": 0}, "top_p": {"type": "number"},
        "seed": {"type": "integer"}, "n": {"type": "integer", "enum": [1]},
        "stop": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "maxItems": 4}]},
        "stream": {"type": "boolean"},
        "stream_options": {"type": "object", "properties": {"include_usage": {"type": "boolean"}}},
    },
})
