"""The RadFM network as a transformers model: config, model, processor, loading.

Once transformers is imported (before or after ``radfm``), ``radfm`` is registered with
transformers' ``AutoConfig``, ``AutoModelForImageTextToText``, ``AutoImageProcessor`` and
``AutoProcessor`` (see :mod:`radfm.model.auto` and :func:`radfm.utils.after_import.call_after_import`),
so ``AutoProcessor.from_pretrained(d)`` and ``AutoModelForImageTextToText.from_pretrained(d)``
load a RadFM folder.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "RadFMForConditionalGeneration": "radfm.model.radfm",
    "RadFMConfig": "radfm.model.config",
    "VisionConfig": "radfm.model.config",
    "PerceiverConfig": "radfm.model.config",
    "RadFMProcessor": "radfm.model.processing",
    "RadFMImageProcessor": "radfm.model.processing",
    "load": "radfm.model.loading",
    "LoadedModel": "radfm.model.loading",
    "GridMismatchError": "radfm.model.processing",
    "CheckpointError": "radfm.model.weights",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'radfm.model' has no attribute {name!r}")
