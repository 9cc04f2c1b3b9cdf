"""Which series of a study the model answers about, and with which prompt (``rules`` in the node config)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from radfm.node.node_config import SeriesRule  # interim: moves here with the wt-rules merge



def select_series(series: Sequence[dict[str, Any]], rules: Sequence[SeriesRule]) -> list[tuple[dict[str, Any], SeriesRule]]:
    """``[(series, rule)]``: for each rule, the matching series with the most instances (one per rule).

    ``series`` items hold ``series_uid``, ``modality``, ``description`` and ``instances``. A
    series matches a rule when its modality is listed, its description matches the rule's
    regular expression (case-insensitive; any when none) and it has ``min_instances``.
    A series is used by the first rule it matches only.
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
