"""What a newcomer's mistakes cost on the documented entry point ``python -m monai.bundle run``: one line each.

Each case runs the RadFM bundle's inference.json in a subprocess, as the bundle README shows it,
and checks the exit status and that stderr ends in one line naming the problem (no traceback).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from .conftest import RADFM_BUNDLE, REPO


def _bundle_run(cwd: Path, *overrides: str, bundle: Path = RADFM_BUNDLE) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(bundle / "configs" / "inference.json"),
               "--meta_file", str(bundle / "configs" / "metadata.json"), "--bundle_root", str(bundle),
               "--max_new_tokens", "2", *overrides]
    env = {k: v for k, v in os.environ.items() if k != "RADFM_DEBUG"}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _last_line(result: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return result.stderr.strip().splitlines()[-1]


def test_a_misspelled_override_is_refused_with_the_nearest_key(tmp_path):
    result = _bundle_run(tmp_path, "--case", "[{'prompt': 'Is this a CT? <image>', 'images': ['ct.nii.gz']}]")
    assert result.returncode != 0 and "  A: " not in result.stdout  # the default cases were not answered
    assert _last_line(result).startswith("monai.bundle run: error: unknown config key --case")
    assert "did you mean --cases?" in _last_line(result)


def test_relative_scan_paths_resolve_against_the_current_folder(tmp_path):
    shutil.copy(RADFM_BUNDLE / "sample_data" / "ct_phantom.nii.gz", tmp_path / "my_ct.nii.gz")
    cases = "[{'prompt': 'What is the modality of the input scan <image>?', 'images': ['my_ct.nii.gz']}]"
    result = _bundle_run(tmp_path, "--cases", cases)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("  A: ") == 1
    missing = _bundle_run(tmp_path, "--cases", cases.replace("my_ct", "no_such_scan"))
    assert missing.returncode != 0
    assert f"image file not found: {tmp_path / 'no_such_scan.nii.gz'}" in _last_line(missing)


def test_an_unreadable_scan_ends_in_the_one_line_scan_error(tmp_path):
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4, 3), np.float32), np.eye(4)), tmp_path / "series.nii.gz")
    result = _bundle_run(tmp_path, "--cases", "[{'prompt': '<image> Is this a CT?', 'images': ['series.nii.gz']}]")
    assert result.returncode != 0
    line = _last_line(result)
    assert "series.nii.gz: 4D image of shape (8, 8, 4, 3)" in line and "RADFM_DEBUG=1" in line


def test_radfm_debug_keeps_the_traceback(tmp_path, monkeypatch):
    monkeypatch.setenv("RADFM_DEBUG", "1")
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(RADFM_BUNDLE / "configs" / "inference.json"),
               "--meta_file", str(RADFM_BUNDLE / "configs" / "metadata.json"), "--bundle_root", str(RADFM_BUNDLE), "--casez", "[]"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "Traceback" in result.stderr and "did you mean --cases?" in result.stderr


def test_a_clone_in_the_current_folder_is_named_in_one_line(tmp_path):
    """``radfm/`` (the clone) in the current folder: Python may import it instead of the installed package."""
    (tmp_path / "radfm").symlink_to(REPO, target_is_directory=True)
    probe = subprocess.run([sys.executable, "-c", "import importlib.util; print(importlib.util.find_spec('radfm').origin)"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=60)
    shadowed = probe.stdout.strip() == "None"  # an editable install is shadowed; a site-packages one is not
    result = _bundle_run(tmp_path, "--cases", "[]")
    if shadowed:
        assert result.returncode != 0
        assert _last_line(result) == (f"monai.bundle run: error: cannot import the radfm package: the folder "
                                      f"{tmp_path / 'radfm'} shadows it (Python imports from the current folder "
                                      "first); run from another folder")
    else:
        assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.parametrize("path", ["bundles/radfm/runs/instruct/model/model.safetensors", "bundles/radfm/eval/metrics.csv",
                                  "bundles/radfm_classification/runs/classification/mlruns.db",
                                  "bundles/radfm/data/train.jsonl", "mlruns.db"])
def test_what_the_bundle_docs_write_is_ignored_by_git(path):
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    result = subprocess.run(["git", "-C", str(REPO), "check-ignore", "--no-index", "-q", path], timeout=60)
    assert result.returncode == 0, f"{path} would show up as untracked after following the bundle docs"
