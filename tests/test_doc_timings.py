"""Durations the docs promise a newcomer name the machine and its load (issue 31, item 10).

A newcomer on a loaded 2-core machine waited 11 min for a fine-tune the docs called "40 s" and
30 min for a suite called "about 8 minutes". A figure without its machine misleads, so each
duration a newcomer plans around says the cores, and gives both a quiet and a loaded figure.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _paragraph(page: str, needle: str) -> str:
    """The blank-line-separated paragraph of ``page`` that holds ``needle``, on one line."""
    text = (REPO / page).read_text(encoding="utf-8")
    (paragraph,) = [p for p in re.split(r"\n\s*\n", text) if needle in p]
    return " ".join(paragraph.split())


def test_the_suites_duration_names_the_cores_and_a_quiet_and_a_shared_figure():
    paragraph = _paragraph("README.md", "`make test` runs the suite")
    sentence = paragraph[paragraph.index("The suite takes"):]
    assert "2 quiet CPU cores" in sentence and "shared with other jobs" in sentence, sentence


def test_the_fine_tune_recipes_durations_name_the_machine_its_load_and_cpu_time():
    paragraph = _paragraph("docs/training.md", "three runs:")
    assert "2-core machine" in paragraph and "quiet" in paragraph, paragraph
    assert "load average" in paragraph and "CPU time" in paragraph, paragraph
