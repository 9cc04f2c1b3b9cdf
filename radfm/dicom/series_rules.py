"""Which series of a study the model answers about, and with which prompt: the one series-rule system.

The node (``rules`` in its config) and the MONAI Deploy app (``--rules FILE``) read the same rules
(:class:`SeriesRule`, default :data:`DEFAULT_RULES`) and choose with the same function
(:func:`select_series`). A rules file (:func:`load_series_rules`) holds a list of rules, or
``{"rules": [...]}``; its errors name the file and the field as the node config's do
(``rules.json: rules[0].prompt: expected ..., got ...``; :func:`validation_message` writes both).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from difflib import get_close_matches
from pathlib import Path
from typing import Annotated, Any, get_args

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator
from pydantic.dataclasses import dataclass
from pydantic_core import PydanticCustomError

from radfm.answering.options import field_path

STRICT = ConfigDict(extra="forbid", validate_default=True)  # unknown fields refused; a missing field's default checked
MAX_INSTANCES_PER_STUDY = 100_000


def expected(what: str) -> PydanticCustomError:
    """A field's error saying what it expects (:func:`validation_message` adds the path and the value given).

    Args:
        what: what the field expects (``"a whole number >= 1"``).

    Returns:
        The error to raise from a validator.
    """
    return PydanticCustomError("expected", "{expected}", {"expected": what})


def whole(low: int, high: int) -> BeforeValidator:
    """A validator for a whole number in ``[low, high]`` (a bool is not one).

    Args:
        low: the least value.
        high: the greatest value.

    Returns:
        The validator, for ``Annotated[int, whole(low, high)]``.
    """
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise expected(f"a whole number >= {low} and <= {high}")
        return value
    return BeforeValidator(check)


@dataclass(config=STRICT)
class SeriesRule:
    """Which series to answer about and what to ask: the first rule a series matches applies.

    ``modalities``: e.g. ``["CT"]``; ``description``: a regular expression searched (case-insensitive)
    in the SeriesDescription, or ``null`` for any; ``min_instances``: fewer instances are skipped
    (a scout); ``prompt``: the question, with ``<image>`` where the series goes (or none: it goes first).
    """

    name: str = ""  # default: rule{i}
    modalities: list[str] = Field(default_factory=list)
    prompt: str = ""
    description: str | None = None
    min_instances: Annotated[int, whole(1, MAX_INSTANCES_PER_STUDY)] = 1

    @field_validator("name", mode="before")
    @classmethod
    def _name(cls, value: Any) -> str:
        return str(value)

    @field_validator("modalities", mode="before")
    @classmethod
    def _modalities(cls, value: Any) -> list[str]:
        if not isinstance(value, list) or not value or not all(
                isinstance(m, str) and re.fullmatch(r"[A-Z]{2,16}", m) for m in value):
            raise expected('a list of DICOM modality codes such as ["CT"]')
        return value

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompt(cls, value: Any) -> str:
        if not isinstance(value, str) or not value.strip() or value.count("<image>") > 1:
            raise expected("a question with at most one <image>")
        return value

    @field_validator("description", mode="before")
    @classmethod
    def _description(cls, value: Any) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except (re.error, TypeError) as error:
                raise expected(f"a regular expression ({error})") from None
        return value


DEFAULT_RULES = [
    SeriesRule("ct", ["CT"], "<image> Describe the findings of this CT scan.", min_instances=4),
    SeriesRule("mr", ["MR"], "<image> Describe the findings of this MRI scan.", min_instances=4),
    SeriesRule("chest-xray", ["CR", "DX"], "<image> Describe the findings of this chest X-ray."),
]


def _non_empty(value: Any) -> Any:
    if not isinstance(value, list) or not value:
        raise expected("a non-empty list of series rules")
    return value


def _default_names(rules: list[SeriesRule]) -> list[SeriesRule]:
    for i, rule in enumerate(rules):
        rule.name = rule.name or f"rule{i}"
    return rules


# the ``rules`` field of the node config and of a rules file: non-empty; an unnamed rule is rule{i}
SeriesRules = Annotated[list[SeriesRule], BeforeValidator(_non_empty), AfterValidator(_default_names)]


class RulesFile(BaseModel):
    """A rules file: ``{"rules": [...]}`` (a bare list is read as this)."""

    model_config = STRICT

    rules: SeriesRules


def load_series_rules(path: str | os.PathLike) -> list[SeriesRule]:
    """The series rules in a JSON file: a list of rules (as in the node config) or ``{"rules": [...]}``.

    Args:
        path: the JSON file.

    Returns:
        The checked rules, in order (unnamed ones named ``rule{i}``).

    Raises:
        ValueError: ``"{path}: {field path}: expected ..., got ..."`` (the path from pydantic's error), or
            naming the file when it is unreadable or not JSON.
    """
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise ValueError(f"{path}: cannot read the series rules ({error.strerror})") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    return parse_series_rules(raw, str(path))


def parse_series_rules(raw: Any, source: str) -> list[SeriesRule]:
    """The series rules in a parsed JSON value: a list of rules or ``{"rules": [...]}``.

    Args:
        raw: the parsed JSON.
        source: the file (or ``<rules>``) the errors name first.

    Returns:
        The checked rules, in order (unnamed ones named ``rule{i}``).

    Raises:
        ValueError: ``"{source}: {field path}: expected ..., got ..."``.
    """
    path = source
    if isinstance(raw, list):
        raw = {"rules": raw}
    if not isinstance(raw, dict):
        raise ValueError(f'{path}: expected a list of series rules or {{"rules": [...]}}, got {type(raw).__name__}')
    try:
        return RulesFile.model_validate(raw).rules
    except ValidationError as error:
        raise ValueError(validation_message(str(path), error, RulesFile)[0]) from None


def select_series(series: Sequence[dict[str, Any]], rules: Sequence[SeriesRule]) -> list[tuple[dict[str, Any], SeriesRule]]:
    """``[(series, rule)]``: for each rule, the matching series with the most instances (one per rule).

    ``series`` items hold ``series_uid``, ``modality``, ``description`` and ``instances`` (any other
    key is carried along). A series matches a rule when its modality is listed, its description
    matches the rule's regular expression (case-insensitive; any when none) and it has
    ``min_instances``. A series is used by the first rule it matches only; of equal counts the
    greatest UID wins (the same choice whatever order the series come in).

    Args:
        series: the study's series.
        rules: the rules, in order.

    Returns:
        The chosen series, each with its rule, in the rules' order.
    """
    chosen: list[tuple[dict[str, Any], SeriesRule]] = []
    used: set[str] = set()
    for rule in rules:
        pattern = re.compile(rule.description, re.IGNORECASE) if rule.description else None
        matching = [s for s in series if s["series_uid"] not in used and (s.get("modality") or "") in rule.modalities
                    and s["instances"] >= rule.min_instances
                    and (pattern is None or pattern.search(s.get("description") or ""))]
        if matching:
            best = max(matching, key=lambda s: (s["instances"], s["series_uid"]))
            used.add(best["series_uid"])
            chosen.append((best, rule))
    return chosen


def validation_message(source: str, error: ValidationError, root: type) -> tuple[str, str]:
    """``(message, field path)`` of pydantic's first error: ``"{source}: {path}: expected ..., got ..."``.

    An unknown field is named first (a misspelt field explains a missing one) with the nearest known name.

    Args:
        source: the file (or ``<config>``) named first.
        error: what pydantic raised validating ``root``.
        root: the validated model (``NodeConfig``, :class:`RulesFile`), for the known field names.

    Returns:
        The message and the failing field's path (``"rules[0].prompt"``).
    """
    details = error.errors(include_url=False)
    unknown = ("extra_forbidden", "unexpected_keyword_argument")  # (a pydantic dataclass says the latter)
    detail = next((d for d in details if d["type"] in unknown), details[0])
    loc, kind = detail["loc"], detail["type"]
    path = field_path(loc)
    if kind in unknown:
        known = sorted(_fields_at(root, loc[:-1]))
        near = get_close_matches(str(loc[-1]), known, n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else f" (known: {', '.join(known)})"
        return f"{source}: {path}: unknown field{hint}", path
    if kind == "plain":
        return f"{source}: {detail['msg']}", path
    if kind == "expected":
        return f"{source}: {path}: expected {detail['msg']}, got {detail['input']!r}", path
    if kind in ("dataclass_type", "dataclass_args", "model_type", "dict_type"):
        return f"{source}: {path}: expected an object, got {detail['input']!r}", path
    return f"{source}: {path}: {detail['msg']}, got {detail['input']!r}", path


def _fields_at(root: type, loc: tuple) -> set[str]:
    """The field names of the object at ``loc`` under ``root`` (``("rules", 0)`` -> SeriesRule's)."""
    kind: Any = root
    for part in loc:
        if isinstance(part, int):
            continue
        fields = getattr(kind, "model_fields", None) or kind.__pydantic_fields__
        kind = fields[part].annotation
        while get_args(kind):  # list[X], X | None, Annotated[X, ...]
            kind = next(arg for arg in get_args(kind) if arg is not type(None))
    return set(getattr(kind, "model_fields", None) or kind.__pydantic_fields__)
