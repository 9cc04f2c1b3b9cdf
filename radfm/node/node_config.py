"""The DICOM node's configuration: one JSON file, every field checked before the node starts.

Example (``docs/hospital.md`` explains each field)::

    {
      "ae_title": "RADFM", "host": "127.0.0.1", "port": 11112,
      "allowed_callers": [{"ae_title": "ORTHANC", "host": "127.0.0.1"}],
      "state_dir": "/var/lib/radfm-node",
      "stable_after_s": 10, "max_studies_in_memory": 1,
      "model": null, "rules": [...],
      "destinations": [{"name": "pacs", "kind": "dimse", "ae_title": "ORTHANC", "host": "127.0.0.1", "port": 4242}]
    }
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, fields
from difflib import get_close_matches
from pathlib import Path
from typing import Any

MiB = 1024 * 1024
_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # DICOM AE: 16 printable chars, no backslash


class NodeConfigError(ValueError):
    """The config file is wrong; the message names the file and the field."""


def _fail(source: str, name: str, expected: str, value: Any) -> NodeConfigError:
    return NodeConfigError(f"{source}: {name}: expected {expected}, got {value!r}")


def _check_keys(source: str, where: str, given: dict, known: set[str]) -> None:
    for key in given:
        if key not in known:
            near = get_close_matches(key, sorted(known), n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else f" (known: {', '.join(sorted(known))})"
            raise NodeConfigError(f"{source}: {where}{key}: unknown field{hint}")


def _ae(source: str, name: str, value: Any) -> str:
    if not isinstance(value, str) or not _AE_TITLE.match(value) or not value.strip():
        raise _fail(source, name, "an AE title of 1-16 printable characters (no backslash)", value)
    return value.strip()


def _int(source: str, name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _fail(source, name, f"a whole number >= {low} and <= {high}", value)
    return value


def _seconds(source: str, name: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (low <= value <= high):
        raise _fail(source, name, f"a number of seconds >= {low:g} and <= {high:g}", value)
    return float(value)


DAY_S = 86400.0
# Upper bounds: a value past these is a typo or an attack on the node's memory/disk, never a setting
# (e.g. max_studies_in_memory 1e9 let the node grow past 2.5 GB). (low, high) per whole-number field.
INT_BOUNDS = {
    "max_studies_in_memory": (1, 64),
    "max_instance_mb": (1, 4096),  # one DICOM instance over the network
    "max_scan_mb": (1, 65536),  # decoded size of one series
    "max_instances_per_study": (1, 100_000),
    "max_new_tokens": (1, 8192),
    "max_attempts": (1, 1000),
    "max_job_attempts": (1, 100),
    "max_associations": (1, 64),
    "max_associations_per_host": (1, 64),
}


def _host(source: str, name: str, value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > 255 or any(c.isspace() for c in value):
        raise _fail(source, name, "a host name or IP address", value)
    return value


@dataclass
class Caller:
    """A calling AE allowed to send studies (and C-ECHO): its title and the host it connects from."""

    ae_title: str
    host: str


@dataclass
class Destination:
    """Where reports go: ``kind`` ``dimse`` (C-STORE to ae_title@host:port) or ``stow`` (STOW-RS to url)."""

    name: str
    kind: str
    ae_title: str | None = None
    host: str | None = None
    port: int | None = None
    url: str | None = None


@dataclass
class SeriesRule:
    """Which series to answer about and what to ask: the first rule a series matches applies.

    ``modalities``: e.g. ``["CT"]``; ``description``: a regular expression searched (case-insensitive)
    in the SeriesDescription, or ``null`` for any; ``min_instances``: fewer instances are skipped
    (a scout); ``prompt``: the question, with ``<image>`` where the series goes (or none: it goes first).
    """

    name: str
    modalities: list[str]
    prompt: str
    description: str | None = None
    min_instances: int = 1


DEFAULT_RULES = [
    SeriesRule("ct", ["CT"], "<image> Describe the findings of this CT scan.", min_instances=4),
    SeriesRule("mr", ["MR"], "<image> Describe the findings of this MRI scan.", min_instances=4),
    SeriesRule("chest-xray", ["CR", "DX"], "<image> Describe the findings of this chest X-ray."),
]


@dataclass
class PullConfig:
    """DICOMweb pull mode: ask ``url`` (QIDO-RS) every ``every_s`` for studies matching ``filter``.

    ``timeout_s``: one poll's deadline, the search and every study it fetches included.
    """

    url: str
    filter: dict[str, str] = field(default_factory=dict)
    every_s: float = 30.0
    timeout_s: float = 600.0


@dataclass
class NodeConfig:
    ae_title: str = "RADFM"
    host: str = "127.0.0.1"
    port: int = 11112
    allowed_callers: list[Caller] = field(default_factory=list)
    state_dir: str = "radfm-node"
    stable_after_s: float = 10.0  # no new instance of a study for this long: the study is complete
    max_studies_in_memory: int = 1  # jobs read and answered at once (each holds one study's images)
    max_instance_mb: int = 256  # one received instance, as received
    max_scan_mb: int = 2048  # decoded size of one series, checked from its headers before reading
    max_instances_per_study: int = 5000
    model: str | None = None  # a model folder; null: the demo model
    device: str = "cpu"
    engine: str = "transformers"  # or "vllm": the node's series batch continuously (docs/vllm.md)
    max_new_tokens: int = 128
    generation_timeout_s: float = 1800.0  # one series' generation; a full-size model on CPU takes minutes
    rules: list[SeriesRule] = field(default_factory=lambda: list(DEFAULT_RULES))
    destinations: list[Destination] = field(default_factory=list)
    max_attempts: int = 8  # delivery tries per destination before the job is marked failed
    retry_first_s: float = 5.0  # first wait between tries; doubles each time
    retry_max_s: float = 600.0
    max_job_attempts: int = 3  # a job interrupted (crash) or failing this often is marked failed
    institution_name: str | None = None
    pull: PullConfig | None = None
    max_associations: int = 8  # associations of allowed callers at once (connections not yet asking come on top)
    max_associations_per_host: int = 4  # of those, from one host
    association_request_timeout_s: float = 5.0  # a connection sending no A-ASSOCIATE-RQ for this long is closed
    source: str = field(default="<config>", repr=False)

    @property
    def state_path(self) -> Path:
        return Path(self.state_dir)

    @classmethod
    def from_file(cls, path: str | Path) -> NodeConfig:
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
        if not isinstance(raw, dict):
            raise NodeConfigError(f"{source}: expected a JSON object, got {type(raw).__name__}")
        known = {f.name for f in fields(cls)} - {"source"}
        _check_keys(source, "", raw, known)
        c = cls(source=source)
        s = source
        c.ae_title = _ae(s, "ae_title", raw.get("ae_title", c.ae_title))
        c.host = _host(s, "host", raw.get("host", c.host))
        c.port = _int(s, "port", raw.get("port", c.port), 0, 65535)
        callers = raw.get("allowed_callers", [])
        if not isinstance(callers, list) or not callers:
            raise _fail(s, "allowed_callers", "a non-empty list of {\"ae_title\", \"host\"} (who may send studies)",
                        callers)
        for i, _, item in _objects(s, "allowed_callers", callers, Caller, "", False):
            c.allowed_callers.append(Caller(_ae(s, f"allowed_callers[{i}].ae_title", item.get("ae_title")),
                                            _host(s, f"allowed_callers[{i}].host", item.get("host"))))
        state = raw.get("state_dir", c.state_dir)
        if not isinstance(state, str) or not state:
            raise _fail(s, "state_dir", "a folder path", state)
        c.state_dir = state
        c.stable_after_s = _seconds(s, "stable_after_s", raw.get("stable_after_s", c.stable_after_s), 0.1, DAY_S)
        for name, (low, high) in INT_BOUNDS.items():
            setattr(c, name, _int(s, name, raw.get(name, getattr(c, name)), low, high))
        if c.max_associations_per_host > c.max_associations:
            raise _fail(s, "max_associations_per_host", f"<= max_associations ({c.max_associations})",
                        c.max_associations_per_host)
        c.generation_timeout_s = _seconds(s, "generation_timeout_s",
                                          raw.get("generation_timeout_s", c.generation_timeout_s), 1.0, DAY_S)
        c.retry_first_s = _seconds(s, "retry_first_s", raw.get("retry_first_s", c.retry_first_s), 0.01, 3600.0)
        c.retry_max_s = _seconds(s, "retry_max_s", raw.get("retry_max_s", c.retry_max_s), c.retry_first_s, DAY_S)
        c.association_request_timeout_s = _seconds(
            s, "association_request_timeout_s",
            raw.get("association_request_timeout_s", c.association_request_timeout_s), 0.5, 120.0)
        for name in ("model", "institution_name"):
            value = raw.get(name)
            if value is not None and (not isinstance(value, str) or not value):
                raise _fail(s, name, "a string or null", value)
            setattr(c, name, value)
        device = raw.get("device", c.device)
        if not isinstance(device, str) or not device:
            raise _fail(s, "device", "cpu, cuda or cuda:N", device)
        c.device = device
        engine = raw.get("engine", c.engine)
        if engine not in ("transformers", "vllm"):
            raise _fail(s, "engine", '"transformers" or "vllm"', engine)
        c.engine = engine
        if "rules" in raw:
            c.rules = _rules(s, raw["rules"])
        c.destinations = _destinations(s, raw.get("destinations", []))
        if raw.get("pull") is not None:
            c.pull = _pull(s, raw["pull"])
        return c


def _objects(s: str, name: str, raw: Any, kind: type, what: str, non_empty: bool):
    """``(i, "name[i]", item)`` for a list of objects with ``kind``'s fields (unknown keys refused)."""
    if not isinstance(raw, list) or (non_empty and not raw):
        raise _fail(s, name, what, raw)
    for i, item in enumerate(raw):
        where = f"{name}[{i}]"
        if not isinstance(item, dict):
            raise _fail(s, where, "an object", item)
        _check_keys(s, f"{where}.", item, {f.name for f in fields(kind)})
        yield i, where, item


def _rules(s: str, raw: Any) -> list[SeriesRule]:
    rules = []
    for i, where, item in _objects(s, "rules", raw, SeriesRule, "a non-empty list of series rules", True):
        name = item.get("name", f"rule{i}")
        modalities = item.get("modalities")
        if not isinstance(modalities, list) or not modalities or not all(
                isinstance(m, str) and re.fullmatch(r"[A-Z]{2,16}", m) for m in modalities):
            raise _fail(s, f"{where}.modalities", 'a list of DICOM modality codes such as ["CT"]', modalities)
        prompt = item.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip() or prompt.count("<image>") > 1:
            raise _fail(s, f"{where}.prompt", "a question with at most one <image>", prompt)
        description = item.get("description")
        if description is not None:
            try:
                re.compile(description)
            except (re.error, TypeError) as error:
                raise _fail(s, f"{where}.description", f"a regular expression ({error})", description) from None
        rules.append(SeriesRule(str(name), list(modalities), prompt, description,
                                _int(s, f"{where}.min_instances", item.get("min_instances", 1), 1,
                                     INT_BOUNDS["max_instances_per_study"][1])))
    return rules


def _destinations(s: str, raw: Any) -> list[Destination]:
    found = []
    for i, where, item in _objects(s, "destinations", raw, Destination, "a list", False):
        kind = item.get("kind")
        name = item.get("name", f"destination{i}")
        if not isinstance(name, str) or not re.fullmatch(r"[\w.-]{1,64}", name):
            raise _fail(s, f"{where}.name", "a short name of letters, digits, ._-", name)
        if kind == "dimse":
            found.append(Destination(name, kind, _ae(s, f"{where}.ae_title", item.get("ae_title")),
                                     _host(s, f"{where}.host", item.get("host")),
                                     _int(s, f"{where}.port", item.get("port"), 1, 65535)))
        elif kind == "stow":
            url = item.get("url")
            if not isinstance(url, str) or not re.match(r"https?://", url):
                raise _fail(s, f"{where}.url", "the DICOMweb root, http(s)://HOST:PORT/dicom-web", url)
            found.append(Destination(name, kind, url=url.rstrip("/")))
        else:
            raise _fail(s, f"{where}.kind", '"dimse" (C-STORE) or "stow" (STOW-RS)', kind)
    if len({d.name for d in found}) != len(found):
        raise NodeConfigError(f"{s}: destinations: two destinations share a name")
    return found


def _pull(s: str, raw: Any) -> PullConfig:
    if not isinstance(raw, dict):
        raise _fail(s, "pull", "an object", raw)
    _check_keys(s, "pull.", raw, {f.name for f in fields(PullConfig)})
    url = raw.get("url")
    if not isinstance(url, str) or not re.match(r"https?://", url):
        raise _fail(s, "pull.url", "the DICOMweb root, http(s)://HOST:PORT/dicom-web", url)
    query = raw.get("filter", {})
    if not isinstance(query, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in query.items()):
        raise _fail(s, "pull.filter", 'QIDO-RS study filters, e.g. {"ModalitiesInStudy": "CT"}', query)
    timeout = _seconds(s, "pull.timeout_s", raw.get("timeout_s", 600.0), 1.0, DAY_S)  # a poll is a request, not a day's work
    return PullConfig(url.rstrip("/"), dict(query), _seconds(s, "pull.every_s", raw.get("every_s", 30.0), 0.1, DAY_S),
                      timeout)
