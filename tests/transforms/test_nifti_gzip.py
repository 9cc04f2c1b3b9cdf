"""The ISA-L read of .nii.gz data blocks: the same array as nibabel's own read, or a clear error."""

from __future__ import annotations

import gzip
import os

import nibabel as nib
import numpy as np
import pytest

from radfm.transforms import ScanReadError, read_scan, readers

pytest.importorskip("isal")


def _nibabel_data(name: str) -> str:
    return os.path.join(os.path.dirname(nib.__file__), "tests", "data", name)


def _shipped_and_generated(tmp_path):
    """Real .nii.gz files from nibabel and nilearn plus generated big-endian / scaled / 2D ones."""
    from nilearn.datasets import load_mni152_template

    paths = [_nibabel_data("standard.nii.gz"), _nibabel_data("example_nifti2.nii.gz")]
    mni = tmp_path / "mni.nii.gz"
    nib.save(load_mni152_template(), mni)  # uint8 with scl_slope 1/255
    paths.append(str(mni))
    rng = np.random.default_rng(3)
    big_endian = rng.integers(-1000, 3000, (40, 30, 12)).astype(">i2")
    image = nib.Nifti1Image(big_endian, np.diag([0.8, 0.8, 2.5, 1.0]))
    nib.save(image, tmp_path / "big_endian.nii.gz")
    scaled = nib.Nifti1Image(rng.integers(0, 4000, (33, 17, 9)).astype(np.uint16), np.eye(4))
    scaled.header.set_slope_inter(0.25, -10.0)
    nib.save(scaled, tmp_path / "scaled.nii.gz")
    nib.save(nib.Nifti1Image(rng.random((50, 70)).astype(np.float32), np.eye(4)), tmp_path / "plane.nii.gz")
    return paths + [str(tmp_path / n) for n in ("big_endian.nii.gz", "scaled.nii.gz", "plane.nii.gz")]


def test_fast_read_equals_nibabel_on_real_and_generated_files(tmp_path):
    for path in _shipped_and_generated(tmp_path):
        proxy = nib.load(path).dataobj
        fast = readers._inflate_gzip_block(proxy)
        assert fast is not None, path
        expected = np.asanyarray(proxy.get_unscaled())
        assert fast.dtype == expected.dtype and fast.shape == expected.shape, path
        np.testing.assert_array_equal(fast, expected, err_msg=path)


def test_read_scan_is_the_same_with_and_without_isal(tmp_path, monkeypatch):
    paths = [p for p in _shipped_and_generated(tmp_path) if "nifti2" not in p]  # that one is 4D: refused
    fast = [read_scan(p, defer_rescale=True) for p in paths]
    monkeypatch.setattr(readers, "_igzip", None)  # nibabel's zlib read
    for path, image in zip(paths, fast):
        plain = read_scan(path, defer_rescale=True)
        assert plain.dtype == image.dtype, path
        np.testing.assert_array_equal(plain.numpy(), image.numpy(), err_msg=path)
        assert plain.meta.get("rescale") == image.meta.get("rescale"), path


def test_uncompressed_nifti_is_left_to_nibabel(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4), np.int16), np.eye(4)), tmp_path / "plain.nii")
    assert readers._inflate_gzip_block(nib.load(tmp_path / "plain.nii").dataobj) is None


def test_truncated_gzip_names_the_file(tmp_path):
    volume = np.random.default_rng(0).integers(0, 255, (64, 64, 40)).astype(np.uint8)
    whole = tmp_path / "whole.nii"
    nib.save(nib.Nifti1Image(volume, np.eye(4)), whole)
    data = whole.read_bytes()
    # a valid gzip stream that simply ends early: the header is whole, the data block is not
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(gzip.compress(data[: len(data) // 2]))
    with pytest.raises(ScanReadError, match=r"cut\.nii\.gz"):
        read_scan(cut)
    # a gzip stream cut in the middle of a compressed block
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(gzip.compress(data)[: 3000])
    with pytest.raises(ScanReadError, match=r"broken\.nii\.gz"):
        read_scan(broken)
