"""`radfm preprocess` (the quick-start job itself is tested in tests/bundles/test_demo.py)."""

from __future__ import annotations

import pytest
from PIL import Image

from radfm.cli import main as radfm_main


def test_preprocess_cli_prints_model_input_and_writes_png(ct_series_dir, tmp_path, capsys):
    png = tmp_path / "out" / "middle.png"
    radfm_main(["preprocess", str(ct_series_dir), "--window", "mediastinum", "--png", str(png)])
    printed = capsys.readouterr().out
    assert "shape (3, 256, 256, 4)" in printed and "torch.float32" in printed
    assert "modality: CT" in printed and "RAS" in printed
    with Image.open(png) as image:
        assert image.size == (256, 256) and image.mode == "RGB"
    assert [p.name for p in png.parent.iterdir()] == ["middle.png"]  # no temp file left behind


def test_preprocess_cli_bad_input_is_a_clean_exit(tmp_path):
    (tmp_path / "x.pdf").write_bytes(b"%PDF")
    with pytest.raises(SystemExit, match="unsupported file type"):
        radfm_main(["preprocess", str(tmp_path / "x.pdf")])
