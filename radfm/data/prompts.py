"""Prompt banks: paraphrased instructions per task, shipped as JSON under ``prompts/``.

Each bank file is ``{"task": ..., "fields": [...], "prompts": [...]}``. Templates use
``{images}`` (replaced by the image placeholders) and task fields such as ``{modality}``,
``{disease}`` or ``{question}``. Sampling takes an explicit ``random.Random`` so that
manifests built with the same seed are identical.
"""

from __future__ import annotations

import json
import random
from functools import cache
from pathlib import Path

from radfm.model.tokenizer import IMAGE_PLACEHOLDER

PROMPT_DIR = Path(__file__).resolve().parent / "prompts"


@cache
def load_bank(task: str) -> tuple[str, ...]:
    """The paraphrases for ``task`` (a manifest task name)."""
    path = PROMPT_DIR / f"{task}.json"
    if not path.is_file():
        known = sorted(p.stem for p in PROMPT_DIR.glob("*.json"))
        raise KeyError(f"no prompt bank for task {task!r}; available: {known}")
    data = json.loads(path.read_text(encoding="utf-8"))
    prompts = data.get("prompts")
    if not isinstance(prompts, list) or not all(isinstance(p, str) and "{images}" in p for p in prompts):
        raise ValueError(f"{path}: 'prompts' must be a list of strings that each contain '{{images}}'")
    return tuple(prompts)


def image_placeholders(num_images: int) -> str:
    """``"<image>"`` repeated ``num_images`` times, space separated (the paper's layout)."""
    return " ".join([IMAGE_PLACEHOLDER] * num_images)


def render(template: str, num_images: int, **fields: str) -> str:
    """Fill one template; missing fields raise ``KeyError`` naming the field."""
    try:
        return template.format(images=image_placeholders(num_images), **fields)
    except KeyError as err:
        raise KeyError(f"prompt template {template!r} needs field {err.args[0]!r}") from None


def sample_prompt(task: str, rng: random.Random, num_images: int, **fields: str) -> str:
    """A seeded draw from the bank of ``task``, filled with the placeholders and fields."""
    bank = load_bank(task)
    return render(bank[rng.randrange(len(bank))], num_images, **fields)
