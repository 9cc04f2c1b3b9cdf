"""RadFM toolkit.

``from radfm import RadFM, RadFMConfig`` gives the model; ``radfm.transforms`` holds the
MONAI preprocessing and imports no model code. Heavy submodules load lazily so that
``import radfm.transforms`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "RadFM": "radfm.model.radfm",
    "RadFMConfig": "radfm.model.config",
    "create_model_and_transforms": "radfm.model.factory",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'radfm' has no attribute {name!r}")
