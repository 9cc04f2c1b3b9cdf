"""The bad-input sweep cannot rot: a subset runs here, and docs/bad_input_sweep.md lists every case."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sweep():
    spec = importlib.util.spec_from_file_location("bad_input_sweep", REPO / "scripts" / "bad_input_sweep.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    module.CASE_TIMEOUT_S = 120
    return module


CLI_SUBSET = {"misspelled --limt", "manifest not UTF-8", "JSON list as prediction", "table with duplicate ids",
              "output folder locked by a running evaluate", "num_beams 96",
              "hostile header bom.nrrd (22-H1)", "hostile header colon.mhd (22-H1)", "a FIFO named .nrrd",
              "deflated DICOM: 0.5 MB inflating to 512 MiB (22-H2)", "--png is a symlink (22-M5)",
              "--per_task 0 (22-L2)", "image is a host file, not a scan (22-M4)",
              "manifest: DICOM folder holding a link out of the root (22-M4)"}
HTTP_SUBSET = {"option do_sample=true, temperature=inf", "300-character file name", "DNS rebinding Host",
               "slow upload body", "rating app /case/1/image/..%2f..%2f..%2fetc%2fpasswd.png",
               "hostile header non_ascii_field.nhdr (22-H1)", "deflated DICOM: 0.5 MB inflating to 512 MiB (22-H2)",
               "rating app: planted header long_comments.nhdr (22-H1)", "rating app: planted header colon.mhd (22-H1)"}


def test_sweep_subset_holds(sweep, tmp_path):
    results, _, _ = sweep.run_sweep(cli_filter=lambda case: case.what in CLI_SUBSET,
                                    http_filter=lambda case: case.what in HTTP_SUBSET,
                                    progress=lambda line: None, work=tmp_path / "w")
    assert len(results) == len(CLI_SUBSET) + len(HTTP_SUBSET)
    bad = [(r.what, r.got, r.why, r.message) for r in results if not r.ok]
    assert not bad
    # every CLI failure is one line naming what was wrong
    assert all(r.message.startswith("radfm ") for r in results if r.area == "cli")


def test_the_table_lists_every_case(sweep, tmp_path):
    work = tmp_path / "w"
    sweep.make_workspace(work)
    expected = (len(sweep.cli_cases()) + len(sweep.service_cases("http://127.0.0.1:1", 1, work))
                + len(sweep.traversal_cases(1, 2, "")) + len(sweep.rating_cases(2, "")))
    table = (REPO / "docs" / "bad_input_sweep.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| \d+ \|", table, flags=re.MULTILINE)
    assert len(rows) == expected, "docs/bad_input_sweep.md is stale: rerun python scripts/bad_input_sweep.py"
    assert expected >= 81
