"""Fixtures for ``radfm batch``: one local Ray (2 CPUs) for the session, and an archive with bad studies mixed in.

The archive is a folder tree of real files (pydicom's 4-slice CT series and MR slice, nibabel's
anatomical NIfTI), generated phantoms (a DICOM CT series and a DX X-ray from
``support.synthetic``, a NIfTI CT and a PNG X-ray from ``radfm.data.phantoms``) and two bad
studies (a DICOM file cut after its preamble, a ``.nii.gz`` that is not gzip), plus an RT plan (DICOM
without pixels: not a study). Every test uses the shipped demo model (``bundles/radfm/models/demo``).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # offline: Ray never reports usage

RULES = [{"name": "ct", "modalities": ["CT"], "prompt": "<image> Describe the findings of this CT scan.",
          "min_instances": 2},
         {"name": "mr", "modalities": ["MR"], "prompt": "What is the modality of the input scan <image>?"},
         {"name": "chest-xray", "modalities": ["CR", "DX"], "prompt": "<image> Describe the findings of this chest X-ray."}]


@pytest.fixture(scope="session")
def ray_session():
    """The session's local Ray: 2 CPUs, no dashboard, a small object store (the machine is shared)."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024**2,
             log_to_driver=False)  # "local": never join another Ray running on the machine
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def _pydicom_file(name: str) -> Path:
    import pydicom.data

    return Path(pydicom.data.get_testdata_file(name, download=False))  # tests never download


@pytest.fixture(scope="session")
def archive(tmp_path_factory) -> dict:
    """``{"root", "rules", "good": {name: what}, "bad": [names]}`` for the folder tree described above."""
    from nibabel.testing import data_path
    from support.synthetic import write_chest_xray, write_ct_series

    from radfm.data.phantoms import write_nifti_gz, write_png

    root = tmp_path_factory.mktemp("archive")
    ct2 = _pydicom_file("CT_small.dcm").parent / "dicomdirtests" / "77654033" / "CT2"
    shutil.copytree(ct2, root / "pydicom_ct" / "CT2")  # a real 4-slice CT series
    shutil.copy(_pydicom_file("MR_small.dcm"), root / "pydicom_mr.dcm")  # a real MR slice
    (root / "plan").mkdir()
    shutil.copy(_pydicom_file("rtplan.dcm"), root / "plan" / "rtplan.dcm")  # DICOM without pixels: not a study
    shutil.copy(Path(data_path) / "anatomical.nii", root / "nibabel_anatomical.nii")  # a real NIfTI
    write_ct_series(root / "phantom_ct", slices=8, size=32)
    write_chest_xray(root / "phantom_dx", size=64)
    rng = np.random.default_rng(0)
    (root / "phantoms").mkdir()
    write_nifti_gz(root / "phantoms" / "ct_volume.nii.gz", rng.random((32, 32, 8), dtype=np.float32))
    write_png(root / "phantoms" / "xray.png", (rng.random((48, 48)) * 255).astype(np.uint8))
    # 96 x 96 x 48 float32 = 1.7 MiB decoded: over a read worker's 1 MiB share of a 2 MiB budget (2 workers)
    write_nifti_gz(root / "phantoms" / "large_ct.nii.gz", rng.random((96, 96, 48), dtype=np.float32))
    (root / "bad").mkdir()
    (root / "bad" / "cut.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10")  # header cut short
    (root / "bad" / "fake.nii.gz").write_bytes(b"this is not a NIfTI volume\n" * 20)
    rules = root.parent / f"{root.name}-rules.json"
    rules.write_text(json.dumps({"rules": RULES}), encoding="utf-8")
    return {"root": root, "rules": rules,
            "dicom_series": 3,  # pydicom CT2, the phantom CT, the phantom DX (the single MR slice too: 4)
            "files": ["nibabel_anatomical.nii", "phantoms/ct_volume.nii.gz", "phantoms/xray.png"],
            "bad": ["bad/cut.dcm", "bad/fake.nii.gz"], "large": "phantoms/large_ct.nii.gz"}


@pytest.fixture(scope="session")
def phantom_manifest(tmp_path_factory) -> Path:
    """A manifest of 120 cases over four phantom scans (CT NIfTI, X-ray PNG): long enough to kill a run mid-way."""
    from radfm.data.phantoms import write_nifti_gz, write_png

    folder = tmp_path_factory.mktemp("manifest")
    rng = np.random.default_rng(1)
    scans = []
    for i in range(2):
        write_nifti_gz(folder / f"ct{i}.nii.gz", rng.random((32, 32, 8), dtype=np.float32))
        write_png(folder / f"xray{i}.png", (rng.random((48, 48)) * 255).astype(np.uint8))
        scans += [f"ct{i}.nii.gz", f"xray{i}.png"]
    lines = [json.dumps({"id": f"case{i:03d}", "dataset": "phantoms", "task": "report",
                         "instruction": "<image> Describe the findings.", "response": "", "split": "test",
                         "images": [{"path": scans[i % len(scans)]}]}) for i in range(120)]
    manifest = folder / "cases.jsonl"
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return manifest
