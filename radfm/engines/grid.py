"""The image grid (2D plane size, 3D plane size, max depth): one config entry, saved with the model.

A bundle config holds the grid as one entry, ``image_grid = {"size_2d": [H, W], "size_3d": [H, W],
"max_depth": D}``; the preprocessing reads its sizes from there, training writes it beside the
weights (the processor's ``processor_config.json``, see :mod:`radfm.model.processing`) and inference
reads it back. A model
given scans at another grid raises :class:`GridMismatchError` naming both grids instead of
silently answering worse (the demo model, trained at 128², answers "ultrasound" for X-rays at 512²).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

GRID_KEYS = ("size_2d", "size_3d", "max_depth")


class GridMismatchError(ValueError):
    """Scans (or a config's ``image_grid``) at a grid the model was not trained at."""


def standard_grid() -> dict[str, Any]:
    """The paper's grid: 2D 512×512 (×4 slices), 3D 256×256×D with D ≤ 64."""
    from radfm.transforms.spatial import MAX_DEPTH, SIZE_2D, SIZE_3D

    return {"size_2d": list(SIZE_2D), "size_3d": list(SIZE_3D), "max_depth": int(MAX_DEPTH)}


def as_grid(grid: Mapping[str, Any] | None, source: str = "image_grid") -> dict[str, Any]:
    """A validated grid dict (missing keys take the standard values); ``ValueError`` naming ``source``."""
    from radfm.transforms.spatial import check_grid

    if grid is None:
        return standard_grid()
    if not isinstance(grid, Mapping):
        raise ValueError(f"{source}: expected a mapping with keys {list(GRID_KEYS)}, got {type(grid).__name__}")
    unknown = sorted(set(grid) - set(GRID_KEYS))
    if unknown:
        raise ValueError(f"{source}: unknown key(s) {unknown}; expected some of {list(GRID_KEYS)}")
    values = {**standard_grid(), **dict(grid)}
    try:
        size_2d, size_3d, max_depth = check_grid(values["size_2d"], values["size_3d"], values["max_depth"])
    except ValueError as error:
        raise ValueError(f"{source}: {error}") from None
    return {"size_2d": list(size_2d), "size_3d": list(size_3d), "max_depth": max_depth}


def describe_grid(grid: Mapping[str, Any]) -> str:
    """``2D 128x128, 3D 128x128 (depth <= 8)``."""
    grid = as_grid(grid)
    return (f"2D {grid['size_2d'][0]}x{grid['size_2d'][1]}, 3D {grid['size_3d'][0]}x{grid['size_3d'][1]} "
            f"(depth <= {grid['max_depth']})")


def saved_grid(model_dir: str | os.PathLike | None) -> dict[str, Any]:
    """The grid a model folder records (its processor; ``preprocess.json`` for the classification
    bundle), the standard grid when it records none."""
    if model_dir is None:
        return standard_grid()
    from radfm.model.loading import preprocess_options

    options = preprocess_options(model_dir)  # validates the file, naming it on errors
    return as_grid({k: options[k] for k in GRID_KEYS if k in options}, source=f"the grid recorded in {model_dir}")


def model_grid(model: str | os.PathLike | None) -> dict[str, Any]:
    """The grid to train ``model`` at: a saved model folder's own grid; a preset or config file: the standard one."""
    if model is not None and Path(os.fspath(model)).is_dir():
        return saved_grid(model)
    return standard_grid()


def check_model_grid(model: str | os.PathLike | None, image_grid: Mapping[str, Any] | None) -> None:
    """For a saved model folder: ``GridMismatchError`` unless ``image_grid`` is the grid it was trained at."""
    if image_grid is not None and model is not None and Path(os.fspath(model)).is_dir():
        check_same_grid(saved_grid(model), image_grid, model=f"the model in {os.fspath(model)}")


def save_grid(model_dir: str | os.PathLike, grid: Mapping[str, Any]) -> Path:
    """Record ``grid`` with a saved model: in its processor (``processor_config.json``) for a RadFM
    model folder, else in ``preprocess.json`` (the classification bundle's ``models/``); atomic."""
    from radfm.model.loading import KNOWN_LOADERS
    from radfm.model.processing import LEGACY_PREPROCESS_FILE, PROCESSOR_FILE, read_json
    from radfm.utils.io import atomic_write_text

    folder = Path(os.fspath(model_dir))
    if (folder / PROCESSOR_FILE).is_file():
        path = folder / PROCESSOR_FILE
        spec = read_json(path)
        spec.setdefault("image_processor", {}).update(as_grid(grid))
        atomic_write_text(path, json.dumps(spec, indent=2) + "\n")
        return path
    path = folder / LEGACY_PREPROCESS_FILE
    spec = {"loader": KNOWN_LOADERS[0]}
    if path.is_file():
        spec.update(read_json(path))
    spec.update(as_grid(grid))
    atomic_write_text(path, json.dumps(spec, indent=2) + "\n")
    return path


def check_same_grid(trained: Mapping[str, Any], configured: Mapping[str, Any], *, model: str = "the model") -> None:
    """``GridMismatchError`` unless the config's ``image_grid`` equals the grid ``model`` was trained at."""
    trained, configured = as_grid(trained, "trained grid"), as_grid(configured)
    if trained != configured:
        raise GridMismatchError(
            f"image_grid mismatch: {model} was trained at {describe_grid(trained)}, but this config's "
            f"image_grid is {describe_grid(configured)}. Scans at another grid change the model's answers; "
            f"set image_grid to {json.dumps(trained)} (or train a model at the new grid).")


def check_images(images: Iterable[torch.Tensor], trained: Mapping[str, Any], *, names: Sequence[str] | None = None,
                 model: str = "the model") -> None:
    """``GridMismatchError`` for a preprocessed scan ``[C, H, W, D]`` whose grid the model was not trained at.

    A 2D scan must be ``size_2d × 4``, a 3D one ``size_3d × D`` with ``D <= max_depth`` (a multiple of 4).
    """
    trained = as_grid(trained, "trained grid")
    planes = {tuple(trained["size_2d"]), tuple(trained["size_3d"])}
    for index, image in enumerate(images):
        shape = tuple(int(s) for s in image.shape)
        plane, depth = shape[1:3], shape[3] if len(shape) == 4 else None
        if len(shape) == 4 and plane in planes and depth is not None and depth <= trained["max_depth"]:
            continue
        name = names[index] if names is not None and index < len(names) else f"scan {index}"
        raise GridMismatchError(
            f"{name}: preprocessed to {list(shape)} (plane {shape[1]}x{shape[2]}"
            f"{'' if depth is None else f', depth {depth}'}), but {model} was trained at {describe_grid(trained)}. "
            f"Set the bundle's image_grid to the model's grid {json.dumps(trained)}.")
