"""One call to get a ready model, its preprocessing and its tokenizer."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import torch

from radfm.model.config import RadFMConfig
from radfm.model.radfm import RadFM

# A few sentences so the "tiny" preset has a working tokenizer without any download.
_TINY_CORPUS = [
    "Findings: a large bright lesion in the left upper lung. Impression: pneumothorax.",
    "Is this image captured by CT? yes no MRI X-ray ultrasound mammography PET",
    "Does the patient have pneumonia? The lesion is small and dark, right lower region.",
    "Please caption this scan with findings. No abnormality detected. Normal study.",
    "What is the modality of the input scan? Please make diagnosis based on the images.",
    "Determine the disease starting with the radiological features and the ultimate diagnosis.",
]


def tiny_tokenizer(max_images: int = 10):
    """A small BPE tokenizer (trained here, deterministic) for the ``tiny`` preset."""
    from radfm.model.tokenizer import train_tokenizer

    return train_tokenizer(_TINY_CORPUS * 4, vocab_size=400, max_images=max_images)


def _preprocess_with(defaults: dict[str, Any]) -> Callable[..., Any]:
    def preprocess(path, **options):
        """``radfm.transforms.preprocess_scan(path, **options)`` → ``[3, H, W, D]`` in [0, 1]."""
        from radfm.transforms import preprocess_scan  # lazy: keeps model import light

        return preprocess_scan(path, **{**defaults, **options})

    return preprocess


def create_model_and_transforms(
    model_dir_or_preset: str | os.PathLike,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | str | None = None,
    **preprocess_options: Any,
):
    """``(model, preprocess, tokenizer)`` from a ``save_pretrained`` directory or the ``"tiny"`` preset.

    ``"tiny"`` gives a randomly initialised small model with a small trained tokenizer (tests,
    demos). ``preprocess(path, **options)`` is ``radfm.transforms.preprocess_scan`` with
    ``preprocess_options`` as defaults. The published weights must first be converted with
    ``radfm convert`` (or loaded with ``RadFM.from_official``).
    """
    from radfm.model.checkpoint import parse_dtype

    dtype = parse_dtype(dtype)
    name = os.fspath(model_dir_or_preset)
    path = Path(name)
    if name == "tiny" and not path.exists():
        tokenizer = tiny_tokenizer()
        base = tokenizer.convert_tokens_to_ids("<image>")
        model = RadFM(RadFMConfig.preset("tiny", vocab_size=base))
        model.tokenizer = tokenizer
        model = model.to(device=device, dtype=dtype) if dtype is not None else model.to(device)
    elif path.is_dir():
        model = RadFM.from_pretrained(path, device=device, dtype=dtype)
        tokenizer = model.tokenizer
        if tokenizer is None:
            raise ValueError(f"model directory {path} has no tokenizer files; save the model with a tokenizer")
    elif path.is_file() and path.suffix == ".bin":
        raise ValueError(
            f"{path} looks like the published checkpoint; convert it first: "
            "radfm convert OFFICIAL_BIN --llm-config CONFIG_JSON --output DIR"
        )
    elif name == "radfm-14b":
        raise ValueError("the radfm-14b preset has no weights here; convert the published checkpoint with `radfm convert`")
    else:
        raise ValueError(f"{name!r} is neither a model directory nor a preset ('tiny')")
    return model.eval(), _preprocess_with(preprocess_options), tokenizer
