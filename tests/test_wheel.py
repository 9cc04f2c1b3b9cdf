"""The built wheel carries the bundles and the demo model: installed outside the checkout, the demo runs.

Builds the wheel from a copy of the package sources (offline: no build isolation), installs it
with ``--no-deps`` into a temporary target, and runs ``python -m radfm.demo`` from another
folder with only that target in front of the test environment's dependencies.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("setup.py", "README.md", "radfm", "transforms", "bundles")


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    source = work / "src"
    source.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(ROOT / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    # -v: setuptools' own warnings come through (kept for test_the_build_is_quiet)
    build = subprocess.run([*pip[:-1], "wheel", "-v", "--no-deps", "--no-build-isolation", "-w", str(work / "dist"),
                            str(source)], cwd=work, timeout=300, capture_output=True, text=True)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    (work / "build.log").write_text(build.stdout + build.stderr)
    wheels = list((work / "dist").glob("radfm_toolkit-*.whl"))
    assert len(wheels) == 1, wheels
    target = work / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheels[0])], check=True, timeout=300)
    return target


def _run_from_elsewhere(target: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(target), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_wheel_holds_the_bundles_and_the_demo_model(installed_wheel):
    bundles = installed_wheel / "radfm" / "bundles"
    for relative in ("radfm/configs/inference.json", "radfm/configs/metadata.json", "radfm/sample_data/truth.json",
                     "radfm_classification/configs/train.json"):
        assert (bundles / relative).is_file(), relative
    assert list((bundles / "radfm" / "models").rglob("*.safetensors")) or list((bundles / "radfm" / "models").rglob("*.pt"))


def test_installed_wheel_runs_the_demo_from_another_folder(installed_wheel, tmp_path):
    probe = _run_from_elsewhere(installed_wheel, tmp_path, "-c",
                                "import radfm, radfm.transforms; from radfm.utils.resources import bundle_dir; "
                                "print(radfm.__file__); print(radfm.transforms.__file__); print(bundle_dir('radfm'))")
    assert probe.returncode == 0, probe.stderr
    for line in probe.stdout.split():
        assert Path(line).resolve().is_relative_to(installed_wheel.resolve()), f"{line} is not from the installed wheel"
    demo = _run_from_elsewhere(installed_wheel, tmp_path, "-m", "radfm.demo")
    assert demo.returncode == 0, demo.stderr[-3000:]
    assert "X-ray and CT" in demo.stdout  # the two-scan prompt's answer
    assert not (tmp_path / "radfm").exists()  # nothing was unpacked into the working folder


def test_wheel_has_no_stray_top_level_packages(installed_wheel):
    top = {p.name for p in installed_wheel.iterdir() if not p.name.endswith((".dist-info", ".data"))}
    assert top <= {"radfm", "bin"}, top
    wheel = next(installed_wheel.parent.glob("dist/*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert not any(name.startswith(("tests/", "scripts/")) for name in names)


def test_the_build_is_quiet(installed_wheel):
    """Every data folder is declared (setup.py): no "Package would be ignored" warning per folder."""
    log = (installed_wheel.parent / "build.log").read_text()
    assert "Successfully built" in log or "Stored in directory" in log, log[-2000:]  # the log is the build's
    ignored = re.findall(r"'([\w.]+)' as an importable package", log)
    assert not ignored, f"setuptools warns that these folders would be ignored: {ignored}"


def test_memory_plan_from_the_wheel_outside_the_checkout(installed_wheel, tmp_path):
    """`radfm info --plan` reads the 14B key list shipped in the package, not a file of the checkout."""
    plan = _run_from_elsewhere(installed_wheel, tmp_path, "-m", "radfm.cli", "info", "--preset", "radfm-14b", "--plan")
    assert plan.returncode == 0, plan.stderr[-2000:]
    assert "| language_model | 13,015,864,320 |" in plan.stdout
    assert "RadFM-14B memory plan" in plan.stdout and "| bf16, device_map=auto, 2×24 GiB GPUs | yes |" in plan.stdout


MACHINE_PATH = re.compile(r"""["'\s=](/work/|/root/|/home/\w|/Users/\w|/mnt/\w)""")


def test_no_machine_paths_in_the_shipped_code():
    """No absolute path of a developer's machine in radfm/, transforms/, bundles/ or scripts/."""
    found = []
    for folder in ("radfm", "transforms", "bundles", "scripts"):
        for path in sorted((ROOT / folder).rglob("*")):
            if path.suffix not in (".py", ".json", ".sh", ".md", ".yml", ".yaml", ".conf", ".js", ".html"):
                continue
            for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
                if MACHINE_PATH.search(line):
                    found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:120]}")
    assert not found, "\n".join(found)
