"""RadFM toolkit.

``model, processor = radfm.load("path/to/model_folder")`` is the one way to load a model (see
:func:`radfm.model.loading.load`). ``from radfm import RadFMForConditionalGeneration, RadFMConfig, RadFMProcessor`` gives the
transformers classes; importing ``radfm`` registers them with transformers' Auto classes
(``AutoConfig``, ``AutoModelForImageTextToText``, ``AutoProcessor``) as soon as transformers is
imported (before or after ``radfm``; torch is not loaded until then), so a model folder loads with
``AutoProcessor.from_pretrained(d)`` / ``AutoModelForImageTextToText.from_pretrained(d)``.
``radfm.transforms`` holds the MONAI preprocessing and imports no model code.
"""

from __future__ import annotations

import importlib
from typing import Any

from radfm.utils import patient_data as _patient_data

__version__ = "0.1.0"

_LAZY = {
    "RadFMForConditionalGeneration": "radfm.model.radfm",
    "RadFMConfig": "radfm.model.config",
    "RadFMProcessor": "radfm.model.processing",
    "RadFMImageProcessor": "radfm.model.processing",
    "GridMismatchError": "radfm.model.processing",
    "load": "radfm.model.loading",
    "LoadedModel": "radfm.model.loading",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'radfm' has no attribute {name!r}")


def _register_with_transformers() -> None:
    """Make ``model_type: radfm`` known to transformers' Auto classes, once transformers is imported.

    Registering imports torch and transformers (seconds), so it waits until transformers is
    imported by anyone (now, if it already is); ``radfm --help`` and usage errors stay fast, and a
    transforms-only install never pays for it.
    """
    from radfm.utils.after_import import call_after_import

    call_after_import("transformers", __name__, lambda: importlib.import_module("radfm.model.auto"))


_register_with_transformers()
_patient_data.install()  # no PatientName/PatientID/birth date in any log or warning (radfm.utils.patient_data)
