"""Run a callback once a module has been imported, without importing it (standard library only).

``import radfm`` must stay light (``radfm --help`` should not load torch), yet RadFM has to be
registered with transformers' Auto classes before anyone uses them. transformers has no entry
point for third-party models, so :func:`call_after_import` installs a finder on ``sys.meta_path``
that wraps the target's loader: the callback runs right after the target module has executed.

The callback usually imports code that imports the package itself (RadFM's model modules import
transformers), so it must not run while one of the package's own modules is half-imported: a
RadFM module that imports transformers at its top would otherwise be re-entered before its
classes exist. The finder therefore also counts the package's modules being executed and defers
the callback until the outermost one has finished.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import threading
from collections.abc import Callable
from types import ModuleType


class _Watcher(importlib.abc.MetaPathFinder):
    """Finds nothing itself; wraps the loaders of the target module and of the package's modules."""

    def __init__(self, target: str, package: str, callback: Callable[[], None]) -> None:
        self.target = target
        self.package = package
        self.callback = callback
        self.depth = 0  # the package's modules executing right now (all threads: a callback must not re-enter any)
        self.done = False
        self.lock = threading.RLock()

    def _watched(self, fullname: str) -> bool:
        return fullname == self.target or fullname.startswith(self.package + ".")

    def find_spec(self, fullname: str, path=None, target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if self.done or not self._watched(fullname):
            return None
        for finder in sys.meta_path:  # the finders after us, so editable installs keep working
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _WrappedLoader(spec.loader, self, counts=fullname != self.target)
                return spec
        return None

    def maybe_run(self) -> None:
        """Run the callback once the target is imported and none of the package's modules is mid-import."""
        with self.lock:
            if self.done or self.depth or self.target not in sys.modules:
                return
            self.done = True  # before the call: the callback's own imports must not run it again
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        self.callback()


class _WrappedLoader(importlib.abc.Loader):
    """Delegates to the real loader; puts it back on the module so that tools reading ``__loader__`` see it."""

    def __init__(self, loader: importlib.abc.Loader, watcher: _Watcher, counts: bool) -> None:
        self.loader = loader
        self.watcher = watcher
        self.counts = counts

    def __getattr__(self, name: str):
        # get_code, is_package, get_resource_reader ... (runpy's `python -m radfm.cli` asks for get_code)
        return getattr(self.loader, name)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        module.__loader__ = self.loader
        if getattr(module, "__spec__", None) is not None:
            module.__spec__.loader = self.loader
        if self.counts:
            with self.watcher.lock:
                self.watcher.depth += 1
        try:
            self.loader.exec_module(module)
        finally:
            if self.counts:
                with self.watcher.lock:
                    self.watcher.depth -= 1
        self.watcher.maybe_run()


def call_after_import(target: str, package: str, callback: Callable[[], None]) -> None:
    """Call ``callback`` once ``target`` is imported: now if it already is, else right after its import.

    Args:
        target: the module to wait for (e.g. ``"transformers"``).
        package: the calling package (e.g. ``"radfm"``); while one of its modules is executing
            the callback waits, so that it never sees a half-imported module of the package.
        callback: called at most once, with no arguments.
    """
    watcher = _Watcher(target, package, callback)
    if target in sys.modules:
        watcher.maybe_run()
        return
    sys.meta_path.insert(0, watcher)
