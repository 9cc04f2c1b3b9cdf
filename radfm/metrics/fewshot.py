"""Zero- and few-shot prompt formats for Flamingo-style baselines (paper, "Baselines").

The paper evaluates OpenFlamingo and Med-Flamingo with the prompts of the official
Med-Flamingo repository:

zero-shot::

    You are a helpful medical assistant. Please answer the question about the given image.
    <image>Question: {question} Answer:

few-shot (k exemplars from the same dataset and task, then the query)::

    You are a helpful medical assistant. You are being provided with images, a question about
    the image and an answer. Follow the examples and answer the last question.
    <image>Question: {q1} Answer: {a1}<|endofchunk|><image>Question: {q2} Answer: {a2}<|endofchunk|>
    <image>Question: {question} Answer:

The paper prints the chunk separator as ``<-endofchunk->``; OpenFlamingo's tokenizer token is
``<|endofchunk|>``, which is what is used here (configurable). Each ``<image>`` stands for one
image of that case; cases with several images get one ``<image>`` per image, in order. Any
``<image>`` placeholders inside our instructions are removed from the question text first,
since Flamingo prompts put the images before the question.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

IMAGE = "<image>"
END_OF_CHUNK = "<|endofchunk|>"
ZERO_SHOT_HEADER = "You are a helpful medical assistant. Please answer the question about the given image."
FEW_SHOT_HEADER = ("You are a helpful medical assistant. You are being provided with images, a question about the "
                   "image and an answer. Follow the examples and answer the last question.")


@dataclass(frozen=True)
class Exemplar:
    """One solved example shown before the query: its question, answer and number of images."""

    question: str
    answer: str
    num_images: int = 1
    id: str = ""


def question_text(instruction: str) -> str:
    """An instruction with its ``<image>`` placeholders removed and whitespace collapsed."""
    return " ".join(instruction.replace(IMAGE, " ").split())


def _turn(question: str, num_images: int, answer: str | None) -> str:
    if num_images < 0:
        raise ValueError(f"num_images must be >= 0, got {num_images}")
    head = IMAGE * num_images + f"Question: {question_text(question)} Answer:"
    return head if answer is None else f"{head} {answer.strip()}"


def zero_shot_prompt(question: str, num_images: int = 1) -> str:
    """Med-Flamingo zero-shot prompt for one question about ``num_images`` images."""
    return f"{ZERO_SHOT_HEADER} {_turn(question, num_images, None)}"


def few_shot_prompt(exemplars: Sequence[Exemplar], question: str, num_images: int = 1,
                    end_of_chunk: str = END_OF_CHUNK) -> str:
    """Med-Flamingo few-shot prompt: header, each exemplar closed by ``end_of_chunk``, then the query.

    With no exemplars this is the zero-shot prompt.
    """
    if not exemplars:
        return zero_shot_prompt(question, num_images)
    shots = "".join(_turn(e.question, e.num_images, e.answer) + end_of_chunk for e in exemplars)
    return f"{FEW_SHOT_HEADER} {shots}{_turn(question, num_images, None)}"


def select_exemplars(pool: Sequence[Exemplar], k: int, *, exclude_id: str = "", seed: int = 0,
                     query_key: str = "") -> list[Exemplar]:
    """``k`` exemplars drawn without replacement from ``pool`` (never the query itself).

    The draw is seeded by ``seed`` and ``query_key`` (e.g. the query id), so each query gets
    its own, reproducible exemplars.
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    candidates = [e for e in pool if not (exclude_id and e.id == exclude_id)]
    if k > len(candidates):
        raise ValueError(f"asked for {k} exemplars but only {len(candidates)} are available in the pool")
    return random.Random(f"{seed}:{query_key}").sample(candidates, k)
