"""Series selection rules of the MONAI Deploy app: the SDK's "selections", each with the prompt for its series.

Kept apart from ``deploy_app`` so that the rules can be checked without the SDK installed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

DEFAULT_RULES = {
    "selections": [
        {"name": "ct", "conditions": {"Modality": "(?i)^CT$"},
         "prompt": "<image> Describe the findings of this CT scan."},
        {"name": "mr", "conditions": {"Modality": "(?i)^MR$"},
         "prompt": "<image> Describe the findings of this MRI scan."},
        {"name": "chest-xray", "conditions": {"Modality": "(?i)^(CR|DX)$"},
         "prompt": "<image> Describe the findings of this chest X-ray."},
    ]
}


def load_rules(path: str | os.PathLike | None) -> dict[str, Any]:
    """The selection rules (the SDK's format; each selection may add ``prompt``), checked."""
    if path is None:
        return DEFAULT_RULES
    try:
        rules = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not a readable rules JSON file ({error})") from None
    selections = rules.get("selections") if isinstance(rules, dict) else None
    if not isinstance(selections, list) or not selections:
        raise ValueError(f"{path}: expected {{\"selections\": [{{\"name\", \"conditions\", \"prompt\"}}, ...]}}")
    for i, selection in enumerate(selections):
        if not isinstance(selection, dict) or not isinstance(selection.get("conditions"), dict):
            raise ValueError(f"{path}: selections[{i}]: expected an object with \"conditions\"")
        prompt = selection.get("prompt")
        if prompt is not None and (not isinstance(prompt, str) or prompt.count("<image>") > 1):
            raise ValueError(f"{path}: selections[{i}].prompt: expected a question with at most one <image>")
    return rules
