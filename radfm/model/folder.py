"""What a RadFM model folder must hold, checked before anything is built (each error names its file).

``config.json`` (``model_type: radfm``; the old format names the converter), the weights
(``model.safetensors`` or its index) and the processor files (``processor_config.json`` with the
preprocessing grid, ``tokenizer_config.json``). The recorded grid is read by
``RadFMImageProcessor.from_model_dir``.
"""

from __future__ import annotations

import os
from pathlib import Path

from radfm.model.config import check_config_dict
from radfm.model.processing import RadFMImageProcessor, missing_processor_files, read_json

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")


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
        RadFMImageProcessor.from_model_dir(folder)  # validates the recorded preprocessing, naming the file
        read_json(folder / "tokenizer_config.json")
    return folder
