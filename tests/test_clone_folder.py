"""A script beside the clone: the clone's folder, named ``radfm``, must not stand in for the package.

The clone's root ``__init__.py`` makes that folder a regular package that hands ``import radfm`` on
to the installed package (here the worktree's editable install, setuptools' meta-path finder), so
the README's Auto-class snippet runs from the clone's parent folder; with no package installed it
stops with one line naming the folder.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _readme_snippet() -> str:
    """The README's Auto-class snippet, with its clone-relative paths seen from the clone's parent."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    (snippet,) = [block for block in blocks if "AutoModelForImageTextToText.from_pretrained" in block]
    return snippet.replace('"bundles/', '"radfm/bundles/')


def test_the_readme_snippet_runs_from_the_clones_parent_folder(tmp_path):
    (tmp_path / "radfm").symlink_to(REPO, target_is_directory=True)  # a clone named radfm, as `git clone` names it
    script = tmp_path / "snippet.py"
    script.write_text(_readme_snippet() + "\nprint('package:', radfm.__file__)\n", encoding="utf-8")
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "package: " + str(REPO / "radfm" / "__init__.py") in result.stdout
    assert "X-ray" in result.stdout  # the demo model named the modalities


def test_without_an_installed_package_the_clone_is_named_in_one_line(tmp_path):
    (tmp_path / "radfm").symlink_to(REPO, target_is_directory=True)
    # -S: no site-packages, so no installed radfm package anywhere
    result = subprocess.run([sys.executable, "-S", "-c", "import radfm"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == (
        f"ImportError: cannot import the radfm package: the folder {tmp_path / 'radfm'} (the toolkit's clone) "
        "shadows it and no radfm package is installed; install it (pip install -e CLONE) or run from another folder")
