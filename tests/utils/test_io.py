import os
import stat

import pytest

from radfm.utils.io import atomic_open, atomic_path, atomic_write_bytes, atomic_write_text


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
