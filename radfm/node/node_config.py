"""The DICOM node's configuration: one JSON file, every field checked (pydantic) before the node starts.

Example (``docs/hospital.md`` explains each field)::

    {
      "ae_title": "RADFM", "host": "127.0.0.1", "port": 11112,
      "allowed_callers": [{"ae_title": "ORTHANC", "host": "127.0.0.1"}],
      "state_dir": "/var/lib/radfm-node",
      "stable_after_s": 10, "max_studies_in_memory": 1,
      "model": null, "rules": [...],
      "destinations": [{"name": "pacs", "kind": "dimse", "ae_title": "ORTHANC", "host": "127.0.0.1", "port": 4242}]
    }

Every object refuses unknown fields (``extra="forbid"``: a misspelt limit must not fall back to its
default); an error names the file and the field's path from pydantic's error location
(``node.json: rules[0].prompt: expected ...``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.dataclasses import dataclass
from pydantic_core import PydanticCustomError

from radfm.answering.limits import DEFAULT_MAX_SCAN_MB, mib_to_bytes
from radfm.dicom.series_rules import (
    DEFAULT_RULES,
    MAX_INSTANCES_PER_STUDY,
    STRICT,
    SeriesRules,
    expected,
    validation_message,
    whole,
)

_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # DICOM AE: 16 printable chars, no backslash
DAY_S = 86400.0


class NodeConfigError(ValueError):
    """The config file is wrong; the message names the file and the field.

    ``field``: the field's path (``"rules[0].prompt"``, from pydantic's error location), or ``None``
    when the file itself is unreadable or not a JSON object.
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def _ae(value: Any) -> str:
    if not isinstance(value, str) or not _AE_TITLE.match(value) or not value.strip():
        raise expected("an AE title of 1-16 printable characters (no backslash)")
    return value.strip()


def _host(value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > 255 or any(c.isspace() for c in value):
        raise expected("a host name or IP address")
    return value


def _seconds(low: float, high: float):
    def check(value: Any) -> float:
        return _in_seconds(value, low, high)
    return BeforeValidator(check)


def _in_seconds(value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (low <= value <= high):
        raise expected(f"a number of seconds >= {low:g} and <= {high:g}")
    return float(value)


def _url(value: Any) -> str:
    if not isinstance(value, str) or not re.match(r"https?://", value):
        raise expected("the DICOMweb root, http(s)://HOST:PORT/dicom-web")
    return value.rstrip("/")


def _text_or_none(value: Any) -> str | None:
    if value is not None and (not isinstance(value, str) or not value):
        raise expected("a string or null")
    return value


AETitle = Annotated[str, BeforeValidator(_ae)]
Host = Annotated[str, BeforeValidator(_host)]
DICOMwebURL = Annotated[str, BeforeValidator(_url)]
TextOrNone = Annotated[str | None, BeforeValidator(_text_or_none)]


@dataclass(config=STRICT)
class Caller:
    """A calling AE allowed to send studies (and C-ECHO): its title and the host it connects from."""

    ae_title: AETitle = None  # type: ignore[assignment]  (None: refused, naming the field)
    host: Host = None  # type: ignore[assignment]


@dataclass(config=STRICT)
class Destination:
    """Where reports go: ``kind`` ``dimse`` (C-STORE to ae_title@host:port) or ``stow`` (STOW-RS to url)."""

    name: str | None = None  # default: destination{i}
    kind: str | None = None
    ae_title: str | None = None
    host: str | None = None
    port: int | None = None
    url: str | None = None

    @field_validator("name", mode="before")
    @classmethod
    def _name(cls, value: Any) -> Any:
        if value is not None and (not isinstance(value, str) or not re.fullmatch(r"[\w.-]{1,64}", value)):
            raise expected("a short name of letters, digits, ._-")
        return value

    @field_validator("kind", mode="before")
    @classmethod
    def _kind(cls, value: Any) -> str:
        if value not in ("dimse", "stow"):
            raise expected('"dimse" (C-STORE) or "stow" (STOW-RS)')
        return value

    # the address fields a kind needs (validate_default: a missing one is named too)
    @field_validator("ae_title", "host", "port", "url", mode="before")
    @classmethod
    def _address(cls, value: Any, info: ValidationInfo) -> Any:
        kind = info.data.get("kind")
        name = info.field_name
        if kind == "dimse" and name != "url":
            return {"ae_title": _ae, "host": _host, "port": _port}[name](value)
        if kind == "stow" and name == "url":
            return _url(value)
        return None if kind in ("dimse", "stow") else value


def _port(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise expected("a whole number >= 1 and <= 65535")
    return value


@dataclass(config=STRICT)
class PullConfig:
    """DICOMweb pull mode: ask ``url`` (QIDO-RS) every ``every_s`` for studies matching ``filter``.

    ``timeout_s``: one poll's deadline, the search and every study it fetches included.
    """

    url: DICOMwebURL = None  # type: ignore[assignment]  (None: refused, naming the field)
    filter: dict[str, str] = Field(default_factory=dict)
    every_s: Annotated[float, _seconds(0.1, DAY_S)] = 30.0
    timeout_s: Annotated[float, _seconds(1.0, DAY_S)] = 600.0  # a poll is a request, not a day's work

    @field_validator("filter", mode="before")
    @classmethod
    def _filter(cls, value: Any) -> dict[str, str]:
        if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            raise expected('QIDO-RS study filters, e.g. {"ModalitiesInStudy": "CT"}')
        return dict(value)


class NodeConfig(BaseModel):
    """The node's settings (``docs/hospital.md``); sizes in MiB as written, ``*_bytes`` for code."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    ae_title: AETitle = "RADFM"
    host: Host = "127.0.0.1"
    port: Annotated[int, whole(0, 65535)] = 11112
    allowed_callers: list[Caller] = Field(default_factory=list)
    state_dir: str = "radfm-node"
    # no new instance of a study for this long: the study is complete
    stable_after_s: Annotated[float, _seconds(0.1, DAY_S)] = 10.0
    # Upper bounds: a value past these is a typo or an attack on the node's memory/disk, never a setting
    # (e.g. max_studies_in_memory 1e9 let the node grow past 2.5 GB).
    max_studies_in_memory: Annotated[int, whole(1, 64)] = 1  # jobs read and answered at once (one study each)
    max_instance_mb: Annotated[int, whole(1, 4096)] = 256  # one received instance, as received
    max_scan_mb: Annotated[int, whole(1, 65536)] = DEFAULT_MAX_SCAN_MB  # decoded size of one series (headers)
    max_instances_per_study: Annotated[int, whole(1, MAX_INSTANCES_PER_STUDY)] = 5000
    model: TextOrNone = None  # a model folder; null: the demo model
    device: str = "cpu"
    engine: Literal["transformers", "vllm"] = "transformers"  # "vllm": the node's series batch continuously (docs/vllm.md)
    max_new_tokens: Annotated[int, whole(1, 8192)] = 128
    # one series' generation; a full-size model on CPU takes minutes
    generation_timeout_s: Annotated[float, _seconds(1.0, DAY_S)] = 1800.0
    rules: SeriesRules = Field(default_factory=lambda: list(DEFAULT_RULES))
    destinations: list[Destination] = Field(default_factory=list)
    max_attempts: Annotated[int, whole(1, 1000)] = 8  # delivery tries per destination before the job fails
    retry_first_s: Annotated[float, _seconds(0.01, 3600.0)] = 5.0  # first wait between tries; doubles each time
    retry_max_s: float = 600.0  # >= retry_first_s
    max_job_attempts: Annotated[int, whole(1, 100)] = 3  # a job interrupted (crash) or failing this often fails
    institution_name: TextOrNone = None
    pull: PullConfig | None = None
    # associations of allowed callers at once (connections not yet asking come on top), and of those from one host
    max_associations: Annotated[int, whole(1, 64)] = 8
    max_associations_per_host: Annotated[int, whole(1, 64)] = 4
    # a connection sending no A-ASSOCIATE-RQ for this long is closed
    association_request_timeout_s: Annotated[float, _seconds(0.5, 120.0)] = 5.0

    _source: str = PrivateAttr(default="<config>")

    @field_validator("allowed_callers", mode="before")
    @classmethod
    def _callers(cls, value: Any) -> Any:
        if not isinstance(value, list) or not value:
            raise expected('a non-empty list of {"ae_title", "host"} (who may send studies)')
        return value

    @field_validator("state_dir", mode="before")
    @classmethod
    def _state_dir(cls, value: Any) -> str:
        if not isinstance(value, str) or not value:
            raise expected("a folder path")
        return value

    @field_validator("device", mode="before")
    @classmethod
    def _device(cls, value: Any) -> str:
        if not isinstance(value, str) or not value:
            raise expected("cpu, cuda or cuda:N")
        return value

    @field_validator("destinations", mode="before")
    @classmethod
    def _destinations(cls, value: Any) -> Any:
        if not isinstance(value, list):
            raise expected("a list")
        return value

    @field_validator("retry_max_s", mode="before")
    @classmethod
    def _retry_max(cls, value: Any, info: ValidationInfo) -> float:
        return _in_seconds(value, info.data.get("retry_first_s", 0.01), DAY_S)

    @field_validator("max_associations_per_host")
    @classmethod
    def _per_host(cls, value: int, info: ValidationInfo) -> int:
        most = info.data.get("max_associations")
        if most is not None and value > most:
            raise expected(f"<= max_associations ({most})")
        return value

    @model_validator(mode="after")
    def _names(self) -> NodeConfig:
        for i, destination in enumerate(self.destinations):
            destination.name = destination.name or f"destination{i}"
        if len({d.name for d in self.destinations}) != len(self.destinations):
            raise PydanticCustomError("plain", "destinations: two destinations share a name")
        return self

    @property
    def source(self) -> str:
        """The file this config came from (named in errors)."""
        return self._source

    @property
    def state_path(self) -> Path:
        """``state_dir`` as a path (made absolute against the config file by :meth:`from_file`)."""
        return Path(self.state_dir)

    @property
    def max_instance_bytes(self) -> int:
        """``max_instance_mb`` in bytes."""
        return mib_to_bytes(self.max_instance_mb)

    @property
    def max_scan_bytes(self) -> int:
        """``max_scan_mb`` in bytes."""
        return mib_to_bytes(self.max_scan_mb)

    @classmethod
    def from_file(cls, path: str | Path) -> NodeConfig:
        """The config in a JSON file; a relative ``state_dir`` is relative to the file.

        Args:
            path: the JSON file.

        Returns:
            The checked config.

        Raises:
            NodeConfigError: naming the file and the field.
        """
        path = Path(path)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except OSError as error:
            raise NodeConfigError(f"{path}: cannot read the node config ({error.strerror})") from None
        except json.JSONDecodeError as error:
            raise NodeConfigError(f"{path}: not valid JSON ({error})") from None
        config = cls.from_dict(raw, source=str(path))
        if not Path(config.state_dir).is_absolute():  # relative to the config file, not the working folder
            config.state_dir = str(path.resolve().parent / config.state_dir)
        return config

    @classmethod
    def from_dict(cls, raw: Any, source: str = "<config>") -> NodeConfig:
        """The config from decoded JSON.

        Args:
            raw: the JSON object.
            source: where it came from, named in errors.

        Returns:
            The checked config.

        Raises:
            NodeConfigError: ``"{source}: {field path}: expected ..., got ..."``, the path from pydantic's error.
        """
        if not isinstance(raw, dict):
            raise NodeConfigError(f"{source}: expected a JSON object, got {type(raw).__name__}")
        try:
            config = cls.model_validate(raw)
        except ValidationError as error:
            raise NodeConfigError(*validation_message(source, error, NodeConfig)) from None
        config._source = source
        return config
