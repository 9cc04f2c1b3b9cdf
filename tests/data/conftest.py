"""Fixtures for the data tests: the hand-written dataset layouts and a small phantom set."""

from __future__ import annotations

from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def phantom_dir(tmp_path_factory) -> Path:
    """24 phantom cases, seed 5 (shared by several tests; read-only)."""
    from radfm.data.phantoms import make_phantoms

    out = tmp_path_factory.mktemp("phantoms") / "set"
    make_phantoms(out, n=24, seed=5, progress=False)
    return out


@pytest.fixture(scope="session")
def base_vocab_size(tiny_tokenizer) -> int:
    return tiny_tokenizer.convert_tokens_to_ids("<image>")
