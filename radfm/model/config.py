"""``RadFMConfig``: sizes of the vision encoder, perceiver and the wrapped language model.

The language model is described by a plain Hugging Face config dict (with ``model_type``),
so any decoder-only causal LM that ``AutoModelForCausalLM.from_config`` can build fits.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from radfm.model.tokenizer import DEFAULT_MAX_IMAGES, TOKENS_PER_IMAGE
from radfm.utils.io import atomic_write_text


@dataclass
class VisionConfig:
    """3D ViT sizes. ``pos_table`` = entries of the (row, column, depth) position tables."""

    dim: int = 768
    depth: int = 12
    heads: int = 8
    dim_head: int = 64
    mlp_dim: int = 2048
    patch_size: int = 32
    frame_patch_size: int = 4
    pos_table: tuple[int, int, int] = (16, 16, 128)
    channels: int = 3
    dropout: float = 0.1
    emb_dropout: float = 0.1

    def __post_init__(self) -> None:
        self.pos_table = tuple(int(n) for n in self.pos_table)  # JSON gives a list
        if self.dim % 3:
            raise ValueError(f"vision.dim must be divisible by 3 (three position tables), got {self.dim}")

    @property
    def patch_dim(self) -> int:
        """Values in one flattened patch: ``patch² × frame_patch × channels``."""
        return self.patch_size * self.patch_size * self.frame_patch_size * self.channels


@dataclass
class PerceiverConfig:
    """Perceiver resampler sizes; ``num_latents`` must equal the 32 tokens per image."""

    depth: int = 6
    heads: int = 8
    dim_head: int = 64
    num_latents: int = TOKENS_PER_IMAGE
    ff_mult: int = 4

    def __post_init__(self) -> None:
        if self.num_latents != TOKENS_PER_IMAGE:
            raise ValueError(
                f"perceiver.num_latents must be {TOKENS_PER_IMAGE} (the image-token scheme has "
                f"{TOKENS_PER_IMAGE} tokens per image), got {self.num_latents}"
            )


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
}


@dataclass
class RadFMConfig:
    """Whole-model config. ``llm`` is a Hugging Face config dict that includes ``model_type``."""

    llm: dict[str, Any] = field(default_factory=lambda: copy.deepcopy(_MEDLLAMA_13B))
    vision: VisionConfig = field(default_factory=VisionConfig)
    perceiver: PerceiverConfig = field(default_factory=PerceiverConfig)
    max_images: int = DEFAULT_MAX_IMAGES

    def __post_init__(self) -> None:
        if isinstance(self.vision, dict):
            self.vision = VisionConfig(**self.vision)
        if isinstance(self.perceiver, dict):
            self.perceiver = PerceiverConfig(**self.perceiver)
        if "model_type" not in self.llm:
            raise ValueError("RadFMConfig.llm must include 'model_type' (e.g. 'llama', 'qwen2', 'mistral')")
        for key in ("vocab_size", "hidden_size"):
            if key not in self.llm:
                raise ValueError(f"RadFMConfig.llm is missing {key!r}")

    # ---- derived sizes -------------------------------------------------------------
    @property
    def base_vocab_size(self) -> int:
        """``V``: the language model's vocabulary; image tokens start at this id."""
        return int(self.llm["vocab_size"])

    @property
    def hidden_size(self) -> int:
        """Width of the language model's token embeddings."""
        return int(self.llm["hidden_size"])

    @property
    def max_context(self) -> int | None:
        """Longest sequence the language model accepts (``max_position_embeddings``), if known."""
        value = self.llm.get("max_position_embeddings")
        return int(value) if value is not None else None

    @property
    def total_vocab_size(self) -> int:
        """``V`` + ``<image>``, ``</image>`` + 32 ids per image slot."""
        return self.base_vocab_size + 2 + TOKENS_PER_IMAGE * self.max_images

    # ---- construction --------------------------------------------------------------
    @classmethod
    def preset(cls, name: str, *, vocab_size: int | None = None, **llm_overrides: Any) -> RadFMConfig:
        """A named config: ``"radfm-14b"`` (published sizes) or ``"tiny"`` (tests, demos).

        ``vocab_size`` and any other keyword override entries of the LLM config dict.
        """
        if name not in _PRESETS:
            raise ValueError(f"unknown RadFM preset {name!r}; choose from {sorted(_PRESETS)}")
        spec = copy.deepcopy(_PRESETS[name])
        if vocab_size is not None:
            llm_overrides["vocab_size"] = int(vocab_size)
        spec["llm"].update(llm_overrides)
        return cls(llm=spec["llm"], vision=VisionConfig(**spec["vision"]), perceiver=PerceiverConfig(**spec["perceiver"]))

    def build_llm_config(self):
        """The ``transformers`` config object for the language model."""
        from transformers import AutoConfig

        values = {k: v for k, v in self.llm.items() if k not in ("model_type", "transformers_version")}
        return AutoConfig.for_model(self.llm["model_type"], **values)

    # ---- JSON ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict: ``{"llm", "vision", "perceiver", "max_images"}``."""
        out = asdict(self)
        out["vision"]["pos_table"] = list(self.vision.pos_table)
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RadFMConfig:
        """The inverse of :meth:`to_dict`; an unknown field is a ``ValueError`` naming it."""
        known = {"llm", "vision", "perceiver", "max_images"}
        unknown = sorted(set(values) - known - {"radfm_version"})
        if unknown:
            raise ValueError(f"unknown RadFMConfig field(s): {unknown}; expected {sorted(known)}")
        return cls(**{k: copy.deepcopy(v) for k, v in values.items() if k in known})

    def to_json_string(self) -> str:
        """:meth:`to_dict` as indented, key-sorted JSON."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def to_json_file(self, path: str | os.PathLike) -> None:
        """Write atomically (temp file then rename)."""
        atomic_write_text(path, self.to_json_string() + "\n")

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> RadFMConfig:
        """Read a ``config.json``; unreadable or invalid files raise ``ValueError`` naming the path."""
        path = Path(path)
        try:
            values = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"cannot read RadFM config {path}: {err}") from err
        try:
            return cls.from_dict(values)
        except (TypeError, ValueError) as err:
            raise ValueError(f"invalid RadFM config {path}: {err}") from err
