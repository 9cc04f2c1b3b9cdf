"""Generation options: one pydantic model every door parses into, once, and the one error shape.

:class:`GenerationOptions` is the request path's decoding settings (the names are transformers'
``GenerationConfig`` names). Form strings (``"12"``, ``"true"``), JSON values and flags all go
through the same field validators; a request's caps (:class:`radfm.answering.limits.Limits`) come
in as the validation context. The transformers engine turns the options into a
``transformers.GenerationConfig`` (:meth:`GenerationOptions.generation_config`); other engines
read the same fields:

=================  ========================================================================
field              meaning
=================  ========================================================================
max_new_tokens     longest answer in tokens (OpenAI ``max_tokens``)
min_new_tokens     EOS is not allowed before this many tokens (vLLM/OpenAI-extra ``min_tokens``)
ignore_eos         never stop at EOS: the answer is exactly ``max_new_tokens`` long unless a stop
                   string or the model's context ends it first (vLLM ``ignore_eos``)
do_sample          sample instead of greedy/beam decoding (greedy by default: reproducible)
temperature        sampling temperature (only with ``do_sample``)
top_p, top_k       nucleus and top-k cut (only with ``do_sample``; ``top_k`` 0: no cut)
num_beams          beam search width (transformers engine)
repetition_penalty transformers' repetition penalty (1.0: none)
seed               the sampler's seed (``None``: not seeded)
=================  ========================================================================

Stop strings are not a decoding option: they travel on the request (``AnswerRequest.stop``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from radfm.answering.refusal import RequestError
from radfm.utils.cli import nearest

INT_BITS = 63  # every integer option fits a signed 64-bit integer (torch, the seed)


def shown(value: Any) -> str:
    """``repr(value)`` short enough for an error message (a 400-digit number or a long string is summarised).

    Args:
        value: what the client sent.

    Returns:
        The repr, or a summary for integers over 40 digits and strings over 40 characters.
    """
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"{'-' if value < 0 else ''}<an integer of about {int(value.bit_length() * math.log10(2)) + 1} digits>"
    if isinstance(value, (str, bytes)) and len(value) > 40:
        return f"{value[:20]!r}... ({len(value)} characters)"
    return repr(value)


def check_number(name: str, value: Any, integer: bool, bounded: bool = True) -> int | float:
    """``value`` if it is a finite number (within 64 bits unless ``bounded`` is false), else ``ValueError``.

    Never converts an integer to a float, so a 400-digit number is refused, not an ``OverflowError``.

    Args:
        name: the field, named in the error (the message starts ``"{name}={value}: "``).
        value: a JSON number or Python value (strings are the caller's to convert first).
        integer: whether the field takes whole numbers only (``5.0`` counts as whole).
        bounded: refuse magnitudes from 2^63 on (``False`` where the caller checks the field's own range).

    Returns:
        ``value`` unchanged.

    Raises:
        ValueError: naming the field and what was expected.
    """
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name}={shown(value)}: expected {kind}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{name}={value!r}: expected a finite number")
    if integer and isinstance(value, float) and not value.is_integer():
        raise ValueError(f"{name}={value!r}: expected {kind}")
    if bounded and not -(2**INT_BITS) <= value < 2**INT_BITS:
        raise ValueError(f"{name}={shown(value)}: expected {kind} in [-2^{INT_BITS}, 2^{INT_BITS})")
    return value


def refusal(code: str, message: str) -> PydanticCustomError:
    """A validator's error with our ``code`` and a finished ``message`` (braces in it are not a template).

    Args:
        code: the error code clients see (``invalid_value``, ``invalid_type``, ...).
        message: the whole message.

    Returns:
        The error to raise inside a pydantic validator.
    """
    return PydanticCustomError(code, "{message}", {"message": message})


def field_path(loc: Iterable[Any]) -> str:
    """pydantic's error ``loc`` as a path: ``("rules", 0, "prompt")`` -> ``"rules[0].prompt"``."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def request_error(error: ValidationError, what: str, known: Iterable[str], status: int = 422) -> RequestError:
    """The one error type of the request path, from pydantic's first error (its ``loc`` is the field).

    Args:
        error: what pydantic raised.
        what: what the fields are, for an unknown one (``"generation option"``, ``"form field"``).
        known: the names accepted, for the nearest-name hint.
        status: the HTTP status.

    Returns:
        A :class:`RequestError` with ``field`` and ``code`` set.
    """
    detail = error.errors(include_url=False)[0]
    field = field_path(detail["loc"])
    if detail["type"] == "extra_forbidden":
        return unknown_field(field, known, what, status)
    if detail["type"] in ("invalid_value", "invalid_type"):
        return RequestError(detail["msg"], status, field=field, code=detail["type"])
    return RequestError(f"{what} {field}={shown(detail['input'])}: {detail['msg']}", status, field=field,
                        code="invalid_value")


def unknown_field(name: str, known: Iterable[str], what: str = "field", status: int = 422) -> RequestError:
    """The refusal of an unknown name, naming the nearest known one."""
    known = list(known)
    hint = nearest(name, known, cutoff=0.5)
    return RequestError(f"unknown {what} {name!r}" + (f"; did you mean {hint!r}?" if hint else "")
                        + f" (known: {', '.join(sorted(known))})", status, field=name, code="unknown_field")


def refuse_unknown(names: Iterable[str], known: Iterable[str], what: str = "field") -> None:
    """Raise :class:`RequestError` (422) for the first name not in ``known``, naming the nearest known one."""
    known = list(known)
    for name in names:
        if name not in known:
            raise unknown_field(name, known, what)


_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


def read_bool(name: str, raw: Any) -> bool:
    """A flag from JSON ``true``/``false`` or a form string (``true/1/yes``, ``false/0/no``); pydantic error else."""
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in _TRUE + _FALSE:
        return raw.strip().lower() in _TRUE
    raise refusal("invalid_type", f"field {name!r}: cannot read {shown(raw)} as true or false")


class GenerationOptions(BaseModel):
    """Decoding settings (see the module docstring); greedy by default (reproducible).

    Validated on construction against the class caps, or against a request's limits through
    :func:`parse_options`; each error is the field's own, naming it and what was expected.
    """

    model_config = ConfigDict(extra="forbid")

    max_new_tokens: int = Field(256, ge=1, description="longest answer in tokens (the service caps it)")
    min_new_tokens: int = Field(0, ge=0, description="EOS is not allowed before this many tokens")
    ignore_eos: bool = Field(False, description="never stop at EOS: answers of max_new_tokens tokens (benchmarks)")
    do_sample: bool = Field(False, description="sample instead of greedy decoding")
    temperature: float = Field(1.0, ge=0.01, le=100, description="sampling temperature (with do_sample)")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling cut (with do_sample)")
    top_k: int = Field(50, ge=0, lt=2**31, description="top-k cut, 0: none (with do_sample)")
    num_beams: int = Field(1, ge=1, description="beam search width (the service caps it)")
    repetition_penalty: float = Field(1.0, ge=0.01, le=100, description="1.0: no penalty")
    seed: int | None = Field(None, ge=0, lt=2**63, description="the sampler's seed")

    # caps every caller gets (service routes, CLI): beam search multiplies the work by num_beams
    MAX_NUM_BEAMS: ClassVar[int] = 8
    MAX_BEAM_TOKENS: ClassVar[int] = 4096  # max_new_tokens x num_beams
    FLOAT_RANGE: ClassVar[tuple[float, float]] = (0.01, 100.0)  # temperature, repetition_penalty: beyond, logits overflow

    _limits: Any = PrivateAttr(default=None)  # the Limits these options were checked against (parse once)

    @field_validator("do_sample", "ignore_eos", mode="before")
    @classmethod
    def _flag(cls, raw: Any, info: ValidationInfo) -> bool:
        return read_bool(info.field_name, raw)

    @field_validator("max_new_tokens", "min_new_tokens", "top_k", "num_beams", "temperature", "top_p",
                     "repetition_penalty", "seed", mode="before")
    @classmethod
    def _number(cls, raw: Any, info: ValidationInfo) -> int | float | None:
        name = info.field_name
        if raw is None and name == "seed":
            return None
        integer = name not in ("temperature", "top_p", "repetition_penalty")
        kind = "an integer" if integer else "a number"
        if hasattr(raw, "filename") or isinstance(raw, (bytes, bytearray)):
            raise refusal("invalid_type", f"field {name!r} must be a value, not a file")
        if isinstance(raw, str):  # a form field or a flag
            try:
                raw = float(raw) if not integer else int(raw.strip())
            except ValueError:
                raise refusal("invalid_type", f"field {name!r}: cannot read {shown(raw)} as {kind}") from None
        if name == "seed":
            if isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw < 2**63:
                raise refusal("invalid_value", f"generation option seed={shown(raw)}: expected an integer in [0, 2^63)")
            return raw
        try:  # each range below is exact for any int (no float conversion): that error names the range
            check_number(f"generation option {name}", raw, integer=integer, bounded=False)
        except ValueError as error:
            raise refusal("invalid_value", str(error)) from None
        value = int(raw) if integer else raw
        expected = cls._out_of_range(name, value, info)
        if expected:
            raise refusal("invalid_value", f"generation option {name}={shown(value)}: expected {expected}")
        if name == "num_beams" and isinstance(info.data.get("max_new_tokens"), int):
            tokens, cap = info.data["max_new_tokens"], cls._cap(info, "max_beam_tokens", cls.MAX_BEAM_TOKENS)
            if tokens * value > cap:
                raise refusal("invalid_value", f"generation options max_new_tokens={shown(tokens)} x num_beams="
                              f"{shown(value)} = {shown(tokens * value)}: expected at most {cap} (fewer beams or tokens)")
        return value

    @staticmethod
    def _cap(info: ValidationInfo, name: str, default: int | None) -> int | None:
        value = getattr((info.context or {}).get("limits"), name, None)
        return default if value is None else value

    @classmethod
    def _out_of_range(cls, name: str, value: int | float, info: ValidationInfo) -> str | None:
        """What ``name`` expects when ``value`` is out of its range (``None``: in range)."""
        low, high = cls.FLOAT_RANGE
        if name == "max_new_tokens":
            cap = cls._cap(info, "max_new_tokens", None)
            return "at least 1" if value < 1 else (f"<= {cap}" if cap is not None and value > cap else None)
        if name == "min_new_tokens":
            most = info.data.get("max_new_tokens")
            return ">= 0" if value < 0 else (f"<= max_new_tokens ({most})" if isinstance(most, int) and value > most
                                             else None)
        if name in ("temperature", "repetition_penalty"):
            return None if low <= value <= high else f"in [{low}, {high}]"
        if name == "top_p":
            return None if 0 < value <= 1 else "in (0, 1]"
        if name == "top_k":
            return ">= 0" if value < 0 else ("< 2^31" if value >= 2**31 else None)
        most = cls._cap(info, "max_num_beams", cls.MAX_NUM_BEAMS)  # num_beams
        return None if 1 <= value <= most else f"in [1, {most}]"

    def validate(self, max_new_tokens_limit: int | None = None, max_num_beams: int | None = None,
                 max_beam_tokens: int | None = None) -> GenerationOptions:
        """These options checked again against explicit caps (``None``: the class caps).

        Args:
            max_new_tokens_limit: the largest ``max_new_tokens``.
            max_num_beams: the largest ``num_beams``.
            max_beam_tokens: the largest ``max_new_tokens x num_beams``.

        Returns:
            A checked copy.

        Raises:
            ValueError: (pydantic's ``ValidationError``) naming the field.
        """
        from types import SimpleNamespace

        caps = SimpleNamespace(max_new_tokens=max_new_tokens_limit, max_num_beams=max_num_beams,
                               max_beam_tokens=max_beam_tokens)
        return type(self).model_validate(self.model_dump(), context={"limits": caps})

    def generation_config(self, base: Any = None, **token_ids: int | None) -> Any:
        """These options as a ``transformers.GenerationConfig`` for the transformers engine.

        Args:
            base: the model folder's ``GenerationConfig`` (its other settings are kept), or ``None``.
            **token_ids: ``eos_token_id`` / ``pad_token_id`` (``min_new_tokens`` needs the EOS id).

        Returns:
            A new ``GenerationConfig``; ``ignore_eos`` makes ``min_new_tokens`` equal ``max_new_tokens``
            (EOS is masked at every step, as vLLM's ``ignore_eos`` never stops at it).
        """
        from transformers import GenerationConfig

        config = GenerationConfig.from_dict(base.to_dict()) if base is not None else GenerationConfig()
        sampling = dict(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k) if self.do_sample \
            else dict(temperature=1.0, top_p=1.0, top_k=50)  # greedy: neutral values, no warnings
        config.update(max_new_tokens=self.max_new_tokens, max_length=None, do_sample=self.do_sample,
                      num_beams=self.num_beams, repetition_penalty=self.repetition_penalty,
                      min_new_tokens=self.max_new_tokens if self.ignore_eos else (self.min_new_tokens or None),
                      **sampling, **{k: v for k, v in token_ids.items() if v is not None})
        return config

    def to_dict(self) -> dict[str, Any]:
        """The options as plain values (JSON, the SR's parameters)."""
        return self.model_dump()


OPTION_NAMES = tuple(GenerationOptions.model_fields)


def parse_options(values: Mapping[str, Any] | GenerationOptions | None, limits: Any = None) -> GenerationOptions:
    """Generation options from raw values (form strings or JSON numbers), checked against ``limits``.

    Options already parsed against the same ``limits`` are returned as they are (parsed once).
    Unknown names are refused naming the nearest option; a missing ``max_new_tokens`` is the
    default capped by the limit.

    Args:
        values: raw values by option name (``None``/``""``: the default), or parsed options.
        limits: a :class:`radfm.answering.limits.Limits` (``None``: the class caps).

    Returns:
        The checked options.

    Raises:
        RequestError: 422 with ``field`` (from pydantic's error location) and ``code`` set.
    """
    if isinstance(values, GenerationOptions):
        if limits is not None and values._limits is limits:
            return values
        values = values.model_dump()
    values = {k: v for k, v in (values or {}).items() if v is not None and v != ""}
    cap = getattr(limits, "max_new_tokens", None)
    values.setdefault("max_new_tokens", GenerationOptions.model_fields["max_new_tokens"].default if cap is None
                      else min(GenerationOptions.model_fields["max_new_tokens"].default, cap))
    try:
        options = GenerationOptions.model_validate(values, context={"limits": limits})
    except ValidationError as error:
        raise request_error(error, "generation option", OPTION_NAMES) from None
    options._limits = limits
    return options
