"""Generation options and the one validator every door uses (form strings, JSON values, flags)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

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

@dataclass
class GenerationOptions:
    """Decoding settings; ``validate`` names the bad field. Greedy by default (reproducible)."""

    max_new_tokens: int = 256
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 50
    num_beams: int = 1
    repetition_penalty: float = 1.0
    seed: int | None = None

    # caps every caller gets (service routes, CLI): beam search multiplies the work by num_beams
    MAX_NUM_BEAMS = 8
    MAX_BEAM_TOKENS = 4096  # max_new_tokens x num_beams
    FLOAT_RANGE = (0.01, 100.0)  # temperature and repetition_penalty: beyond this logits overflow

    def validate(
        self,
        max_new_tokens_limit: int | None = None,
        max_num_beams: int | None = None,
        max_beam_tokens: int | None = None,
    ) -> GenerationOptions:
        """Check every field (types, finite values, ranges and the work caps); returns ``self``.

        ``max_num_beams`` / ``max_beam_tokens`` default to the class caps; the service passes
        :class:`radfm.answering.limits.Limits`. Raises ``ValueError`` naming the field and what was expected.
        """
        max_num_beams = self.MAX_NUM_BEAMS if max_num_beams is None else max_num_beams
        max_beam_tokens = self.MAX_BEAM_TOKENS if max_beam_tokens is None else max_beam_tokens
        for name, kind in (("max_new_tokens", int), ("top_k", int), ("num_beams", int),
                           ("temperature", float), ("top_p", float), ("repetition_penalty", float)):
            # each field's range below is exact for any int (no float conversion): that error names the range
            check_number(f"generation option {name}", getattr(self, name), integer=kind is int, bounded=False)
        if not isinstance(self.do_sample, bool):
            raise ValueError(f"generation option do_sample={self.do_sample!r}: expected true or false")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**63):
            raise ValueError(f"generation option seed={shown(self.seed)}: expected an integer in [0, 2^63)")
        low, high = self.FLOAT_RANGE
        checks = [
            ("max_new_tokens", 1 <= self.max_new_tokens, "at least 1"),
            ("temperature", low <= self.temperature <= high, f"in [{low}, {high}]"),
            ("top_p", 0 < self.top_p <= 1, "in (0, 1]"),
            ("top_k", self.top_k >= 0, ">= 0"),
            ("top_k", self.top_k < 2**31, "< 2^31"),
            ("num_beams", 1 <= self.num_beams <= max_num_beams, f"in [1, {max_num_beams}]"),
            ("repetition_penalty", low <= self.repetition_penalty <= high, f"in [{low}, {high}]"),
        ]
        if max_new_tokens_limit is not None:
            checks.append(("max_new_tokens", self.max_new_tokens <= max_new_tokens_limit, f"<= {max_new_tokens_limit}"))
        for name, ok, expected in checks:
            if not ok:
                raise ValueError(f"generation option {name}={shown(getattr(self, name))}: expected {expected}")
        if self.max_new_tokens * self.num_beams > max_beam_tokens:
            raise ValueError(
                f"generation options max_new_tokens={shown(self.max_new_tokens)} x num_beams={shown(self.num_beams)} = "
                f"{shown(self.max_new_tokens * self.num_beams)}: expected at most {max_beam_tokens} (fewer beams or tokens)"
            )
        return self

    def hf_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``model.generate`` (sampling knobs only when sampling)."""
        kwargs: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "num_beams": self.num_beams,
                                  "repetition_penalty": self.repetition_penalty, "do_sample": self.do_sample}
        if self.do_sample:
            kwargs.update(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k)
        return kwargs

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


OPTION_NAMES = tuple(f.name for f in fields(GenerationOptions))
_FLOATS = {"temperature", "top_p", "repetition_penalty"}
_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


def refuse_unknown(names: Iterable[str], known: Iterable[str], what: str = "field") -> None:
    """Raise :class:`RequestError` (422) for the first name not in ``known``, naming the nearest known one."""
    known = list(known)
    for name in names:
        if name not in known:
            hint = nearest(name, known, cutoff=0.5)
            raise RequestError(f"unknown {what} {name!r}" + (f"; did you mean {hint!r}?" if hint else "")
                               + f" (known: {', '.join(sorted(known))})", 422, field=name, code="unknown_field")


def parse_bool(name: str, raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in _TRUE + _FALSE:
        return raw.strip().lower() in _TRUE
    raise RequestError(f"field {name!r}: cannot read {shown(raw)} as true or false", 422, field=name, code="invalid_value")


def parse_options(values: Mapping[str, Any] | GenerationOptions | None, limits: Any = None) -> GenerationOptions:
    """Generation options from raw values (form strings or JSON numbers), checked against ``limits``.

    Unknown names are refused naming the nearest option; a missing ``max_new_tokens`` is the
    default capped by the limit. Raises :class:`RequestError` 422 with ``field`` set.
    ``limits``: a :class:`radfm.answering.limits.Limits` (``None``: the class caps).
    """
    if isinstance(values, GenerationOptions):
        values = asdict(values)
    values = {k: v for k, v in (values or {}).items() if v is not None and v != ""}
    refuse_unknown(values, OPTION_NAMES, "generation option")
    parsed: dict[str, Any] = {}
    for name, raw in values.items():
        if hasattr(raw, "filename") or isinstance(raw, (bytes, bytearray)):
            raise RequestError(f"field {name!r} must be a value, not a file", 422, field=name, code="invalid_type")
        if name == "do_sample":
            parsed[name] = parse_bool(name, raw)
            continue
        if isinstance(raw, str):
            try:
                raw = float(raw) if name in _FLOATS else int(raw.strip())
            except ValueError:
                kind = "a number" if name in _FLOATS else "an integer"
                raise RequestError(f"field {name!r}: cannot read {shown(raw)} as {kind}", 422, field=name,
                                   code="invalid_type") from None
        parsed[name] = raw
    cap = getattr(limits, "max_new_tokens", None)
    parsed.setdefault("max_new_tokens", GenerationOptions.max_new_tokens if cap is None
                      else min(GenerationOptions.max_new_tokens, cap))
    try:
        return GenerationOptions(**parsed).validate(max_new_tokens_limit=cap,
                                                    max_num_beams=getattr(limits, "max_num_beams", None),
                                                    max_beam_tokens=getattr(limits, "max_beam_tokens", None))
    except (TypeError, ValueError) as error:
        field = str(error).split("=", 1)[0].removeprefix("generation option ").removeprefix("generation options ")
        raise RequestError(str(error), 422, field=field if field in OPTION_NAMES else None,
                           code="invalid_value") from None
