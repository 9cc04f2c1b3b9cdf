"""One call to get a ready model, its preprocessing and its tokenizer."""

from __future__ import annotations

import functools
import json
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


PREPROCESS_FILE = "preprocess.json"
# Options of preprocess_scan a model folder may record (series_uid is per scan, not per model).
MODEL_PREPROCESS_KEYS = ("size_2d", "size_3d", "max_depth", "window", "nonfinite", "axcodes", "contiguous")
# "loader" only records provenance: the one preprocessing every model runs through.
KNOWN_LOADERS = ("radfm.transforms.preprocess_scan",)


def preprocess_options(model_dir: str | os.PathLike) -> dict[str, Any]:
    """The ``preprocess_scan`` keyword options recorded in ``model_dir/preprocess.json`` ({} if none).

    Keys: ``size_2d`` [H, W], ``size_3d`` [H, W], ``max_depth`` (the grid the model was trained
    at), optionally ``window``, ``nonfinite``, ``axcodes``, ``contiguous``, and ``loader`` (one of
    ``KNOWN_LOADERS``, dropped). Unknown keys or a bad grid raise ``ValueError`` naming the file.
    """
    path = Path(os.fspath(model_dir)) / PREPROCESS_FILE
    if not path.is_file():
        return {}
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not readable JSON ({error})") from error
    if not isinstance(spec, dict):
        raise ValueError(f"{path}: expected a JSON object of preprocess_scan options, got {type(spec).__name__}")
    options = dict(spec)
    loader = options.pop("loader", KNOWN_LOADERS[0])
    if loader not in KNOWN_LOADERS:
        raise ValueError(f"{path}: unknown loader {loader!r}; expected one of {list(KNOWN_LOADERS)}")
    unknown = sorted(set(options) - set(MODEL_PREPROCESS_KEYS))
    if unknown:
        raise ValueError(f"{path}: unknown preprocessing option(s) {unknown}; expected some of "
                         f"{list(MODEL_PREPROCESS_KEYS)} (and 'loader')")
    from radfm.transforms.spatial import MAX_DEPTH, SIZE_2D, SIZE_3D, check_grid  # lazy: light model import

    try:  # fail at load time, naming the file, rather than on the first scan
        grid = check_grid(options.get("size_2d", SIZE_2D), options.get("size_3d", SIZE_3D),
                          options.get("max_depth", MAX_DEPTH))
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    for key, value in zip(("size_2d", "size_3d", "max_depth"), grid):
        if key in options:
            options[key] = value  # JSON lists -> tuples
    if isinstance(options.get("window"), list):
        options["window"] = tuple(options["window"])  # (low, high) HU
    return options


def model_preprocess(model_dir: str | os.PathLike | None = None, **overrides: Any) -> Callable[..., Any]:
    """``functools.partial(preprocess_scan, **preprocess_options(model_dir), **overrides)``: path -> [3, H, W, D]."""
    from radfm.transforms import preprocess_scan  # lazy: keeps model import light

    recorded = preprocess_options(model_dir) if model_dir is not None else {}
    return functools.partial(preprocess_scan, **{**recorded, **overrides})


def create_model_and_transforms(
    model_dir_or_preset: str | os.PathLike,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | str | None = None,
    **preprocess_overrides: Any,
):
    """``(model, preprocess, tokenizer)`` from a ``save_pretrained`` directory or the ``"tiny"`` preset.

    ``"tiny"`` gives a randomly initialised small model with a small trained tokenizer (tests,
    demos). ``preprocess(path, **options)`` is ``functools.partial(radfm.transforms.preprocess_scan,
    **recorded, **preprocess_overrides)``, where ``recorded`` are the options in the model folder's
    ``preprocess.json`` (its grid, e.g. a small demo model's 64² x 4 / 64² x D' <= 8; see
    :func:`preprocess_options`); call-time options override both. The published weights must first be converted with
    ``radfm convert`` (or loaded with ``RadFM.from_official``).
    """
    from radfm.model.checkpoint import parse_dtype

    dtype = parse_dtype(dtype)
    from radfm.utils.cpu import warn_slow_cpu_bf16

    warn_slow_cpu_bf16(dtype, device)  # bf16 on a CPU without native bf16: warned once per process
    name = os.fspath(model_dir_or_preset)
    path = Path(name)
    recorded = preprocess_options(path) if path.is_dir() else {}  # a bad file fails before the weights load
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
    from radfm.transforms import preprocess_scan  # lazy: keeps model import light

    return model.eval(), functools.partial(preprocess_scan, **{**recorded, **preprocess_overrides}), tokenizer
