"""`radfm export-sr` is quiet: highdicom's INFO lines ("copy attributes of module ...") stay out of stderr."""

from __future__ import annotations

import logging

from radfm.cli import main


def test_export_sr_does_not_log_highdicom_info(ct_series_dir, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    main(["export-sr", str(tmp_path / "report.dcm"), str(ct_series_dir), "--answer", "No finding.",
          "--prompt", "<image> Findings?", "--model_name", "RadFM-test"])
    assert (tmp_path / "report.dcm").is_file()
    noise = [r.getMessage() for r in caplog.records if r.name.startswith("highdicom") and r.levelno < logging.WARNING]
    assert noise == []
    assert logging.getLogger("highdicom").level == logging.NOTSET  # restored after the call
