"""The one loader: ``radfm.load(path_or_preset, ...)`` -> ``(model, tokenizer, preprocessing)``.

Every command, the service, the bundles and the Slicer path load models through :func:`load`.
Where the weights go (one device, a device map over GPUs/CPU/disk, 8-/4-bit) is its
arguments; :mod:`radfm.model.placement` does the spreading. ``preprocessing`` is the
``radfm.transforms`` pipeline at the grid the model was trained at (its folder's
``preprocess.json``), so a model never silently sees scans at another grid.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from radfm.model.config import RadFMConfig
from radfm.model.placement import load_placed, resolve_device, resolve_dtype
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


def demo_model_dir() -> Path:
    """The demo model shipped in the RadFM bundle (the default of generate/serve/info)."""
    from radfm.utils.resources import bundle_dir

    return bundle_dir("radfm") / "models" / "demo"


def resolve_model_dir(model: str | os.PathLike | None) -> Path:
    """``model`` or the demo model; a clear error when neither exists."""
    if model is None:
        demo = demo_model_dir()
        if (demo / "config.json").is_file():
            return demo
        raise FileNotFoundError(
            f"no --model given and the demo model {demo} does not exist; "
            "pass --model DIR (a `save_pretrained` folder, see `radfm convert`)"
        )
    path = Path(model)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} is not a RadFM model folder (no config.json); convert weights with `radfm convert`")
    return path


@dataclass(frozen=True)
class LoadedModel:
    """What :func:`load` returns; unpacks as ``model, tokenizer, preprocessing = radfm.load(...)``.

    ``preprocessing``: a MONAI ``Compose`` path -> float32 ``MetaTensor [3, H, W, D]`` at the
    model's grid. ``preprocess(path, **per_scan)`` runs the same steps with per-scan options
    (``series_uid``, ``window``) and raises ``ScanReadError`` itself rather than Compose's wrapper.
    """

    model: RadFM
    tokenizer: Any
    preprocessing: Any
    preprocess_options: dict[str, Any] = field(default_factory=dict)

    def __iter__(self):
        return iter((self.model, self.tokenizer, self.preprocessing))

    def preprocess(self, path: str | os.PathLike, **per_scan: Any):
        """One scan (file or DICOM folder) -> ``MetaTensor [3, H, W, D]`` at the model's grid."""
        from radfm.transforms import preprocess_scan  # lazy: keeps model import light

        return preprocess_scan(path, **{**self.preprocess_options, **per_scan})


def load(
    path_or_preset: str | os.PathLike,
    *,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype | None = "auto",
    device_map: str | dict | None = None,
    max_memory: str | dict | None = None,
    offload_folder: str | None = None,
    quantization: str | None = None,
    weights: bool = True,
    **preprocess_overrides: Any,
) -> LoadedModel:
    """A RadFM model, its tokenizer and its preprocessing from a model folder or the ``"tiny"`` preset.

    Args:
        path_or_preset: a ``save_pretrained`` folder (``radfm convert`` writes one from the
            published checkpoint) or ``"tiny"`` (random small model with a small trained tokenizer,
            for tests and demos).
        device: ``auto`` (GPU if any), ``cpu``, ``cuda``, ``cuda:N``; ignored with ``device_map``.
        dtype: ``auto`` (bf16 on a GPU that has it, fp16 on other GPUs, fp32 on CPU), ``float32``,
            ``bfloat16``, ``float16``.
        device_map: ``auto``/``balanced``/``balanced_low_0``/``sequential`` or ``{module: device}``:
            spread the language model over GPUs, CPU RAM and disk (accelerate).
        max_memory: caps per device for ``device_map``, e.g. ``"0=22GiB,1=22GiB,cpu=64GiB"``.
        offload_folder: folder for weights a device map puts on disk.
        quantization: ``"8bit"`` or ``"4bit"`` for the language model (bitsandbytes, CUDA GPU).
        weights: ``False`` builds the folder's architecture (its ``config.json``) with fresh
            weights and leaves the loading to the caller: a MONAI bundle's ``network_def`` does
            this and its ``CheckpointLoader`` then loads ``models/model.pt``.
        preprocess_overrides: options of ``radfm.transforms.preprocess_scan`` that override the
            folder's ``preprocess.json`` (e.g. ``window="lung"``).
    """
    from radfm.transforms import preprocess_transforms  # lazy: keeps model import light

    name = os.fspath(path_or_preset)
    path = Path(name)
    recorded = preprocess_options(path) if path.is_dir() else {}  # a bad file fails before the weights load
    if name == "tiny" and not path.exists():
        if device_map is not None or quantization is not None:
            raise ValueError("the 'tiny' preset loads on one device: device_map and quantization need a model folder")
        tokenizer = tiny_tokenizer()
        model = RadFM(RadFMConfig.preset("tiny", vocab_size=tokenizer.convert_tokens_to_ids("<image>")))
        target = resolve_device(device)
        model = model.to(device=target, dtype=resolve_dtype(dtype, target))
        model.tokenizer = tokenizer
    elif path.is_dir() and not weights:
        if device_map is not None or quantization is not None:
            raise ValueError("weights=False builds the network on one device: device_map and quantization need weights")
        from transformers import AutoTokenizer

        model_dir = resolve_model_dir(path)
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        target = resolve_device(device)
        model = RadFM(RadFMConfig.from_json_file(model_dir / "config.json"))
        model = model.to(device=target, dtype=resolve_dtype(dtype, target))
        model.tokenizer = tokenizer
    elif path.is_dir():
        model = _load_folder(resolve_model_dir(path), device=device, dtype=dtype, device_map=device_map,
                             max_memory=max_memory, offload_folder=offload_folder, quantization=quantization)
        tokenizer = model.tokenizer
    elif path.is_file() and path.suffix == ".bin":
        raise ValueError(
            f"{path} looks like the published checkpoint; convert it first: "
            "radfm convert OFFICIAL_BIN --llm-config CONFIG_JSON --output DIR"
        )
    elif name == "radfm-14b":
        raise ValueError("the radfm-14b preset has no weights here; convert the published checkpoint with `radfm convert`")
    else:
        raise ValueError(f"{name!r} is neither a model directory nor a preset ('tiny')")
    options = {**recorded, **preprocess_overrides}
    return LoadedModel(model.eval(), tokenizer, preprocess_transforms(**options), options)


def _load_folder(model_dir: Path, *, device, dtype, device_map, max_memory, offload_folder, quantization) -> RadFM:
    """Weights from a folder: straight onto one device, or placed by a device map / quantized."""
    if device_map is None and quantization is None:
        target = resolve_device(device)
        model = RadFM.from_pretrained(model_dir, device=target, dtype=resolve_dtype(dtype, target))
    else:
        from transformers import AutoTokenizer

        model = load_placed(RadFM, model_dir, dtype=dtype, device_map=device_map, max_memory=max_memory,
                            offload_folder=offload_folder, quantization=quantization)
        model.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    if model.tokenizer is None:
        raise ValueError(f"model directory {model_dir} has no tokenizer files; save the model with a tokenizer")
    return model
