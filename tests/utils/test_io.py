import os
import stat

import pytest

from radfm.utils.io import (
    OutputNotRegularFileError,
    atomic_open,
    atomic_path,
    atomic_write_bytes,
    atomic_write_text,
)


def test_write_text_and_bytes_create_parents_and_replace(tmp_path):
    target = tmp_path / "new" / "report.md"
    assert atomic_write_text(target, "first\n") == target
    assert atomic_write_text(target, "second – ü\n") == target
    assert target.read_text(encoding="utf-8") == "second – ü\n"
    blob = tmp_path / "plot.png"
    atomic_write_bytes(blob, b"\x89PNG\x00")
    assert blob.read_bytes() == b"\x89PNG\x00"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["new", "plot.png", "report.md"]  # no temp left


def test_result_has_normal_permissions(tmp_path):
    target = atomic_write_text(tmp_path / "a.txt", "x")
    plain = tmp_path / "b.txt"
    plain.write_text("x")
    assert stat.S_IMODE(target.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)


def test_temp_path_keeps_the_format_suffix(tmp_path):
    with atomic_path(tmp_path / "scan.nii.gz") as temp:
        assert temp.parent == tmp_path and temp.name.startswith(".scan.nii.gz.") and temp.name.endswith(".nii.gz")
        temp.write_bytes(b"data")
    with atomic_path(tmp_path / "middle.png") as temp:
        assert temp.suffix == ".png"
        temp.write_bytes(b"png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["middle.png", "scan.nii.gz"]


@pytest.mark.parametrize("existing", [None, "old content"])
def test_failure_leaves_target_untouched_and_no_temp(tmp_path, existing):
    target = tmp_path / "out.json"
    if existing is not None:
        target.write_text(existing)
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_open(target) as stream:
            stream.write("half")
            raise RuntimeError("boom")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as temp:
            temp.write_text("half")
            raise KeyboardInterrupt
    expected = [] if existing is None else ["out.json"]
    assert sorted(os.listdir(tmp_path)) == expected
    if existing is not None:
        assert target.read_text() == existing


def test_atomic_open_rejects_read_and_append_modes(tmp_path):
    for mode in ("r", "a", "w+"):
        with pytest.raises(ValueError, match="mode"):
            with atomic_open(tmp_path / "x", mode):
                pass
    assert not list(tmp_path.iterdir())


def _special_outputs(tmp_path):
    """(path, kind) of existing outputs that are not regular files."""
    outside = tmp_path / "elsewhere.txt"
    outside.write_text("must stay")
    link = tmp_path / "link.json"
    link.symlink_to(outside)
    dangling = tmp_path / "dangling.json"
    dangling.symlink_to(tmp_path / "nothing_here")
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    folder = tmp_path / "folder.json"
    folder.mkdir()
    return [(link, "a symbolic link"), (dangling, "a symbolic link"), (fifo, "a FIFO"), (folder, "a folder")]


def test_an_output_that_is_not_a_regular_file_is_refused_not_replaced(tmp_path):
    """22-M5: a symlink or special file at --output used to be replaced silently by a regular file."""
    for path, kind in _special_outputs(tmp_path):
        before = os.lstat(path)
        for write in (lambda path=path: atomic_write_text(path, "new"), lambda path=path: atomic_write_bytes(path, b"new")):
            with pytest.raises(OutputNotRegularFileError, match=rf"{path.name}: the output exists and is {kind}.*refusing"):
                write()
        after = os.lstat(path)
        assert (after.st_mode, after.st_ino) == (before.st_mode, before.st_ino)  # untouched
    assert (tmp_path / "elsewhere.txt").read_text() == "must stay"
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no temp file left


def test_an_output_that_becomes_a_symlink_while_writing_is_refused(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(OutputNotRegularFileError, match="symbolic link"):
        with atomic_path(target) as temp:
            temp.write_text("new")
            target.symlink_to(tmp_path / "x")
    assert target.is_symlink() and not [p for p in os.listdir(tmp_path) if p.startswith(".")]


def test_the_refusal_is_one_input_error_line_in_the_cli(tmp_path):
    """Through a real command: `radfm preprocess --png LINK` exits 1 with one line naming the path."""
    import subprocess
    import sys

    import numpy as np
    from PIL import Image

    scan = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(scan)
    link = tmp_path / "out.png"
    link.symlink_to(tmp_path / "x.png")
    result = subprocess.run([sys.executable, "-m", "radfm.cli", "preprocess", str(scan), "--png", str(link)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "out.png: the output exists and is a symbolic link" in lines[0], lines
    assert link.is_symlink() and (tmp_path / "x.png").read_bytes().startswith(b"\x89PNG")
