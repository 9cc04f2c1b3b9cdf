"""RadFM toolkit.

``model, tokenizer, preprocessing = radfm.load("path/to/model_folder")`` is the one way to load
a model (see :func:`radfm.model.loading.load`); ``from radfm import RadFM, RadFMConfig`` gives
the network; ``radfm.transforms`` holds the MONAI preprocessing and imports no model code. Heavy submodules load lazily so that
``import radfm.transforms`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "RadFM": "radfm.model.radfm",
    "RadFMConfig": "radfm.model.config",
    "load": "radfm.model.loading",
    "LoadedModel": "radfm.model.loading",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'radfm' has no attribute {name!r}")
