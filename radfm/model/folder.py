"""What a RadFM model folder must hold, checked before anything is built (each error names its file).

``config.json`` (``model_type: radfm``; the old format names the converter), the weights
(``model.safetensors`` or its index) and the processor files (``processor_config.json`` with the
preprocessing grid, ``tokenizer_config.json``). The recorded grid is read by
``RadFMImageProcessor.from_model_dir``.

A model folder is data, never code: a file naming custom code (``auto_map``) is refused, and
every ``from_pretrained`` of ours passes ``trust_remote_code=False`` (transformers would otherwise
ask on stdin whether to run the folder's Python). The weights must cover the network the
``config.json`` describes, name for name and shape for shape; :func:`check_weights_cover` reads
only the safetensors headers, before any parameter is allocated.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from radfm.model.config import check_config_dict
from radfm.model.processing import (
    PROCESSOR_FILE,
    TOKENIZER_FILE,
    RadFMImageProcessor,
    missing_processor_files,
    read_json,
)

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")
# Files transformers reads an ``auto_map`` (custom code to import) from.
CODE_NAMING_FILES = ("config.json", TOKENIZER_FILE, PROCESSOR_FILE, "preprocessor_config.json")
# At most this many tensor names are listed in an error.
_LISTED = 8


class ModelFolderError(ValueError):
    """A model folder that cannot be loaded as it is (names the file and what is wrong)."""


def check_model_folder(folder: str | os.PathLike, *, processor: bool = True, weights: bool = True) -> Path:
    """Refuse a folder that is not a complete RadFM model folder, naming the first missing or bad file.

    Checks ``config.json`` (readable, ``model_type: radfm``; an old-format folder names the
    converter), that no file names custom code, the weights and, with ``processor``, the processor
    files and that the recorded grid is one the vision encoder can take.

    Args:
        folder: the model folder.
        processor: check the processor files and the grid too.
        weights: check that a weights file is there.

    Returns:
        ``folder`` as a ``Path``.
    """
    folder = Path(os.fspath(folder))
    if not folder.is_dir():
        raise FileNotFoundError(f"model folder {folder} does not exist")
    config = folder / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"{folder} is not a RadFM model folder (no config.json); convert weights with `radfm convert`")
    values = read_json(config)
    check_config_dict(values, config)
    refuse_custom_code(folder)
    if weights and not any((folder / name).is_file() for name in WEIGHT_FILES):
        raise FileNotFoundError(f"{folder / WEIGHT_FILES[0]} is missing: the folder holds no weights "
                                f"({' or '.join(WEIGHT_FILES)})")
    if processor:
        missing_processor_files(folder, raise_error=True)
        image_processor = RadFMImageProcessor.from_model_dir(folder)  # validates the recorded preprocessing
        check_grid_fits_vision(image_processor, values.get("vision_config") or {}, folder / PROCESSOR_FILE)
        read_json(folder / TOKENIZER_FILE)
    return folder


def _auto_map_paths(value: Any, where: str = "") -> list[str]:
    """Dotted paths of every ``auto_map`` key in a JSON value."""
    found = []
    if isinstance(value, dict):
        for key, item in value.items():
            path = f"{where}.{key}" if where else str(key)
            if key == "auto_map" and item:
                found.append(path)
            found.extend(_auto_map_paths(item, path))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found.extend(_auto_map_paths(item, f"{where}[{index}]"))
    return found


def refuse_custom_code(folder: str | os.PathLike) -> None:
    """``ModelFolderError`` if a file of the folder names custom code to run (an ``auto_map`` entry).

    Args:
        folder: the model folder.
    """
    folder = Path(os.fspath(folder))
    for name in CODE_NAMING_FILES:
        path = folder / name
        if not path.is_file():
            continue
        paths = _auto_map_paths(read_json(path))
        if paths:
            raise ModelFolderError(f"{path}: names custom code ({', '.join(paths)}); a RadFM model folder is data, "
                                   "never code, and its Python is never run (remove the entry)")


def check_grid_fits_vision(image_processor: RadFMImageProcessor, vision: Any, source: str | os.PathLike) -> None:
    """``ModelFolderError`` naming ``source`` if a scan at the processor's grid cannot enter the vision encoder.

    Checks a 2D image (``size_2d`` × 4 slices) and a 3D volume at every depth the depth rule can
    give (multiples of 4 up to ``max_depth``) against the encoder's patch sizes and position tables.

    Args:
        image_processor: the processor whose grid is checked.
        vision: the ``vision_config`` (a ``VisionConfig`` or its dict from ``config.json``).
        source: the file the grid came from (named in the error).
    """
    from radfm.model.config import VisionConfig
    from radfm.model.vision import check_image_shape
    from radfm.transforms.spatial import DEPTH_2D, DEPTH_MULTIPLE

    if isinstance(vision, dict):
        fields = {k: v for k, v in vision.items() if k not in ("model_type", "transformers_version")}
        try:
            vision = VisionConfig(**fields)
        except (TypeError, ValueError) as error:
            raise ModelFolderError(f"{source}: invalid vision_config ({error})") from None
    grid = image_processor.grid
    shapes = [(vision.channels, *grid["size_2d"], DEPTH_2D)]
    shapes += [(vision.channels, *grid["size_3d"], depth)
               for depth in range(DEPTH_MULTIPLE, grid["max_depth"] + 1, DEPTH_MULTIPLE)]
    for shape in shapes:
        try:
            check_image_shape(shape, vision, where=f"a scan at the grid {image_processor.describe_grid()}")
        except ValueError as error:
            reason = str(error).split(". ")[0]
            raise ModelFolderError(f"{source}: the recorded grid does not fit the model's vision encoder "
                                   f"(patch {vision.patch_size}x{vision.patch_size}x{vision.frame_patch_size}, "
                                   f"position tables {list(vision.pos_table)}): {reason}") from None


def _safetensors_files(folder: Path) -> list[Path]:
    """The safetensors files of a folder: ``model.safetensors``, or the shards its index names."""
    single = folder / WEIGHT_FILES[0]
    if single.is_file():
        return [single]
    index = folder / WEIGHT_FILES[1]
    spec = read_json(index)
    weight_map = spec.get("weight_map") if isinstance(spec, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise ModelFolderError(f"{index}: expected a JSON object with a 'weight_map' of tensor name -> file name")
    files = []
    for name in sorted(set(weight_map.values())):
        shard = folder / name
        if Path(name).name != name or not shard.is_file():
            raise ModelFolderError(f"{index} names the shard {name!r}, which is not a file of {folder}")
        files.append(shard)
    return files


def weight_headers(folder: str | os.PathLike) -> dict[str, tuple[tuple[int, ...], str, Path]]:
    """``name -> (shape, dtype, file)`` of every tensor in a folder's safetensors, from the headers only.

    No tensor is read: safetensors parses each file's header (and checks its offsets against the file size).

    Args:
        folder: the model folder.

    Returns:
        The tensors the weight files hold.
    """
    from safetensors import SafetensorError, safe_open

    headers: dict[str, tuple[tuple[int, ...], str, Path]] = {}
    for path in _safetensors_files(Path(os.fspath(folder))):
        try:
            with safe_open(str(path), framework="pt") as handle:
                for name in handle.keys():
                    view = handle.get_slice(name)
                    headers[name] = (tuple(int(n) for n in view.get_shape()), str(view.get_dtype()), path)
        except (SafetensorError, OSError, ValueError) as error:
            raise ModelFolderError(f"{path}: not a readable safetensors file ({error})") from None
    return headers


def _listed(names: list[str]) -> str:
    """``a, b, c`` or ``a, b, … (and 12 more)``."""
    shown = ", ".join(names[:_LISTED])
    return shown + (f", … (and {len(names) - _LISTED} more)" if len(names) > _LISTED else "")


def check_weights_cover(folder: str | os.PathLike, model_class: type) -> None:
    """Refuse weights that do not cover the network ``config.json`` describes, before anything is allocated.

    The network is built on the meta device (no memory); its parameters and persistent buffers are
    compared with the safetensors headers: a tensor the files lack (tied weights count once) or one
    stored at another shape is named, so a folder never loads as a partly random model and a
    ``config.json`` never sizes tensors its files do not hold.

    Args:
        folder: the model folder (``config.json`` and its safetensors).
        model_class: the network class (``RadFMForConditionalGeneration``, which calls this from its
            ``from_pretrained``).
    """
    from radfm.model.config import RadFMConfig
    from radfm.model.weights import build_empty, tied_aliases

    folder = Path(os.fspath(folder))
    headers = weight_headers(folder)
    files = ", ".join(sorted({path.name for _, _, path in headers.values()})) or WEIGHT_FILES[0]
    network = build_empty(model_class, RadFMConfig.from_json_file(folder / "config.json"))
    # tied weights are saved once: transformers records the ties (built on meta, they are not yet shared)
    aliases = {**tied_aliases(network), **dict(getattr(network, "all_tied_weights_keys", None) or {})}
    groups: dict[str, list[str]] = {}
    for name in network.state_dict(keep_vars=True):
        groups.setdefault(aliases.get(name, name), []).append(name)
    expected = network.state_dict(keep_vars=True)
    missing, mismatched = [], []
    for canonical, names in groups.items():
        stored = [name for name in names if name in headers]
        if not stored:
            missing.append(canonical)
            continue
        want = tuple(expected[canonical].shape)
        for name in stored:
            if headers[name][0] != want:
                mismatched.append(f"{name} {list(headers[name][0])} (config.json: {list(want)})")
    problems = []
    if missing:
        problems.append(f"{len(missing)} of the model's {len(groups)} tensors are missing: {_listed(missing)}")
    if mismatched:
        problems.append(f"{len(mismatched)} tensor(s) stored at another shape: {_listed(mismatched)}")
    if problems:
        raise ModelFolderError(f"{folder / files}: the weights do not cover the model that {folder / 'config.json'} "
                               f"describes; {'; '.join(problems)}. Nothing was loaded (save the model with "
                               "`save_pretrained`, or convert it with `radfm convert`)")

