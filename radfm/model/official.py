"""The published RadFM checkpoint (``pytorch_model.bin``): key mapping, sizes and loading.

The published file is a plain state dict in the research code's layout; every key is mapped to
ours by the rules below (tested against all 14B keys), unused parts are dropped, and tensors are
assigned one at a time through :mod:`radfm.model.weights`. The model class is passed in, so this
module does not import the network.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from radfm.model.config import PerceiverConfig, RadFMConfig, VisionConfig
from radfm.model.weights import CheckpointError, assign_weights, build_empty, parse_dtype, read_state_dict

# Parts of the published checkpoint that inference never uses.
OFFICIAL_DROPPED = re.compile(
    r"^embedding_layer\.(bert_model\.|bert_projection_fc\.|transformer_decoder|cls_head\.|output_upscaling\.)"
    r"|\.rotary_emb\.inv_freq$"
)
# The published file saves the shared token embedding twice; `embedding_layer.weight` is the
# one the published forward reads, so it is the copy we keep.
OFFICIAL_SHARED_DUPLICATE = "lang_model.model.embed_tokens.weight"
OFFICIAL_SHARED_SOURCE = "embedding_layer.weight"

# (published-key pattern, our key) — applied in order, first match wins.
_OFFICIAL_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(p), r)
    for p, r in [
        (r"^embedding_layer\.weight$", "language_model.model.embed_tokens.weight"),
        (r"^lang_model\.(.*)$", r"language_model.\1"),
        (r"^embedding_layer\.figure_token_weight$", "figure_token_weight"),
        (r"^embedding_layer\.fc\.(weight|bias)$", r"projection.\1"),
        (r"^embedding_layer\.vision_encoder\.to_patch_embedding\.1\.(.*)$", r"vision_encoder.patch_embedding.input_norm.\1"),
        (r"^embedding_layer\.vision_encoder\.to_patch_embedding\.2\.(.*)$", r"vision_encoder.patch_embedding.projection.\1"),
        (r"^embedding_layer\.vision_encoder\.to_patch_embedding\.3\.(.*)$", r"vision_encoder.patch_embedding.output_norm.\1"),
        (r"^embedding_layer\.vision_encoder\.pos_embedding\.row_embed\.(.*)$", r"vision_encoder.position_embedding.row.\1"),
        (r"^embedding_layer\.vision_encoder\.pos_embedding\.col_embed\.(.*)$", r"vision_encoder.position_embedding.col.\1"),
        (r"^embedding_layer\.vision_encoder\.pos_embedding\.dep_embed\.(.*)$", r"vision_encoder.position_embedding.depth.\1"),
        (r"^embedding_layer\.vision_encoder\.transformer\.layers\.(\d+)\.0\.norm\.(.*)$", r"vision_encoder.blocks.\1.attention_norm.\2"),
        (r"^embedding_layer\.vision_encoder\.transformer\.layers\.(\d+)\.0\.fn\.to_qkv\.(.*)$", r"vision_encoder.blocks.\1.attention.qkv.\2"),
        (r"^embedding_layer\.vision_encoder\.transformer\.layers\.(\d+)\.0\.fn\.to_out\.0\.(.*)$", r"vision_encoder.blocks.\1.attention.out.\2"),
        (r"^embedding_layer\.vision_encoder\.transformer\.layers\.(\d+)\.1\.norm\.(.*)$", r"vision_encoder.blocks.\1.mlp_norm.\2"),
        (r"^embedding_layer\.vision_encoder\.transformer\.layers\.(\d+)\.1\.fn\.net\.0\.(.*)$", r"vision_encoder.blocks.\1.mlp.fc1.\2"),
        (r"^embedding_layer\.vision_encoder\.transformer\.layers\.(\d+)\.1\.fn\.net\.3\.(.*)$", r"vision_encoder.blocks.\1.mlp.fc2.\2"),
        (r"^embedding_layer\.perceiver\.latents$", "perceiver.latents"),
        (r"^embedding_layer\.perceiver\.layers\.(\d+)\.0\.(norm_media|norm_latents|to_q|to_kv|to_out)\.(.*)$", r"perceiver.layers.\1.attention.\2.\3"),
        (r"^embedding_layer\.perceiver\.layers\.(\d+)\.1\.0\.(.*)$", r"perceiver.layers.\1.feed_forward.norm.\2"),
        (r"^embedding_layer\.perceiver\.layers\.(\d+)\.1\.1\.(.*)$", r"perceiver.layers.\1.feed_forward.fc1.\2"),
        (r"^embedding_layer\.perceiver\.layers\.(\d+)\.1\.3\.(.*)$", r"perceiver.layers.\1.feed_forward.fc2.\2"),
        (r"^embedding_layer\.perceiver\.norm\.(.*)$", r"perceiver.norm.\1"),
    ]
]


def official_key_to_ours(key: str) -> str | None:
    """Our parameter name for a published key; ``None`` for parts we drop; ``KeyError`` if unknown."""
    if key == OFFICIAL_SHARED_DUPLICATE or OFFICIAL_DROPPED.search(key):
        return None
    for pattern, replacement in _OFFICIAL_RULES:
        if pattern.match(key):
            return pattern.sub(replacement, key)
    raise KeyError(key)


def _read_llm_config(llm_config: str | os.PathLike | dict) -> dict[str, Any]:
    if isinstance(llm_config, dict):
        values = dict(llm_config)
    else:
        path = Path(llm_config)
        if path.is_dir():
            path = path / "config.json"
        try:
            values = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"cannot read the LLM config {path}: {err}") from err
    values.setdefault("model_type", "llama")  # the published checkpoint wraps a LLaMA
    return values


def infer_official_sizes(state: dict[str, torch.Tensor]) -> tuple[VisionConfig, PerceiverConfig]:
    """Vision/perceiver sizes read off the published tensors (head width assumed 64, as published)."""
    prefix = "embedding_layer.vision_encoder."
    try:
        dim = state[prefix + "to_patch_embedding.2.weight"].shape[0]
        inner = state[prefix + "transformer.layers.0.0.fn.to_qkv.weight"].shape[0] // 3
        mlp_dim = state[prefix + "transformer.layers.0.1.fn.net.0.weight"].shape[0]
        tables = tuple(state[prefix + f"pos_embedding.{t}_embed.weight"].shape[0] for t in ("row", "col", "dep"))
        p_inner = state["embedding_layer.perceiver.layers.0.0.to_q.weight"].shape[0]
        p_ff = state["embedding_layer.perceiver.layers.0.1.1.weight"].shape[0]
    except KeyError as err:
        raise CheckpointError(f"not a published RadFM checkpoint: missing {err.args[0]}") from err
    depth = 1 + max(int(m.group(1)) for k in state if (m := re.match(re.escape(prefix) + r"transformer\.layers\.(\d+)\.", k)))
    p_depth = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"embedding_layer\.perceiver\.layers\.(\d+)\.", k)))
    dim_head = 64
    vision = VisionConfig(dim=dim, depth=depth, heads=inner // dim_head, dim_head=dim_head, mlp_dim=mlp_dim, pos_table=tables)
    perceiver = PerceiverConfig(depth=p_depth, heads=p_inner // dim_head, dim_head=dim_head, ff_mult=p_ff // dim)
    return vision, perceiver


def map_official_keys(keys: Iterable[str]) -> tuple[dict[str, str], list[str], list[str]]:
    """(published -> ours for kept keys, dropped keys, unknown keys)."""
    mapping: dict[str, str] = {}
    dropped: list[str] = []
    unknown: list[str] = []
    for key in keys:
        try:
            ours = official_key_to_ours(key)
        except KeyError:
            unknown.append(key)
            continue
        if ours is None:
            dropped.append(key)
        else:
            mapping[key] = ours
    return mapping, dropped, unknown


def load_official(
    model_class: type[nn.Module],
    bin_path: str | os.PathLike,
    *,
    llm_config: str | os.PathLike | dict,
    dtype: torch.dtype | str | None = None,
    device: str | torch.device = "cpu",
    config: RadFMConfig | None = None,
    progress: bool = True,
):
    """``model_class`` (``RadFM``) from the published ``pytorch_model.bin`` (a plain state dict).

    Drops ``bert_model``, ``bert_projection_fc``, ``transformer_decoder*``, ``cls_head``,
    ``output_upscaling`` and ``rotary_emb.inv_freq``; keeps the shared token embedding once.
    Any other unexpected or missing key, or a wrong shape, raises ``CheckpointError`` by name.
    ``dtype`` (e.g. ``torch.bfloat16`` or ``"bfloat16"``) casts tensor by tensor.
    """
    dtype = parse_dtype(dtype)
    state, mapped = read_state_dict(bin_path)
    mapping, _dropped, unknown = map_official_keys(state)
    if unknown:
        raise CheckpointError(
            f"checkpoint {bin_path} has {len(unknown)} unknown key(s) (not part of the published layout): "
            + ", ".join(unknown[:50])
        )
    if config is None:
        vision, perceiver = infer_official_sizes(state)
        config = RadFMConfig(text_config=_read_llm_config(llm_config), vision_config=vision, perceiver_config=perceiver)
    model = build_empty(model_class, config)
    if OFFICIAL_SHARED_SOURCE not in state and OFFICIAL_SHARED_DUPLICATE in state:
        mapping[OFFICIAL_SHARED_DUPLICATE] = "language_model.model.embed_tokens.weight"

    def pairs() -> Iterator[tuple[str, torch.Tensor]]:
        for key, ours in mapping.items():
            yield ours, state[key]  # noqa: F821 (state is deleted only after pairs() is consumed)

    # releasing pages is only safe for tensors that live in the (private, read-only) file mapping
    assign_weights(model, pairs(), source=str(bin_path), dtype=dtype, device=device, release_source=mapped, progress=progress)
    del state
    return model.eval()
