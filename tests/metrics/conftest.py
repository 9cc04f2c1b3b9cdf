"""Fixtures for the metrics tests: one loaded BERTScore model, random text pairs."""

from __future__ import annotations

import random

import pytest

WORDS = ("lung nodule pleural effusion left right upper lower lobe mass liver normal no yes the a of with "
         "consolidation opacity fracture heart enlarged clear").split()


@pytest.fixture(scope="session")
def bertscore_f1():
    from radfm.metrics.bertscore import BertScoreF1

    return BertScoreF1()


@pytest.fixture()
def random_pairs() -> list[tuple[str, str]]:
    """60 seeded (prediction, reference) pairs of 0-12 words over a small radiology vocabulary."""
    rng = random.Random(1234)
    return [(" ".join(rng.choices(WORDS, k=rng.randint(0, 12))), " ".join(rng.choices(WORDS, k=rng.randint(1, 12))))
            for _ in range(60)]
