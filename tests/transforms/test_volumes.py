"""One volume of a 4D NIfTI: the ``[t]`` path suffix (every door that takes a path) and ``radfm generate --volume``."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from radfm.transforms import preprocess_scan
from radfm.transforms.errors import ScanReadError
from radfm.transforms.readers import read_scan, scan_spatial_dims
from radfm.transforms.volumes import split_volume, with_volume


@pytest.fixture
def series(tmp_path):
    """A 4D NIfTI of 3 volumes; volume t holds the value t."""
    path = tmp_path / "series.nii.gz"
    data = np.stack([np.full((16, 16, 8), t, np.float32) for t in range(3)], axis=-1)
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    return path


def test_a_suffix_reads_that_volume(series):
    volume = read_scan(f"{series}[2]")
    assert tuple(volume.shape) == (1, 16, 16, 8) and float(volume.min()) == float(volume.max()) == 2.0
    assert scan_spatial_dims(f"{series}[1]") == 3
    assert tuple(preprocess_scan(f"{series}[0]").shape)[0] == 3  # through the whole preprocessing


def test_without_a_suffix_the_error_says_how_to_pick_one(series):
    with pytest.raises(ScanReadError, match=r"pick one with a \[t\] suffix on the path or the upload's file name, "
                                            r"t from 0 to 2 "
                                            r"\(series.nii.gz\[0\]; radfm generate --volume N\)"):
        read_scan(series)


def test_a_volume_out_of_range_or_on_a_3d_scan_is_refused(series, tmp_path):
    with pytest.raises(ScanReadError,
                       match=r"series.nii.gz\[3\]: image of shape \(16, 16, 8, 3\) has 3 volumes \(0 to 2\)"):
        read_scan(f"{series}[3]")
    flat = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((16, 16, 8), np.float32), np.eye(4)), flat)
    with pytest.raises(ScanReadError, match="has no volumes to pick"):
        read_scan(f"{flat}[0]")


def test_a_file_named_with_brackets_is_that_file(tmp_path):
    named = tmp_path / "odd.nii.gz[1]"
    nib.save(nib.Nifti1Image(np.ones((16, 16, 8), np.float32), np.eye(4)), tmp_path / "odd.nii.gz")
    (tmp_path / "odd.nii.gz").rename(named)
    assert split_volume(named) == (str(named), None)
    assert with_volume("a.nii.gz", 4) == "a.nii.gz[4]" and with_volume("a.nii.gz", None) == "a.nii.gz"


def test_a_manifest_path_with_a_suffix_loads(series, tmp_path):
    from radfm.data.manifest import load_manifest

    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"id": "a", "dataset": "d", "task": "vqa", "instruction": "<image> What?",
                                    "response": "x", "images": [{"path": "series.nii.gz[1]"}]}) + "\n")
    (sample,) = load_manifest(manifest)
    assert float(read_scan(sample.images[0].path).max()) == 1.0


def test_generate_takes_volume_and_the_suffix(series, capsys):
    from radfm.cli import main

    for argv in ([str(series), "--volume", "1"], [f"{series}[2]"]):
        main(["generate", *argv, "--prompt", "What is the modality of <image>?", "--max_new_tokens", "2", "--json"])
        record = json.loads(capsys.readouterr().out)
        assert record["answer"] is not None
