"""``RadFMConfig``: a transformers ``PreTrainedConfig`` (``model_type="radfm"``).

Three sub-configs: ``vision_config`` (the 3D ViT), ``perceiver_config`` (the resampler) and
``text_config``, the config of any decoder-only causal LM that ``AutoModelForCausalLM`` can
build (LLaMA for the published checkpoint). Saved as ``config.json`` by ``save_pretrained``.

Sizes are checked against :data:`SIZE_LIMITS` when a config is built, so an absurd value in a
``config.json`` (``vocab_size: 1000000000``) is refused before any tensor is allocated.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

from transformers import AutoConfig, PreTrainedConfig

try:  # transformers >= 5.20 builds sub-configs from specs; 5.16-5.19 (what vLLM 0.32 accepts) leaves it to the class
    from transformers.configuration_utils import SubConfigSpec
except ImportError:
    SubConfigSpec = None

from radfm.model.tokenizer import DEFAULT_MAX_IMAGES, TOKENS_PER_IMAGE


class VisionConfig(PreTrainedConfig):
    """3D ViT sizes. ``pos_table`` = entries of the (row, column, depth) position tables."""

    model_type = "radfm_vision"
    base_config_key = "vision_config"

    dim: int = 768
    depth: int = 12
    heads: int = 8
    dim_head: int = 64
    mlp_dim: int = 2048
    patch_size: int = 32
    frame_patch_size: int = 4
    pos_table: Any = (16, 16, 128)
    channels: int = 3
    dropout: float = 0.1
    emb_dropout: float = 0.1

    def __post_init__(self, **kwargs: Any) -> None:
        self.pos_table = tuple(int(n) for n in self.pos_table)  # JSON gives a list
        if len(self.pos_table) != 3:
            raise ValueError(f"vision_config.pos_table must have 3 entries (rows, columns, depth), got {list(self.pos_table)}")
        if self.dim % 3:
            raise ValueError(f"vision_config.dim must be divisible by 3 (three position tables), got {self.dim}")
        super().__post_init__(**kwargs)

    def sizes(self) -> dict[str, Any]:
        """Only this config's own fields (no transformers bookkeeping), e.g. to build a variant."""
        return {name: getattr(self, name) for name in VISION_FIELDS}

    @property
    def patch_dim(self) -> int:
        """Values in one flattened patch: ``patch² × frame_patch × channels``."""
        return self.patch_size * self.patch_size * self.frame_patch_size * self.channels

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["pos_table"] = list(self.pos_table)
        return out


VISION_FIELDS = ("dim", "depth", "heads", "dim_head", "mlp_dim", "patch_size", "frame_patch_size", "pos_table",
                 "channels", "dropout", "emb_dropout")


class PerceiverConfig(PreTrainedConfig):
    """Perceiver resampler sizes; ``num_latents`` must equal the 32 tokens per image."""

    model_type = "radfm_perceiver"
    base_config_key = "perceiver_config"

    depth: int = 6
    heads: int = 8
    dim_head: int = 64
    num_latents: int = TOKENS_PER_IMAGE
    ff_mult: int = 4

    def __post_init__(self, **kwargs: Any) -> None:
        if self.num_latents != TOKENS_PER_IMAGE:
            raise ValueError(
                f"perceiver_config.num_latents must be {TOKENS_PER_IMAGE} (the image-token scheme has "
                f"{TOKENS_PER_IMAGE} tokens per image), got {self.num_latents}"
            )
        super().__post_init__(**kwargs)


# MedLLaMA-13B (LLaMA-13B sizes), the language model of the published checkpoint.
_MEDLLAMA_13B: dict[str, Any] = {
    "model_type": "llama",
    "vocab_size": 32000,
    "hidden_size": 5120,
    "intermediate_size": 13824,
    "num_hidden_layers": 40,
    "num_attention_heads": 40,
    "num_key_value_heads": 40,
    "hidden_act": "silu",
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-6,
    "initializer_range": 0.02,
    "pad_token_id": 0,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "tie_word_embeddings": False,
    "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"},
    "attention_bias": False,
    "mlp_bias": False,
}

_TINY_LLAMA: dict[str, Any] = {
    "model_type": "llama",
    "vocab_size": 1000,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "hidden_act": "silu",
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-6,
    "initializer_range": 0.02,
    "pad_token_id": 0,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "tie_word_embeddings": False,
    "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"},
}

_PRESETS: dict[str, dict[str, Any]] = {
    "radfm-14b": {"llm": _MEDLLAMA_13B, "vision": {}, "perceiver": {}},
    "tiny": {
        "llm": _TINY_LLAMA,
        "vision": {"dim": 24, "depth": 2, "heads": 2, "dim_head": 16, "mlp_dim": 48},
        "perceiver": {"depth": 2, "heads": 2, "dim_head": 16, "ff_mult": 2},
    },
    # the one small model every CPU benchmark uses (scripts/bench_*.py): 50.2 M parameters, a
    # LLaMA 512 wide x 4 layers with a 32k vocabulary, ViT 192 wide x 4 blocks; not a trained size
    "cpu-small": {
        "llm": {**_TINY_LLAMA, "vocab_size": 32000, "hidden_size": 512, "intermediate_size": 1376,
                "num_hidden_layers": 4, "num_attention_heads": 8, "num_key_value_heads": 8},
        "vision": {"dim": 192, "depth": 4, "heads": 4, "dim_head": 48, "mlp_dim": 512},
        "perceiver": {"depth": 2, "heads": 4, "dim_head": 48, "ff_mult": 4},
    },
}

# Largest value accepted for each size (checked before anything is built). Generous against
# today's models (largest vocabularies ~262k, widths ~16k, ~130 layers) but far below the
# sizes that would try to allocate terabytes.
SIZE_LIMITS: dict[str, int] = {
    "vocab_size": 2**22,
    "hidden_size": 65536,
    "intermediate_size": 262144,
    "num_hidden_layers": 1024,
    "num_attention_heads": 1024,
    "max_position_embeddings": 2**21,
    "dim": 16384,
    "depth": 256,
    "heads": 1024,
    "dim_head": 1024,
    "mlp_dim": 65536,
    "patch_size": 1024,
    "frame_patch_size": 1024,
    "ff_mult": 64,
    "max_images": 1024,
    "pos_table": 65536,
}
# Largest whole model (parameters): 1e12 (4 TB in fp32), 70x the published 14B model.
MAX_PARAMETERS = 10**12
LEGACY_KEYS = ("llm", "vision", "perceiver")
CONVERTER_HINT = "radfm convert OLD_FOLDER --output NEW_FOLDER"


def _check_limits(values: dict[str, Any], where: str) -> None:
    """``ValueError`` naming ``where.key`` when a size is not a positive int within :data:`SIZE_LIMITS`."""
    for key, limit in SIZE_LIMITS.items():
        if key not in values or values[key] is None:
            continue
        items = values[key] if isinstance(values[key], (list, tuple)) else [values[key]]
        for item in items:
            if isinstance(item, bool) or not isinstance(item, int) or not 0 < item <= limit:
                raise ValueError(f"{where}.{key} = {values[key]!r} is out of range: expected an integer in [1, {limit}]")


def _derived_head_dim(text_config: PreTrainedConfig) -> bool:
    """Whether ``text_config.head_dim`` is what its class derives anyway (``hidden_size // num_attention_heads``)."""
    head_dim = getattr(text_config, "head_dim", None)
    hidden, heads = getattr(text_config, "hidden_size", None), getattr(text_config, "num_attention_heads", None)
    if head_dim is None or not hidden or not heads:
        return False
    # a class default of None means "derive"; a fixed default (Gemma 256, Qwen3 128) must stay written out
    return getattr(type(text_config), "head_dim", None) is None and head_dim == hidden // heads


class RadFMConfig(PreTrainedConfig):
    """Whole-model config: ``text_config`` (any causal LM), ``vision_config``, ``perceiver_config``.

    Old names still work as read-only views: ``llm`` (the text config as a dict), ``vision``,
    ``perceiver``; ``RadFMConfig(llm=..., vision=..., perceiver=...)`` is accepted too.
    """

    model_type = "radfm"
    if SubConfigSpec is not None:
        sub_configs_defaults = {
            "text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama",
                                         init_kwargs={k: v for k, v in _MEDLLAMA_13B.items() if k != "model_type"}),
            "vision_config": VisionConfig,
            "perceiver_config": PerceiverConfig,
        }
    else:
        sub_configs = {"text_config": AutoConfig, "vision_config": VisionConfig, "perceiver_config": PerceiverConfig}

    text_config: Any = None
    vision_config: Any = None
    perceiver_config: Any = None
    max_images: int = DEFAULT_MAX_IMAGES
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs: Any) -> None:
        for old, new in zip(LEGACY_KEYS, ("text_config", "vision_config", "perceiver_config")):
            if old in kwargs:  # RadFMConfig(llm=..., vision=..., perceiver=...) from older code
                value = kwargs.pop(old)
                setattr(self, new, value.to_dict() if isinstance(value, PreTrainedConfig) and old == "llm" else value)
        if isinstance(self.text_config, dict):
            self.text_config = copy.deepcopy(self.text_config)
            if "model_type" not in self.text_config:
                raise ValueError("RadFMConfig.text_config must include 'model_type' (e.g. 'llama', 'qwen2', 'mistral')")
            for key in ("vocab_size", "hidden_size"):
                if key not in self.text_config:
                    raise ValueError(f"RadFMConfig.text_config is missing {key!r}")
            _check_limits(self.text_config, "text_config")
        for name in ("vision_config", "perceiver_config"):
            value = getattr(self, name)
            if isinstance(value, dict):
                _check_limits(value, name)
        _check_limits({"max_images": self.max_images}, "config")
        if SubConfigSpec is None:
            self._build_sub_configs()
        super().__post_init__(**kwargs)
        _check_limits(self.text_config.to_dict(), "text_config")
        self.tie_word_embeddings = bool(getattr(self.text_config, "tie_word_embeddings", False))
        if self.estimated_parameters() > MAX_PARAMETERS:
            raise ValueError(
                f"RadFMConfig describes about {self.estimated_parameters():.3g} parameters, more than the limit "
                f"{MAX_PARAMETERS:.0e}; check the sizes in text_config/vision_config"
            )

    def _build_sub_configs(self) -> None:
        """Sub-configs from dicts or defaults where transformers (< 5.20) does not do it from ``sub_configs_defaults``."""
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING

        text = self.text_config
        if text is None:
            text = copy.deepcopy(_MEDLLAMA_13B)
        if isinstance(text, dict):
            text = dict(text)
            self.text_config = CONFIG_MAPPING[text.pop("model_type")](**text)
        for name, config_class in (("vision_config", VisionConfig), ("perceiver_config", PerceiverConfig)):
            value = getattr(self, name)
            if value is None or isinstance(value, dict):
                setattr(self, name, config_class(**(value or {})))

    # ---- old names (read-only views) -------------------------------------------------
    @property
    def llm(self) -> dict[str, Any]:
        """The text config as a plain dict (includes ``model_type``)."""
        return self.text_config.to_dict()

    @property
    def vision(self) -> VisionConfig:
        return self.vision_config

    @property
    def perceiver(self) -> PerceiverConfig:
        return self.perceiver_config

    # ---- derived sizes -------------------------------------------------------------
    @property
    def base_vocab_size(self) -> int:
        """``V``: the language model's vocabulary; image tokens start at this id."""
        return int(self.text_config.vocab_size)

    @property
    def hidden_size(self) -> int:
        """Width of the language model's token embeddings."""
        return int(self.text_config.hidden_size)

    @property
    def max_context(self) -> int | None:
        """Longest sequence the language model accepts (``max_position_embeddings``), if known."""
        value = getattr(self.text_config, "max_position_embeddings", None)
        return int(value) if value is not None else None

    @property
    def total_vocab_size(self) -> int:
        """``V`` + ``<image>``, ``</image>`` + 32 ids per image slot."""
        return self.base_vocab_size + 2 + TOKENS_PER_IMAGE * self.max_images

    def estimated_parameters(self) -> int:
        """A quick upper-bound-style parameter count from the sizes alone (for the size check)."""
        text = self.text_config
        h, v = int(text.vocab_size), int(text.hidden_size)
        inter = int(getattr(text, "intermediate_size", None) or 4 * v)
        layers = int(getattr(text, "num_hidden_layers", None) or 1)
        llm = 2 * h * v + layers * (4 * v * v + 3 * v * inter)
        vis = self.vision_config
        vision = vis.depth * (4 * vis.dim * vis.dim + 2 * vis.dim * vis.mlp_dim) + vis.patch_dim * vis.dim
        return llm + vision

    def to_dict(self) -> dict[str, Any]:
        """The config as a dict; the text config's ``head_dim`` is left out where it is only derived.

        LLaMA-style configs set ``head_dim = hidden_size // num_attention_heads`` when none is given;
        written out, that derived value would pin the old width when a copy changes ``hidden_size``
        (``to_dict()``, edit, ``RadFMConfig(**d)``). An explicit ``head_dim`` (another value, or a
        family whose default is a fixed number, e.g. Gemma's 256) is kept.

        Returns:
            The dict ``save_pretrained`` writes (``config.json``).
        """
        out = super().to_dict()
        text = out.get("text_config")
        if isinstance(text, dict) and _derived_head_dim(self.text_config):
            text.pop("head_dim", None)
        return out

    # ---- construction --------------------------------------------------------------
    @classmethod
    def preset(cls, name: str, *, vocab_size: int | None = None, **llm_overrides: Any) -> RadFMConfig:
        """A named config: ``"radfm-14b"`` (published sizes), ``"tiny"`` (tests, demos) or ``"cpu-small"`` (benchmarks).

        ``vocab_size`` and any other keyword override entries of the text config.
        """
        if name not in _PRESETS:
            raise ValueError(f"unknown RadFM preset {name!r}; choose from {sorted(_PRESETS)}")
        spec = copy.deepcopy(_PRESETS[name])
        if vocab_size is not None:
            llm_overrides["vocab_size"] = int(vocab_size)
        spec["llm"].update(llm_overrides)
        return cls(text_config=spec["llm"], vision_config=spec["vision"], perceiver_config=spec["perceiver"])

    @classmethod
    def from_json_file(cls, json_file: str | os.PathLike) -> RadFMConfig:
        """Read a ``config.json``; an unreadable, old-format or invalid file is a ``ValueError`` naming the path."""
        path = Path(json_file)
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"cannot read RadFM config {path}: {err}") from err
        check_config_dict(values, path)
        values = {k: v for k, v in values.items() if k not in ("model_type", "transformers_version", "architectures")}
        try:
            return cls(**values)
        except (TypeError, ValueError, KeyError) as err:
            raise ValueError(f"invalid RadFM config {path}: {err}") from err


def check_config_dict(values: Any, path: str | os.PathLike) -> None:
    """Refuse a ``config.json`` that is not a RadFM config of this format, naming ``path`` and the fix."""
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(values).__name__}")
    if values.get("model_type") != "radfm" and any(key in values for key in LEGACY_KEYS):
        raise ValueError(f"{path} is an old-format RadFM model folder (before transformers); convert it: {CONVERTER_HINT}")
    if values.get("model_type") != "radfm":
        raise ValueError(f"{path}: not a RadFM config (model_type is {values.get('model_type')!r}, expected 'radfm')")
