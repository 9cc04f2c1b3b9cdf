"""``RadFMProcessor``: the image processor (MONAI transforms at the model's grid) + tokenizer + chat template.

The rules of a RadFM prompt live here and nowhere else:

* **grid**: :class:`RadFMImageProcessor` turns each scan (a path, a channel-first array or a
  MONAI ``MetaTensor``) into ``[3, H, W, D]`` at the grid the model was trained at
  (``size_2d``, ``size_3d``, ``max_depth``, saved in ``processor_config.json``), with the
  ``radfm.transforms`` steps (min-max, CT windows, the depth rule). A model given scans (or a bundle config's ``image_grid``) at another grid raises
  :class:`GridMismatchError` naming both grids, instead of silently answering worse (the demo
  model, trained at 128², answers "ultrasound" for X-rays at 512²). The image processor reads and
  records its grid in a model folder (:meth:`RadFMImageProcessor.from_model_dir`, :meth:`~RadFMImageProcessor.save_grid`);
* **``<image>`` placement**: a prompt without placeholders gets one ``<image>`` per scan in front;
  otherwise the count must equal the number of scans; each ``<image>`` becomes its 34-id block
  (the published ids, with ``V`` the language model's vocabulary size: ``<image>`` = V,
  ``</image>`` = V+1, ``<imageK>`` = V+2+K; image ``s`` of a prompt is
  ``<image><image{32s}>…<image{32s+31}></image>``). The manifest checks, the training sequences
  and the request path all use the functions below (:func:`count_placeholders`,
  :func:`with_placeholders`, :func:`encode_prompt`, :func:`image_token_ids`, …).

``processor(text=..., images=...)`` → ``BatchFeature`` with ``input_ids``/``attention_mask``
``[B, L]`` (left padded) and ``images`` (per prompt, a list of tensors; sizes may differ), ready
for ``model(**inputs)`` / ``model.generate(**inputs)``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import BatchFeature
from transformers.image_processing_utils import BaseImageProcessor
from transformers.processing_utils import ProcessorMixin

from radfm.model.tokenizer import BLOCK_LENGTH, DEFAULT_MAX_IMAGES, IMAGE_PLACEHOLDER, TOKENS_PER_IMAGE

# transformers 5 saves the image processor's config inside processor_config.json ("image_processor")
PROCESSOR_FILE = "processor_config.json"
TOKENIZER_FILE = "tokenizer_config.json"
LEGACY_PREPROCESS_FILE = "preprocess.json"
# Options of preprocess_scan a model records (series_uid and window may also be given per scan).
MODEL_PREPROCESS_KEYS = ("size_2d", "size_3d", "max_depth", "window", "nonfinite", "axcodes", "contiguous")
KNOWN_LOADERS = ("radfm.transforms.preprocess_scan",)

# RadFM has no chat format of its own: turns are joined by newlines, image parts become <image>.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}<image>{%- elif part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{%- if not loop.last -%}{{ '\n' }}{%- endif -%}"
    "{%- endfor -%}"
)


def check_preprocess_options(spec: Any, source: str | os.PathLike) -> dict[str, Any]:
    """Validated ``preprocess_scan`` options from a mapping (``loader`` dropped); ``ValueError`` naming ``source``.

    Grid lists become tuples, a ``window`` list becomes ``(low, high)``.
    """
    if not isinstance(spec, dict):
        raise ValueError(f"{source}: expected a JSON object of preprocess_scan options, got {type(spec).__name__}")
    options = dict(spec)
    loader = options.pop("loader", KNOWN_LOADERS[0])
    if loader not in KNOWN_LOADERS:
        raise ValueError(f"{source}: unknown loader {loader!r}; expected one of {list(KNOWN_LOADERS)}")
    unknown = sorted(set(options) - set(MODEL_PREPROCESS_KEYS))
    if unknown:
        raise ValueError(f"{source}: unknown preprocessing option(s) {unknown}; expected some of "
                         f"{list(MODEL_PREPROCESS_KEYS)} (and 'loader')")
    from radfm.transforms.spatial import MAX_DEPTH, SIZE_2D, SIZE_3D, check_grid

    try:  # fail at load time, naming the file, rather than on the first scan
        grid = check_grid(options.get("size_2d", SIZE_2D), options.get("size_3d", SIZE_3D),
                          options.get("max_depth", MAX_DEPTH))
    except (TypeError, ValueError) as error:
        raise ValueError(f"{source}: {error}") from None
    for key, value in zip(("size_2d", "size_3d", "max_depth"), grid):
        if key in options:
            options[key] = value
    if isinstance(options.get("window"), list):
        options["window"] = tuple(options["window"])  # (low, high) HU
    return options


def read_json(path: Path) -> Any:
    """JSON of ``path``; an unreadable or corrupt file is a ``ValueError`` naming it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not readable JSON ({error})") from error


GRID_KEYS = ("size_2d", "size_3d", "max_depth")


class GridMismatchError(ValueError):
    """Scans (or a config's ``image_grid``) at a grid the model was not trained at."""


def _describe(grid: Mapping[str, Any]) -> str:
    """``2D 128x128, 3D 128x128 (depth <= 8)``."""
    return (f"2D {grid['size_2d'][0]}x{grid['size_2d'][1]}, 3D {grid['size_3d'][0]}x{grid['size_3d'][1]} "
            f"(depth <= {grid['max_depth']})")


class RadFMImageProcessor(BaseImageProcessor):
    """Scans → ``[3, H, W, D]`` float32 tensors in [0, 1] at the model's grid (``radfm.transforms``).

    Inputs: a path (file or DICOM folder), or a channel-first array/tensor/``MetaTensor``
    ``[C, H, W]`` (2D) or ``[C, H, W, D]`` (3D) as ``LoadScan`` gives it. A tensor that is already
    ``[3, H, W, D]`` at this grid passes unchanged (a scan preprocessed before).
    """

    model_input_names = ["images"]

    def __init__(
        self,
        size_2d: Sequence[int] | None = None,
        size_3d: Sequence[int] | None = None,
        max_depth: int | None = None,
        window: Any = None,
        nonfinite: str = "error",
        axcodes: str = "RAS",
        contiguous: bool = False,
        **kwargs: Any,
    ) -> None:
        from radfm.transforms.spatial import MAX_DEPTH, SIZE_2D, SIZE_3D

        kwargs.pop("loader", None)
        super().__init__(**kwargs)
        options = check_preprocess_options(
            {"size_2d": list(size_2d or SIZE_2D), "size_3d": list(size_3d or SIZE_3D),
             "max_depth": int(max_depth or MAX_DEPTH), "window": window, "nonfinite": nonfinite,
             "axcodes": axcodes, "contiguous": bool(contiguous)}, type(self).__name__)
        self.size_2d = list(options["size_2d"])
        self.size_3d = list(options["size_3d"])
        self.max_depth = int(options["max_depth"])
        self.window = list(options["window"]) if isinstance(options["window"], tuple) else options["window"]
        self.nonfinite = nonfinite
        self.axcodes = axcodes
        self.contiguous = bool(contiguous)

    @property
    def options(self) -> dict[str, Any]:
        """The ``radfm.transforms.preprocess_scan`` keyword options of this processor."""
        window = tuple(self.window) if isinstance(self.window, list) else self.window
        return {"size_2d": tuple(self.size_2d), "size_3d": tuple(self.size_3d), "max_depth": self.max_depth,
                "window": window, "nonfinite": self.nonfinite, "axcodes": self.axcodes, "contiguous": self.contiguous}

    @property
    def grid(self) -> dict[str, Any]:
        """``{"size_2d": [H, W], "size_3d": [H, W], "max_depth": D}``."""
        return {"size_2d": list(self.size_2d), "size_3d": list(self.size_3d), "max_depth": self.max_depth}

    @classmethod
    def at_grid(cls, grid: Mapping[str, Any] | None, source: str = "image_grid") -> RadFMImageProcessor:
        """The standard pipeline at ``grid`` (a bundle config's ``image_grid``; missing keys: the published
        grid); a bad grid is a ``ValueError`` naming ``source``."""
        grid = {} if grid is None else grid
        if not isinstance(grid, Mapping):
            raise ValueError(f"{source}: expected a mapping with keys {list(GRID_KEYS)}, got {type(grid).__name__}")
        unknown = sorted(set(grid) - set(GRID_KEYS))
        if unknown:
            raise ValueError(f"{source}: unknown key(s) {unknown}; expected some of {list(GRID_KEYS)}")
        try:
            return cls(**grid)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{source}: {str(error).removeprefix(cls.__name__ + ': ')}") from None

    @classmethod
    def from_model_dir(cls, model_dir: str | os.PathLike) -> RadFMImageProcessor:
        """The image processor a folder records: a model folder's ``processor_config.json``
        (``image_processor`` entry), else the ``preprocess.json`` of a classifier's ``models/`` folder.

        A folder recording neither is refused (``FileNotFoundError`` naming both files): a model never
        runs at a grid it was not trained at by default. Unknown keys or a bad grid raise ``ValueError``
        naming the file.
        """
        folder = Path(os.fspath(model_dir))
        path = folder / PROCESSOR_FILE
        if path.is_file():
            values = read_json(path)
            if not isinstance(values, dict) or not isinstance(values.get("image_processor"), dict):
                raise ValueError(f"{path}: expected a JSON object with an 'image_processor' object "
                                 "(the preprocessing options)")
            values = {k: v for k, v in values["image_processor"].items()
                      if k not in ("image_processor_type", "processor_class")}
            try:
                return cls(**check_preprocess_options(values, path))
            except (TypeError, ValueError) as error:
                message = str(error)
                raise ValueError(message if message.startswith(str(path)) else f"{path}: {message}") from None
        if (folder / LEGACY_PREPROCESS_FILE).is_file():
            return cls.from_preprocess_json(folder / LEGACY_PREPROCESS_FILE)
        raise FileNotFoundError(f"{path} is missing (and no {LEGACY_PREPROCESS_FILE}): {folder} does not record the "
                                "grid its model was trained at")

    @classmethod
    def for_model(cls, model: str | os.PathLike) -> RadFMImageProcessor:
        """The pipeline to train ``model`` with: a saved folder's own (:meth:`from_model_dir`); for a preset
        name or a config file (a new model), the published grid."""
        if Path(os.fspath(model)).is_dir():
            return cls.from_model_dir(model)
        return cls()

    def describe_grid(self) -> str:
        """``2D 128x128, 3D 128x128 (depth <= 8)``."""
        return _describe(self.grid)

    def save_grid(self, model_dir: str | os.PathLike) -> Path:
        """Record this grid with a saved model (atomic): in its ``processor_config.json`` for a RadFM model
        folder, else in ``preprocess.json`` (a classifier's ``models/`` folder; other options kept)."""
        from radfm.utils.io import atomic_write_text

        folder = Path(os.fspath(model_dir))
        path = folder / PROCESSOR_FILE
        if path.is_file():
            spec = read_json(path)
            spec.setdefault("image_processor", {}).update(self.grid)
        else:
            path = folder / LEGACY_PREPROCESS_FILE
            spec = {"loader": KNOWN_LOADERS[0]}
            if path.is_file():
                spec.update(read_json(path))
            spec.update(self.grid)
        atomic_write_text(path, json.dumps(spec, indent=2) + "\n")
        return path

    def check_same_grid(self, image_grid: Mapping[str, Any] | None, *, model: str = "the model") -> None:
        """``GridMismatchError`` unless a config's ``image_grid`` is this (the trained) grid; ``None`` passes."""
        if image_grid is None:
            return
        configured = self.at_grid(image_grid).grid
        if configured != self.grid:
            raise GridMismatchError(
                f"image_grid mismatch: {model} was trained at {self.describe_grid()}, but this config's "
                f"image_grid is {_describe(configured)}. Scans at another grid change the model's answers; "
                f"set image_grid to {json.dumps(self.grid)} (or train a model at the new grid).")

    def check_images(self, images: Iterable[torch.Tensor], *, names: Sequence[str] | None = None,
                     model: str = "the model") -> None:
        """``GridMismatchError`` for a preprocessed scan ``[C, H, W, D]`` not at this grid: a 2D scan must be
        ``size_2d × 4``, a 3D one ``size_3d × D`` with ``D <= max_depth``."""
        planes = {tuple(self.size_2d), tuple(self.size_3d)}
        for index, image in enumerate(images):
            shape = tuple(int(s) for s in image.shape)
            plane, depth = shape[1:3], shape[3] if len(shape) == 4 else None
            if len(shape) == 4 and plane in planes and depth is not None and depth <= self.max_depth:
                continue
            name = names[index] if names is not None and index < len(names) else f"scan {index}"
            raise GridMismatchError(
                f"{name}: preprocessed to {list(shape)} (plane {shape[1]}x{shape[2]}"
                f"{'' if depth is None else f', depth {depth}'}), but {model} was trained at {self.describe_grid()}. "
                f"Set the bundle's image_grid to the model's grid {json.dumps(self.grid)}.")

    def transforms(self, **overrides: Any):
        """The MONAI ``Compose``: path -> ``MetaTensor [3, H, W, D]`` (options overridable)."""
        from radfm.transforms import preprocess_transforms

        return preprocess_transforms(**{**self.options, **overrides})

    def _at_grid(self, shape: Sequence[int]) -> bool:
        if len(shape) != 4 or shape[0] != 3:
            return False
        plane, depth = tuple(shape[1:3]), shape[3]
        if plane == tuple(self.size_2d) and depth == 4:
            return True
        return plane == tuple(self.size_3d) and depth <= self.max_depth and depth % 4 == 0

    def process_one(self, image: Any, **per_scan: Any) -> torch.Tensor:
        """One scan (path, array, tensor or ``MetaTensor``) -> ``[3, H, W, D]`` at the grid."""
        from radfm.transforms import preprocess_scan

        options = {**self.options, **per_scan}
        if isinstance(image, (str, os.PathLike)):
            return preprocess_scan(image, **options)
        if isinstance(image, np.ndarray):
            image = torch.from_numpy(image)
        if not isinstance(image, torch.Tensor):
            raise TypeError(f"images: expected a path, an array or a tensor, got {type(image).__name__}")
        if image.dtype == torch.float32 and self._at_grid(tuple(image.shape)):
            return image
        if image.ndim not in (3, 4):
            raise ValueError(f"an image array must be channel-first [C, H, W] or [C, H, W, D], got shape {list(image.shape)}")
        from radfm.transforms import DropAlpha, OrientToRAS, ScaleResizeToRadFM, ToThreeChannels

        steps = [DropAlpha(), OrientToRAS(axcodes=options["axcodes"]),
                 ScaleResizeToRadFM(window=options["window"], nonfinite=options["nonfinite"], size_2d=options["size_2d"],
                                    size_3d=options["size_3d"], max_depth=options["max_depth"]),
                 ToThreeChannels(contiguous=options["contiguous"])]
        for step in steps:
            image = step(image)
        return image

    def preprocess(self, images: Any, **per_scan: Any) -> BatchFeature:
        """``images``: one scan, a list of scans, or a list of lists (per prompt) → ``{"images": same nesting}``."""
        nested = _nest(images)
        return BatchFeature({"images": [[self.process_one(item, **per_scan) for item in sample] for sample in nested]})

    def __call__(self, images: Any, **per_scan: Any) -> BatchFeature:
        return self.preprocess(images, **per_scan)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        for key in ("size_2d", "size_3d", "window"):
            if isinstance(out.get(key), tuple):
                out[key] = list(out[key])
        return out

    @classmethod
    def from_preprocess_json(cls, path: str | os.PathLike) -> RadFMImageProcessor:
        """From a legacy ``preprocess.json`` (the options of ``preprocess_scan``)."""
        path = Path(path)
        return cls(**check_preprocess_options(read_json(path), path))


def _nest(images: Any) -> list[list[Any]]:
    """None -> [[]]; a scan -> [[scan]]; [scans] -> [[scans]]; [[scans], ...] stays."""
    if images is None:
        return [[]]
    if isinstance(images, (str, os.PathLike, np.ndarray, torch.Tensor)):
        return [[images]]
    images = list(images)
    if images and all(isinstance(item, (list, tuple)) for item in images):
        return [list(item) for item in images]
    if any(isinstance(item, (list, tuple)) for item in images):
        raise ValueError("images: give one list of scans per prompt, or one flat list for a single prompt")
    return [images]


_PLACEHOLDER_RE = re.compile(re.escape(IMAGE_PLACEHOLDER))


def image_token_ids(base_vocab_size: int, image_index: int) -> list[int]:
    """The 34 ids of image ``image_index`` (0-based) in a prompt: ``[V, V+2+32s, …, V+2+32s+31, V+1]``."""
    if image_index < 0:
        raise ValueError(f"image_index must be >= 0, got {image_index}")
    first = base_vocab_size + 2 + TOKENS_PER_IMAGE * image_index
    return [base_vocab_size, *range(first, first + TOKENS_PER_IMAGE), base_vocab_size + 1]


def count_placeholders(text: str) -> int:
    """Number of ``<image>`` placeholders in ``text``."""
    return len(_PLACEHOLDER_RE.findall(text))


def split_on_placeholders(text: str) -> list[str]:
    """Text segments around each ``<image>``: ``n`` placeholders give ``n + 1`` segments."""
    return _PLACEHOLDER_RE.split(text)


def with_placeholders(text: str, num_images: int) -> str:
    """The prompt with one ``<image>`` per scan: as written, or ``num_images`` prepended when it has none.

    ``ValueError`` naming both counts when it has placeholders, but not one per scan.
    """
    return IMAGE_PLACEHOLDER * placeholders_to_prepend(count_placeholders(text), num_images) + text


def placeholders_to_prepend(have: int, num_images: int) -> int:
    """The placement rule on counts: how many ``<image>`` go in front of a prompt that has ``have`` of them.

    Args:
        have: placeholders already in the prompt (text, or ``<image>`` ids of a tokenised prompt).
        num_images: scans given with the prompt.

    Returns:
        ``0`` when the prompt has one per scan, ``num_images`` when it has none.

    Raises:
        ValueError: naming both counts when the prompt has placeholders, but not one per scan.
    """
    if have == num_images:
        return 0
    if have == 0:
        return num_images
    raise ValueError(f"prompt has {have} {IMAGE_PLACEHOLDER} placeholder(s) but {num_images} image(s) were given")


def _token_ids(tokenizer, texts: Sequence[str], *, base_vocab_size: int, add_bos: bool,
               expand: bool = True) -> list[list[int]]:
    """Ids of each text with every ``<image>`` expanded to its 34-id block (BOS first when ``add_bos``);
    with ``expand=False`` each ``<image>`` stays one id ``V`` (the block is vLLM's prompt update).

    The text between placeholders of every prompt goes through the tokenizer in one call.
    """
    split = [split_on_placeholders(text) for text in texts]
    pieces = [segment for segments in split for segment in segments if segment]
    encoded = iter(tokenizer(pieces, add_special_tokens=False)["input_ids"] if pieces else [])
    bos = [tokenizer.bos_token_id] if add_bos and tokenizer.bos_token_id is not None else []
    out = []
    for segments in split:
        ids = list(bos)
        for s, segment in enumerate(segments):
            if segment:
                ids.extend(next(encoded))
            if s < len(segments) - 1:
                ids.extend(image_token_ids(base_vocab_size, s) if expand else [base_vocab_size])
        out.append(ids)
    return out


def encode_prompt(tokenizer, text: str, *, base_vocab_size: int, num_images: int | None = None,
                  add_bos: bool = True) -> list[int]:
    """Token ids of ``text`` with every ``<image>`` expanded to its 34-id block.

    Text segments are tokenized without special tokens; a BOS id is prepended when ``add_bos``
    and the tokenizer has one. ``num_images``, when given, must equal the number of placeholders
    (the error names both counts).
    """
    if num_images is not None and num_images != count_placeholders(text):
        raise ValueError(f"prompt has {count_placeholders(text)} {IMAGE_PLACEHOLDER} placeholder(s) but "
                         f"{num_images} image(s) were given")
    return _token_ids(tokenizer, [text], base_vocab_size=base_vocab_size, add_bos=add_bos)[0]


def placeholder_prompt_ids(tokenizer, text: str, num_images: int, *, base_vocab_size: int,
                           add_bos: bool = True) -> list[int]:
    """The ids of a prompt before its image blocks are expanded: each ``<image>`` is the one id ``V``.

    The same text handling as :func:`encode_prompts` (a prompt without placeholders gets one per scan
    in front; segments tokenised alike, BOS first), so expanding each ``V`` to
    ``image_token_ids(V, s)`` (vLLM's prompt update, ``radfm.model.vllm_radfm``) gives exactly the
    ids ``RadFMProcessor`` builds.

    Args:
        tokenizer: the model's tokenizer (with the image tokens).
        text: the prompt, with or without ``<image>`` placeholders.
        num_images: scans given with it.
        base_vocab_size: ``V``.
        add_bos: put the tokenizer's BOS id first.

    Returns:
        The token ids, with ``num_images`` ids equal to ``V``.
    """
    return _token_ids(tokenizer, [with_placeholders(text, num_images)], base_vocab_size=base_vocab_size,
                      add_bos=add_bos, expand=False)[0]


def block_positions(input_ids: Sequence[int], base_vocab_size: int) -> list[tuple[int, int]]:
    """``(start, end)`` spans (end exclusive) of every 34-id image block in ``input_ids``."""
    spans = []
    i, n = 0, len(input_ids)
    while i < n:
        if input_ids[i] == base_vocab_size:
            end = i + BLOCK_LENGTH
            if end > n or input_ids[end - 1] != base_vocab_size + 1:
                raise ValueError(f"image block starting at position {i} is not {BLOCK_LENGTH} ids long")
            spans.append((i, end))
            i = end
        else:
            i += 1
    return spans


def encode_prompts(tokenizer, prompts: Sequence[str], num_images: Sequence[int], *, base_vocab_size: int,
                   add_bos: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ``input_ids`` and ``attention_mask`` ``[B, L]`` for prompts with ``num_images[b]`` scans each.

    A prompt without placeholders gets one ``<image>`` per scan in front; otherwise the number of
    placeholders must equal the number of scans (the error names both counts and the prompt).
    The whole batch is tokenised in one tokenizer call.
    """
    if len(prompts) != len(num_images):
        raise ValueError(f"{len(prompts)} prompt(s) but {len(num_images)} image list(s)")
    texts = []
    for i, (prompt, count) in enumerate(zip(prompts, num_images)):
        try:
            texts.append(with_placeholders(prompt, count))
        except ValueError as err:
            raise ValueError(f"prompt {i}: {err}") from err
    encoded = _token_ids(tokenizer, texts, base_vocab_size=base_vocab_size, add_bos=add_bos)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    length = max((len(ids) for ids in encoded), default=0)
    input_ids = torch.full((len(encoded), length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(encoded), length), dtype=torch.long)
    for row, ids in enumerate(encoded):
        input_ids[row, length - len(ids):] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, length - len(ids):] = 1
    return input_ids, attention_mask


def generation_token_ids(tokenizer) -> dict[str, int]:
    """``eos_token_id`` (and ``pad_token_id`` when the tokenizer has one) for ``model.generate``:
    generation stops where :func:`decode_answers` cuts, and left-padded rows pad with the tokenizer's id."""
    ids = {"eos_token_id": tokenizer.eos_token_id}
    if tokenizer.pad_token_id is not None:
        ids["pad_token_id"] = tokenizer.pad_token_id
    return ids


def decode_answers(tokenizer, new_tokens: torch.Tensor) -> list[str]:
    """Cut each row of generated ids ``[B, new]`` at its first EOS and decode them (one batch call)."""
    eos = tokenizer.eos_token_id
    rows = []
    for row in torch.as_tensor(new_tokens).tolist():
        if eos is not None and eos in row:
            row = row[: row.index(eos)]
        rows.append(row)
    return [text.strip() for text in tokenizer.batch_decode(rows, skip_special_tokens=True)]


class RadFMProcessor(ProcessorMixin):
    """Image processor + tokenizer (with RadFM's image tokens) + chat template, saved beside the weights."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template: str | None = None, **kwargs: Any) -> None:
        if tokenizer is None or image_processor is None:
            raise ValueError("RadFMProcessor needs an image_processor and a tokenizer")
        super().__init__(image_processor, tokenizer, chat_template=chat_template or CHAT_TEMPLATE, **kwargs)
        self.image_token = IMAGE_PLACEHOLDER
        vocab = tokenizer.get_vocab()
        if IMAGE_PLACEHOLDER not in vocab:
            raise ValueError(f"the tokenizer has no {IMAGE_PLACEHOLDER} token; add them with radfm.model.tokenizer.add_image_tokens")
        self.image_token_id = vocab[IMAGE_PLACEHOLDER]

    @property
    def base_vocab_size(self) -> int:
        """``V``: the id of ``<image>`` (the language model's vocabulary size)."""
        return self.image_token_id

    @property
    def max_images(self) -> int:
        """Image slots the tokenizer has ids for."""
        return (len(self.tokenizer) - self.base_vocab_size - 2) // 32 or DEFAULT_MAX_IMAGES

    def __call__(self, text: str | Sequence[str] | None = None, images: Any = None, *, add_bos: bool = True,
                 return_tensors: str | None = "pt", **per_scan: Any) -> BatchFeature:
        """``text`` (one prompt or a list) + ``images`` (per prompt a list of scans) → ``BatchFeature``.

        Keys: ``input_ids``, ``attention_mask`` ``[B, L]`` (left padded) and ``images`` (a list per
        prompt of ``[3, H, W, D]`` tensors, sizes may differ). ``per_scan``: ``window``, ``series_uid``.
        """
        if text is None:
            raise ValueError("RadFMProcessor needs text (the prompt)")
        prompts = [text] if isinstance(text, str) else list(text)
        nested = _nest(images) if images is not None else [[] for _ in prompts]
        if len(nested) != len(prompts):
            raise ValueError(f"{len(prompts)} prompt(s) but {len(nested)} image list(s)")
        pixels = [[self.image_processor.process_one(item, **per_scan) for item in sample] for sample in nested]
        input_ids, attention_mask = encode_prompts(self.tokenizer, prompts, [len(s) for s in pixels],
                                                   base_vocab_size=self.base_vocab_size, add_bos=add_bos)
        return BatchFeature({"input_ids": input_ids, "attention_mask": attention_mask, "images": pixels})

    def batch_decode(self, sequences: torch.Tensor, skip_special_tokens: bool = True, **kwargs: Any) -> list[str]:
        """Generated ids ``[B, new]`` → answers (cut at the first EOS, special tokens dropped)."""
        if not skip_special_tokens:
            return self.tokenizer.batch_decode(sequences, skip_special_tokens=False, **kwargs)
        return decode_answers(self.tokenizer, torch.as_tensor(sequences))

    def decode(self, sequence: torch.Tensor, skip_special_tokens: bool = True, **kwargs: Any) -> str:
        return self.batch_decode(torch.as_tensor(sequence)[None], skip_special_tokens=skip_special_tokens, **kwargs)[0]

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "images"]

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args: Any, **kwargs: Any) -> RadFMProcessor:
        """transformers' loading; a local folder lacking a processor file is refused, naming it.

        Never runs a folder's own Python and never prompts: ``trust_remote_code`` is always ``False``
        (a tokenizer or image processor that names custom code is refused by transformers).
        """
        folder = Path(os.fspath(pretrained_model_name_or_path))
        if folder.is_dir():
            missing_processor_files(folder, raise_error=True)
        if kwargs.get("trust_remote_code"):
            raise ValueError("trust_remote_code=True is refused: a RadFM model folder is data, never code")
        return super().from_pretrained(pretrained_model_name_or_path, *args, **{**kwargs, "trust_remote_code": False})


def missing_processor_files(folder: str | os.PathLike, *, raise_error: bool = False) -> list[str]:
    """Processor files absent from a model folder (``processor_config.json``, ``tokenizer_config.json``)."""
    folder = Path(os.fspath(folder))
    missing = [name for name in (PROCESSOR_FILE, TOKENIZER_FILE) if not (folder / name).is_file()]
    if missing and raise_error:
        hint = ""
        if PROCESSOR_FILE in missing and (folder / LEGACY_PREPROCESS_FILE).is_file():
            from radfm.model.config import CONVERTER_HINT

            hint = f"; it has the old {LEGACY_PREPROCESS_FILE}: convert the folder with `{CONVERTER_HINT}`"
        raise FileNotFoundError(f"{folder / missing[0]} is missing: a RadFM model folder needs its processor "
                                f"files ({', '.join(missing)}){hint}")
    return missing
