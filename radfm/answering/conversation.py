"""A conversation -> one RadFM prompt (the chat page and the OpenAI routes).

Previous turns are fed back as plain text before the last question (RadFM has no chat
template; it was trained on "instruction -> answer"), and every scan keeps its ``<image>``
position.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

PLACEHOLDER = "<image>"


@dataclass
class Turn:
    """One message: ``role`` is user, assistant or system; ``text`` holds one ``<image>`` per scan."""

    role: str
    text: str
    scans: list[Any] = field(default_factory=list)  # whatever stands for a scan (ids, saved files)


def conversation_prompt(turns: Sequence[Turn]) -> tuple[str, list[Any]]:
    """``(prompt, scans in <image> order)`` for a conversation ending with the user's question.

    One user turn alone gives exactly its text (so answers equal ``radfm generate``'s);
    earlier turns come first, each on its own line, questions and answers as written.
    """
    if not turns or turns[-1].role != "user":
        raise ValueError("the conversation must end with a user message")
    lines, scans = [], []
    for turn in turns:
        if turn.text.count(PLACEHOLDER) != len(turn.scans):
            raise ValueError(f"a {turn.role} message has {turn.text.count(PLACEHOLDER)} {PLACEHOLDER} "
                             f"placeholder(s) for {len(turn.scans)} scan(s)")
        if turn.text.strip():
            lines.append(turn.text.strip())
        scans.extend(turn.scans)
    prompt = "\n".join(lines)
    if not prompt.strip():
        raise ValueError("the conversation has no text")
    return prompt, scans
