"""The one error type of the request path; each door maps it to its own wire format."""

from __future__ import annotations


class RequestError(ValueError):
    """A request the path refuses or cannot finish.

    ``status`` is the HTTP status it stands for (413 over a limit, 415 not a scan, 422 a bad
    value, 503 queue full, 504 too slow, 507 no space); ``field`` names the request field at
    fault when there is one (``max_new_tokens``, ``prompt``, ``files``); ``code`` is a short
    machine-readable reason (OpenAI's ``error.code``). The message never holds a host path.
    """

    def __init__(self, message: str, status: int = 400, field: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status_code = int(status)
        self.field = field
        self.code = code

    @property
    def status(self) -> int:
        return self.status_code


class BodyTooLarge(Exception):
    """A request body grew past the byte limit while it was being read (raised by the body counter)."""
