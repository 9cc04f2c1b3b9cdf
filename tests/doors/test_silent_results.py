"""Results that used to come out without a word now say what happened."""

from __future__ import annotations

import logging

import numpy as np

from radfm.dicom.sr import export_sr, read_sr


def test_export_sr_without_model_warns_about_unknown_identity(ct_series_dir, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        path = export_sr(str(tmp_path / "r.dcm"), str(ct_series_dir), answer="No findings.", prompt="Findings?")
    assert "the model is not identified (version unknown, weights unknown)" in caplog.text
    assert read_sr(path)["device"]  # still written, and says 'unknown' as warned
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        export_sr(str(tmp_path / "s.dcm"), str(ct_series_dir), answer="No findings.", model_version="1.0",
                  weights_hash="ab" * 32)
    assert "not identified" not in caplog.text


def test_tiny_png_upscale_is_logged_with_sizes(tmp_path, caplog):
    from PIL import Image

    from radfm.transforms import preprocess_scan

    Image.fromarray(np.full((1, 1), 128, dtype=np.uint8)).save(tmp_path / "dot.png")
    Image.fromarray(np.zeros((256, 256), dtype=np.uint8)).save(tmp_path / "fine.png")
    with caplog.at_level(logging.WARNING, logger="radfm.transforms"):
        image = preprocess_scan(tmp_path / "dot.png")
    assert tuple(image.shape) == (3, 512, 512, 4)
    assert "dot.png: a 1x1 image was upscaled to 512x512x4" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="radfm.transforms"):
        preprocess_scan(tmp_path / "fine.png")
    assert "upscaled" not in caplog.text
