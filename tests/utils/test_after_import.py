"""``call_after_import``: the callback runs once, after the target's import, never inside a half-imported module."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

# a package `pkg` whose `pkg.model` imports `target` at its top, and a callback that needs
# `pkg.model.Model` (as RadFM's registration needs the model classes): run early, it would fail
FILES = {
    "target.py": "VALUE = 1\n",
    "pkg/__init__.py": textwrap.dedent("""
        import importlib
        from radfm.utils.after_import import call_after_import
        calls = []
        def _callback():
            calls.append(importlib.import_module("pkg.model").Model)
        call_after_import("target", __name__, _callback)
    """),
    "pkg/model.py": "import target\n\nclass Model:\n    pass\n",
}


def _run(tmp_path: Path, script: str) -> str:
    for name, text in FILES.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text, encoding="utf-8")
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def test_runs_right_after_the_target_is_imported(tmp_path):
    out = _run(tmp_path, """
        import pkg
        print(len(pkg.calls), end=" ")
        import target
        print(len(pkg.calls), end=" ")
        import target
        print(len(pkg.calls), pkg.calls[0].__name__)
    """)
    assert out == "0 1 1 Model"


def test_runs_at_once_when_the_target_is_already_imported(tmp_path):
    assert _run(tmp_path, "import target, pkg\nprint(len(pkg.calls))") == "1"


def test_waits_for_the_packages_own_module_that_imported_the_target(tmp_path):
    # pkg.model imports target before it defines Model: the callback runs once pkg.model is complete
    out = _run(tmp_path, "import pkg, pkg.model\nprint(len(pkg.calls), pkg.calls[0] is pkg.model.Model)")
    assert out == "1 True"
