"""What a RadFM model folder must hold, checked before anything is built (each error names its file).

``config.json`` (``model_type: radfm``; the old format names the converter), the weights
(``model.safetensors`` or its index) and the processor files (``processor_config.json`` with the
preprocessing grid, ``tokenizer_config.json``). :func:`preprocess_options` reads the recorded
preprocessing of a folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from radfm.model.config import check_config_dict
from radfm.model.processing import (
    LEGACY_PREPROCESS_FILE,
    MODEL_PREPROCESS_KEYS,
    PROCESSOR_FILE,
    RadFMImageProcessor,
    check_preprocess_options,
    missing_processor_files,
    read_json,
)

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")


def preprocess_options(model_dir: str | os.PathLike) -> dict[str, Any]:
    """The ``preprocess_scan`` options a folder records ({} if none).

    A model folder: its image processor's options (``processor_config.json``). A folder with only
    a ``preprocess.json`` (the classification bundle's ``models/``): the options written there.
    Unknown keys or a bad grid raise ``ValueError`` naming the file.
    """
    folder = Path(os.fspath(model_dir))
    if (folder / PROCESSOR_FILE).is_file():
        return _image_processor(folder).options
    path = folder / LEGACY_PREPROCESS_FILE
    if not path.is_file():
        return {}
    return check_preprocess_options(read_json(path), path)


def _image_processor(folder: Path) -> RadFMImageProcessor:
    path = folder / PROCESSOR_FILE
    values = read_json(path)
    if not isinstance(values, dict) or not isinstance(values.get("image_processor"), dict):
        raise ValueError(f"{path}: expected a JSON object with an 'image_processor' object (the preprocessing options)")
    values = values["image_processor"]
    values = {k: v for k, v in values.items() if k not in ("image_processor_type", "processor_class")}
    unknown = sorted(set(values) - set(MODEL_PREPROCESS_KEYS) - {"loader"})
    if unknown:
        raise ValueError(f"{path}: unknown preprocessing option(s) {unknown}; expected some of {list(MODEL_PREPROCESS_KEYS)}")
    try:
        return RadFMImageProcessor(**check_preprocess_options(values, path))
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: {error}") from None


def check_model_folder(folder: str | os.PathLike, *, processor: bool = True, weights: bool = True) -> Path:
    """Refuse a folder that is not a complete RadFM model folder, naming the first missing or bad file.

    Checks ``config.json`` (readable, ``model_type: radfm``; an old-format folder names the
    converter), the weights and, with ``processor``, the processor files.
    """
    folder = Path(os.fspath(folder))
    config = folder / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"{folder} is not a RadFM model folder (no config.json); convert weights with `radfm convert`")
    check_config_dict(read_json(config), config)
    if weights and not any((folder / name).is_file() for name in WEIGHT_FILES):
        raise FileNotFoundError(f"{folder / WEIGHT_FILES[0]} is missing: the folder holds no weights "
                                f"({' or '.join(WEIGHT_FILES)})")
    if processor:
        missing_processor_files(folder, raise_error=True)
        _image_processor(folder)  # validates the recorded preprocessing, naming the file
        read_json(folder / "tokenizer_config.json")
    return folder
