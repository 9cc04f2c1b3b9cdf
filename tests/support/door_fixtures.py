"""Fixtures for the doors and the HTTP service: pydicom's CT series, small NIfTI/PNG files, a tiny answerer and server."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pydicom
import pytest


@pytest.fixture(scope="session")
def ct_series_dir() -> Path:
    """pydicom's 4-slice CT series (16×16 slices, one study, one series)."""
    folder = Path(pydicom.data.get_testdata_file("CT_small.dcm", download=False)).parent / "dicomdirtests/77654033/CT2"
    assert len(list(folder.iterdir())) == 4
    return folder


@pytest.fixture(scope="session")
def small_scans(tmp_path_factory) -> dict[str, Path]:
    """A random 3D NIfTI volume and a random 2D PNG."""
    import nibabel as nib
    from PIL import Image

    folder = tmp_path_factory.mktemp("scans")
    rng = np.random.default_rng(0)
    nifti = folder / "brain.nii.gz"
    nib.save(nib.Nifti1Image(rng.random((20, 24, 12), dtype=np.float32), np.diag([1.0, 1.0, 2.0, 1.0])), nifti)
    png = folder / "chest.png"
    Image.fromarray((rng.random((40, 50)) * 255).astype(np.uint8)).save(png)
    return {"nifti": nifti, "png": png}


@pytest.fixture(scope="session")
def tiny_answerer(tiny_model_dir):
    """The tiny model on the engine the run selects (``RADFM_ENGINE=vllm``: one vLLM engine for the session)."""
    from radfm.answering.engines import load_answerer

    answerer = load_answerer(tiny_model_dir, device="cpu", dtype="float32")
    if os.environ.get("RADFM_ENGINE") == "vllm":  # the run asked for vLLM: never the model thread instead
        assert type(answerer).__name__ == "VLLMAnswerer", type(answerer)
    yield answerer
    if hasattr(answerer, "close_shared"):
        answerer.close_shared()  # the vLLM engines of the session (doors load the same one), while logging still works


class ConcurrencyProbe:
    """Wraps an answerer and records how many model calls ever ran at the same time."""

    def __init__(self, inner) -> None:
        import threading

        self.inner, self.identity, self.max_images = inner, inner.identity, inner.max_images
        self.active = self.peak = 0
        self.lock = threading.Lock()

    def prepare(self, paths):
        return self.inner.prepare(paths)

    def answer(self, prompt, images, options):
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        try:
            return self.inner.answer(prompt, images, options)
        finally:
            with self.lock:
                self.active -= 1


@pytest.fixture(scope="session")
def probe(tiny_answerer):
    return ConcurrencyProbe(tiny_answerer)


@pytest.fixture(scope="session")
def served(tiny_answerer, probe):
    """What the service fixtures serve: the probe around the model thread, or the vLLM engine itself
    (its own continuous batching: a probe would put it behind the one model thread)."""
    return tiny_answerer if hasattr(tiny_answerer, "start_engine") else probe


@pytest.fixture(scope="session")
def server(served):
    """The service with the tiny model on a free loopback port (small limits to test them)."""
    from radfm.answering.limits import Limits
    from radfm.http.service import BackgroundServer, create_app

    limits = Limits(max_request_bytes=2 * 1024 * 1024, max_images=3, max_new_tokens=16)
    with BackgroundServer(create_app(served, limits)) as running:
        yield running
