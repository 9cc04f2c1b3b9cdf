"""The RadFM network: ``RadFM``, ``RadFMConfig``, loading/saving, generation helpers."""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "RadFM": "radfm.model.radfm",
    "RadFMConfig": "radfm.model.config",
    "VisionConfig": "radfm.model.config",
    "PerceiverConfig": "radfm.model.config",
    "load": "radfm.model.loading",
    "LoadedModel": "radfm.model.loading",
    "generate_text": "radfm.model.generation",
    "CheckpointError": "radfm.model.weights",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'radfm.model' has no attribute {name!r}")
