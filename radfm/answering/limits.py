"""The limits every request meets, whatever door it came through (one object, applied in one place).

Sizes are bytes here; the CLI's and the node config's flags are MiB, converted by :func:`mib_to_bytes`
(the one place that knows the unit) in :meth:`Limits.from_flags`.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError

from radfm.answering.options import GenerationOptions, field_path

MiB = 1024 * 1024
DEFAULT_MAX_SCAN_MB = 2048  # decoded bytes of one scan, checked from its header (every door's default)


def _no_bool(value: Any) -> Any:
    if isinstance(value, bool):  # True is an int to Python, never a size
        raise ValueError("expected a whole number, not true/false")
    return value


Whole = Annotated[int, BeforeValidator(_no_bool), Field(ge=1)]
_MIB = TypeAdapter(Whole)  # a flag in MiB, before it becomes bytes


def mib_to_bytes(mib: int) -> int:
    """A flag's MiB as bytes (the one conversion of the unit).

    Args:
        mib: a whole number of MiB (already checked >= 1).

    Returns:
        ``mib * 1024 * 1024``.
    """
    return mib * MiB


class Limits(BaseModel):
    """Request limits; ``max_images`` defaults to what the model takes per prompt.

    Validated on construction and assignment (a zero body limit or a negative queue is refused
    before any work is done); byte sizes are bytes, :meth:`from_flags` takes the CLI's MiB flags.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    max_request_bytes: Whole = Field(512 * MiB, description="request body (HTTP doors)")
    max_files: Whole = Field(2000, description="uploaded files (a DICOM series is one file per slice)")
    max_images: Whole | None = Field(None, description="scans per prompt (None: what the model takes)")
    max_queue: Whole = Field(32, description="requests waiting for the model before 503 (counted until it runs)")
    max_new_tokens: Whole = 1024
    max_num_beams: Whole = GenerationOptions.MAX_NUM_BEAMS
    max_beam_tokens: Whole = Field(GenerationOptions.MAX_BEAM_TOKENS, description="max_new_tokens x num_beams")
    generation_timeout_s: float | None = Field(300.0, gt=0, allow_inf_nan=False,
                                               description="per request, from the start of its generation")
    max_prompt_chars: Whole = 8000
    parallel_preprocess: Whole = Field(2, description="uploads read and preprocessed at once (pool threads)")
    max_scan_bytes: Whole = Field(mib_to_bytes(DEFAULT_MAX_SCAN_MB),
                                  description="decoded bytes of one scan, checked from its header before decompressing")
    prepare_budget_bytes: Whole = Field(2 * 1024**3, description="bytes the scans' headers claim, summed over every "
                                        "request reading at once (admission to the pool)")
    max_kept_scan_bytes: Whole = Field(1024 * MiB, description="the chat page's kept scans (all clients together); "
                                       "oldest evicted")

    def check(self) -> Limits:
        """Validate again (after assignments that skipped validation); returns ``self``.

        Raises:
            ValueError: (pydantic's ``ValidationError``) naming the first limit out of range.
        """
        type(self).model_validate(self.model_dump())
        return self

    @classmethod
    def from_flags(cls, **flags: Any) -> Limits:
        """Limits from CLI flags: ``*_mb`` flags in MiB (``max_request_mb``, ``max_scan_mb``, ...).

        Args:
            **flags: flag name -> value as typed (``None``: the default); ``max_new_tokens_limit`` is
                ``max_new_tokens``.

        Returns:
            The checked limits.

        Raises:
            ValueError: naming the flag as the user typed it (``--max_scan_mb=-5: ...``), from pydantic's
                error location.
        """
        values, flag_of = {}, {}
        for flag, value in flags.items():
            if value is None:
                continue
            name = flag[: -len("_mb")] + "_bytes" if flag.endswith("_mb") else flag
            name = {"max_new_tokens_limit": "max_new_tokens"}.get(name, name)
            if name not in cls.model_fields:
                raise ValueError(f"--{flag}: not a limit")
            flag_of[name] = flag
            if flag.endswith("_mb"):
                try:
                    value = mib_to_bytes(_MIB.validate_python(value))
                except ValidationError:
                    raise ValueError(f"--{flag}={value!r}: expected a whole number of MiB >= 1") from None
            values[name] = value
        try:
            return cls.model_validate(values)
        except ValidationError as error:
            detail = error.errors(include_url=False)[0]
            name = field_path(detail["loc"][:1])
            flag = flag_of.get(name, name)
            raise ValueError(f"--{flag}={flags.get(flag)!r}: {detail['msg']}") from None

    def to_dict(self) -> dict[str, Any]:
        """The limits as plain values (``/health``)."""
        return self.model_dump()


