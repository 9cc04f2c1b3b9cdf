"""Where the installed package keeps its data: the MONAI bundles (``bundles/`` in the checkout).

``setup.py`` installs ``bundles/`` as the data package ``radfm.bundles``, so the same lookup
works from a checkout (editable install) and from an installed wheel, with no paths counted
up from ``__file__``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def bundles_dir() -> Path:
    """The folder holding ``radfm/`` and ``radfm_classification/`` (the MONAI bundles)."""
    folder = Path(str(resources.files("radfm.bundles")))
    if not (folder / "radfm" / "configs").is_dir():
        raise FileNotFoundError(
            f"the RadFM bundles are missing from {folder}; reinstall the package (pip install radfm-toolkit)"
        )
    return folder


def bundle_dir(name: str = "radfm") -> Path:
    """One bundle's root folder, e.g. ``bundle_dir("radfm") / "configs" / "inference.json"``."""
    folder = bundles_dir() / name
    if not folder.is_dir():
        available = sorted(p.name for p in bundles_dir().iterdir() if (p / "configs").is_dir())
        raise FileNotFoundError(f"no bundle {name!r}; the package ships {available}")
    return folder
