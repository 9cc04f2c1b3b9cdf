"""`radfm preprocess` and the interim quick-start job."""

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


def test_demo_main(capsys, tmp_path):
    from radfm.demo import main

    main(png_dir=str(tmp_path))
    printed = capsys.readouterr().out
    assert printed.count("model input:     shape (3, 512, 512, 4)") == 2
    assert "shape (3, 256, 256, 4)" in printed  # the CT series folder is 3D
    assert len(list(tmp_path.glob("*.png"))) == 3
