"""Fixtures of the vLLM tests: one engine per model folder for the whole session (start-up paid once).

These tests run in the side environment (``make install-vllm``; ``.venv-vllm/bin/python -m pytest
tests/vllm``; ``make test`` runs them there). Under an interpreter without vLLM (the main ``.venv``)
they are not collected; in CI (``CI=true``) a missing vLLM is an error, never a skip.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path

import pytest

try:
    import vllm  # noqa: F401
except ImportError as error:
    if os.environ.get("CI", "").lower() == "true":
        raise RuntimeError("tests/vllm need vLLM: run them with the side environment's interpreter "
                           "(make install-vllm; .venv-vllm/bin/python -m pytest tests/vllm)") from error
    warnings.warn("vLLM is not installed here: tests/vllm not collected (make install-vllm runs them)", stacklevel=1)
    collect_ignore_glob = ["test_*.py"]

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB of KV cache: the test models need a few MiB

DATA_FILES = Path(__file__).resolve().parents[1] / "data_files"
REPO = Path(__file__).resolve().parents[2]
DEMO_MODEL = REPO / "bundles" / "radfm" / "models" / "demo"
SAMPLES = REPO / "bundles" / "radfm" / "sample_data"
# the official fixture's 3D cases are 128x128x16 volumes: the converted folder records that 3D grid
OFFICIAL_GRID = {"size_3d": (128, 128), "max_depth": 16}


def start_engine(model_dir: Path):
    """A vLLM engine on ``model_dir`` (fp32, eager: the parity settings); prints its start time."""
    from vllm import LLM

    started = time.perf_counter()
    llm = LLM(model=str(model_dir), dtype="float32", enforce_eager=True, max_model_len=512, seed=0,
              limit_mm_per_prompt={"image": 4})
    print(f"\nvLLM engine on {model_dir.name}: started in {time.perf_counter() - started:.1f} s")
    return llm


@pytest.fixture(scope="session")
def demo_model_dir() -> Path:
    """The demo model folder shipped in the RadFM bundle."""
    return DEMO_MODEL


@pytest.fixture(scope="session")
def sample_scans() -> Path:
    """The bundle's phantom scans (an X-ray PNG, a CT and an MRI NIfTI)."""
    return SAMPLES


def stop_engine(llm) -> None:
    """End the engine's core process now rather than at interpreter exit."""
    core = getattr(llm.llm_engine, "engine_core", None)
    if core is not None and hasattr(core, "shutdown"):
        core.shutdown()


@pytest.fixture(scope="session")
def official_folder(tmp_path_factory) -> Path:
    """The official-layout fixture converted with ``radfm convert`` (+ a tokenizer with V = 1000)."""
    from radfm.cli import main
    from radfm.model.loading import tiny_tokenizer
    from radfm.model.processing import RadFMImageProcessor

    root = tmp_path_factory.mktemp("official")
    fixture = json.loads((DATA_FILES / "official_tiny" / "fixture.json").read_text())
    (root / "llm_config.json").write_text(json.dumps(fixture["llm_config"]))
    tiny_tokenizer(base_vocab_size=fixture["llm_config"]["vocab_size"]).save_pretrained(root / "tokenizer")
    out = root / "model"
    main(["convert", str(DATA_FILES / "official_tiny" / "pytorch_model.bin"), "--llm-config",
          str(root / "llm_config.json"), "--tokenizer", str(root / "tokenizer"), "--output", str(out)])
    grid = RadFMImageProcessor.from_model_dir(out).grid
    RadFMImageProcessor(**{**grid, **OFFICIAL_GRID}).save_grid(out)
    return out


@pytest.fixture(scope="session")
def demo_engine():
    """One vLLM engine on the demo model for the session."""
    llm = start_engine(DEMO_MODEL)
    yield llm
    stop_engine(llm)


@pytest.fixture(scope="session")
def official_engine(official_folder):
    """One vLLM engine on the converted official fixture for the session."""
    llm = start_engine(official_folder)
    yield llm
    stop_engine(llm)
