"""The clone's own folder, imported as ``radfm`` by a script that sits beside the clone.

Why this file exists: a clone named ``radfm`` in a folder on ``sys.path`` (a script's own folder,
the current folder of ``python -m``) would otherwise be imported as a namespace package. Python's
path finder returns a namespace package before setuptools' editable-install finder (at the end of
``sys.meta_path``) is ever asked, so ``import radfm`` ran nothing, RadFM was never registered with
transformers, and ``AutoModelForImageTextToText`` blamed the transformers version. As a regular
package this folder is found first and hands the import on to the installed ``radfm`` package
(editable or not); with none installed it stops with one line naming this folder. Under any other
name (the clone's folder called something else) it is an empty package.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from importlib.machinery import ModuleSpec, PathFinder


def _installed_spec(name: str) -> ModuleSpec | None:
    """The spec the import system would give ``name`` if this clone's parent folder were not on ``sys.path``."""
    this_file = os.path.realpath(__file__)
    # the folder on sys.path that holds the clone as found (the clone itself may be a link)
    parent = os.path.realpath(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = [entry for entry in sys.path if os.path.realpath(entry or os.getcwd()) != parent]
    for finder in sys.meta_path:
        if finder is PathFinder:
            spec = PathFinder.find_spec(name, path)
        else:
            find_spec = getattr(finder, "find_spec", None)
            spec = find_spec(name, None) if find_spec is not None else None
        # a namespace portion (no origin) would run nothing again; this file is the shadow itself
        if spec is not None and spec.origin and os.path.realpath(spec.origin) != this_file:
            return spec
    return None


if __name__ == "radfm":
    _spec = _installed_spec(__name__)
    if _spec is None or _spec.loader is None:
        raise ImportError(f"cannot import the radfm package: the folder {os.path.dirname(os.path.abspath(__file__))} "
                          "(the toolkit's clone) shadows it and no radfm package is installed; install it "
                          "(pip install -e CLONE) or run from another folder", name="radfm")
    _module = importlib.util.module_from_spec(_spec)
    sys.modules[__name__] = _module  # the import statement returns what sys.modules holds after this file ran
    _spec.loader.exec_module(_module)
