"""The limits every request meets, whatever door it came through (one object, applied in one place)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from radfm.answering.options import GenerationOptions

MiB = 1024 * 1024


@dataclass
class Limits:
    """Request limits; ``max_images`` defaults to what the model takes per prompt.

    Byte sizes are bytes; :meth:`from_flags` takes the CLI's MiB flags. :meth:`check` refuses
    values that make no sense (a zero body limit, a negative queue) before any work is done.
    """

    max_request_bytes: int = 512 * MiB  # request body (HTTP doors)
    max_files: int = 2000  # uploaded files (a DICOM series is one file per slice)
    max_images: int | None = None  # scans per prompt
    max_queue: int = 32  # requests waiting for the model before 503 (a request counts until it runs)
    max_new_tokens: int = 1024
    max_num_beams: int = GenerationOptions.MAX_NUM_BEAMS
    max_beam_tokens: int = GenerationOptions.MAX_BEAM_TOKENS  # max_new_tokens x num_beams
    generation_timeout_s: float | None = 300.0  # per request, from the start of its generation
    max_prompt_chars: int = 8000
    parallel_preprocess: int = 2  # uploads read and preprocessed at once (threads of the pool)
    # decoded bytes of one scan, checked from its header before decompressing (radfm.transforms.guards)
    max_scan_bytes: int = 2 * 1024**3
    # bytes the scans' headers claim, summed over every request reading at once (admission to the pool)
    prepare_budget_bytes: int = 2 * 1024**3
    # the chat page's kept scans (all clients together): model inputs, display volumes and files; oldest evicted
    max_kept_scan_bytes: int = 1024 * MiB

    def check(self) -> Limits:
        """Raise ``ValueError`` naming the first limit out of range; returns ``self``."""
        positive = ("max_request_bytes", "max_files", "max_queue", "max_new_tokens", "max_num_beams", "max_beam_tokens",
                    "max_prompt_chars", "parallel_preprocess", "max_scan_bytes", "prepare_budget_bytes",
                    "max_kept_scan_bytes")
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r}: expected a whole number >= 1")
        if self.max_images is not None and (not isinstance(self.max_images, int) or self.max_images < 1):
            raise ValueError(f"max_images={self.max_images!r}: expected a whole number >= 1")
        timeout = self.generation_timeout_s
        if timeout is not None and not (isinstance(timeout, (int, float)) and 0 < timeout < float("inf")):
            raise ValueError(f"generation_timeout_s={timeout!r}: expected a number of seconds > 0")
        return self

    @classmethod
    def from_flags(cls, **flags) -> Limits:
        """Limits from CLI flags: ``*_mb`` flags in MiB (``max_request_mb``, ``max_scan_mb``, ...).

        A flag's error names the flag as the user typed it (``--max_scan_mb``).
        """
        values, flag_of = {}, {}
        names = {f.name for f in fields(cls)}
        for flag, value in flags.items():
            if value is None:
                continue
            name = flag[: -len("_mb")] + "_bytes" if flag.endswith("_mb") else flag
            name = {"max_new_tokens_limit": "max_new_tokens"}.get(name, name)
            if name not in names:
                raise ValueError(f"--{flag}: not a limit")
            flag_of[name] = flag
            number = _number(flag, value, float if name == "generation_timeout_s" else int)
            if flag.endswith("_mb"):
                if number < 1:
                    raise ValueError(f"--{flag}={value!r}: expected a whole number of MiB >= 1")
                number *= MiB
            values[name] = number
        try:
            return cls(**values).check()
        except ValueError as error:
            name = str(error).split("=", 1)[0]
            flag = flag_of.get(name, name)
            raise ValueError(f"--{flag}={flags.get(flag)!r}: {str(error).split(': ', 1)[-1]}") from None

    def to_dict(self) -> dict:
        return asdict(self)


def _number(flag: str, value, kind: type):
    if isinstance(value, bool):
        raise ValueError(f"--{flag}={value!r}: expected a number")
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"--{flag}={value!r}: expected {'a whole number' if kind is int else 'a number'}") from None
    if kind is int and float(value) != number:
        raise ValueError(f"--{flag}={value!r}: expected a whole number")
    return number
