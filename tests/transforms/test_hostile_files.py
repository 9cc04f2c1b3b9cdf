"""Hostile scan files, written as the attacks: headers that point at a host file, decompression bombs.

A "secret" file is planted outside the header's folder; no reader may return its bytes or
even open it. Size limits are checked from headers before decompressing.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from radfm.transforms import ScanReadError, ScanTooLargeError, preprocess_scan, read_scan, scan_size_limit
from radfm.transforms.formats import check_scan_file
from radfm.transforms.guards import DEFAULT_MAX_SCAN_BYTES
from radfm.transforms.readers import read_scan_array

SECRET = b"root:x:0:0:secret-line-that-must-not-leak\n" * 64  # 2752 bytes


@pytest.fixture
def planted(tmp_path) -> tuple[Path, Path]:
    """(folder for the hostile header, the secret file outside it)."""
    secret = tmp_path / "host" / "passwd"
    secret.parent.mkdir()
    secret.write_bytes(SECRET)
    scans = tmp_path / "scans"
    scans.mkdir()
    return scans, secret


def _nrrd_header(data_line: str, sizes: str = "43 64", kind: str = "uint8", encoding: str = "raw",
                 extra: str = "") -> str:
    n = len(sizes.split())
    axes = " ".join("(" + ",".join("1" if i == j else "0" for j in range(n)) + ")" for i in range(n))
    origin = "(" + ",".join("0" for _ in range(n)) + ")"
    return (f"NRRD0004\ntype: {kind}\ndimension: {n}\nspace dimension: {n}\nspace directions: {axes}\n"
            f"space origin: {origin}\n"
            f"sizes: {sizes}\nencoding: {encoding}\n{extra}{data_line}\n")


OUTSIDE = r"attack\.nhdr: header field .*data ?file.* outside the header's folder"


@pytest.mark.parametrize("data_line,refusal", [
    ("data file: {secret}", OUTSIDE),                  # absolute path, the reported attack
    ("datafile: {relative}", OUTSIDE),                 # the other spelling, relative with ..
    ("data file:={secret}", OUTSIDE),                  # a key/value pair: pynrrd reads it as the field
    # LIST form (names follow the field): pynrrd cannot parse the name lines
    ("data file: LIST\n{secret}", r"attack\.nhdr: cannot read as nrrd"),
    # printf pattern expanding to ../host/passwd: pynrrd reads one file only, so patterns are refused
    ("data file: ../host/passw%c 100 100 1", r"attack\.nhdr: header field 'data file' .*pattern is not supported"),
])
def test_nrrd_detached_data_outside_folder_is_refused(planted, data_line, refusal):
    scans, secret = planted
    relative = os.path.relpath(secret, scans)
    header = scans / "attack.nhdr"
    header.write_text(_nrrd_header(data_line.format(secret=secret, relative=relative), extra="byte skip: -1\n"))
    for read in (preprocess_scan, read_scan):
        with pytest.raises(ScanReadError, match=refusal):
            read(header)


def test_nrrd_detached_data_through_a_symlink_is_refused(planted):
    scans, secret = planted
    (scans / "data.raw").symlink_to(secret)  # inside by name, outside once resolved
    header = scans / "attack.nhdr"
    header.write_text(_nrrd_header("data file: data.raw"))
    with pytest.raises(ScanReadError, match="outside the header's folder"):
        read_scan(header)


def test_nrrd_detached_data_next_to_the_header_still_reads(tmp_path):
    voxels = np.arange(4 * 5 * 6, dtype=np.int16).reshape(6, 5, 4)  # C order: z, y, x
    (tmp_path / "sub").mkdir()
    voxels.tofile(tmp_path / "sub" / "volume.raw")
    header = tmp_path / "volume.nhdr"
    header.write_text(_nrrd_header("data file: sub/volume.raw", sizes="4 5 6", kind="int16",
                                   extra="endian: little\n"))
    image = read_scan(header)
    assert tuple(image.shape) == (1, 4, 5, 6)
    assert np.array_equal(image[0].numpy(), voxels.T)


@pytest.mark.parametrize("suffix,data_line", [
    (".mhd", "ElementDataFile = {secret}"),
    (".mha", "ElementDataFile = {secret}"),  # a .mha may point elsewhere too
    (".mhd", "ElementDataFile = LIST\n{secret}"),
    (".mhd", "ElementDataFile = ../host/passw%d 100 100 1"),
])
def test_metaimage_element_data_file_outside_folder_is_refused(planted, suffix, data_line):
    scans, secret = planted
    header = scans / f"attack{suffix}"
    header.write_text("ObjectType = Image\nNDims = 2\nDimSize = 43 64\nElementType = MET_UCHAR\n"
                      + data_line.format(secret=secret) + "\n")
    with pytest.raises(ScanReadError, match=r"attack\.mh[ad]: header field ElementDataFile .* outside the header's folder"):
        preprocess_scan(header)


def test_metaimage_detached_data_next_to_the_header_still_reads(tmp_path):
    voxels = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(5, 4, 3)
    voxels.tofile(tmp_path / "v.raw")
    header = tmp_path / "v.mhd"
    header.write_text("ObjectType = Image\nNDims = 3\nDimSize = 3 4 5\nElementType = MET_UCHAR\n"
                      "ElementSpacing = 1 1 1\nElementDataFile = v.raw\n")
    assert tuple(read_scan(header).shape) == (1, 3, 4, 5)


# ---------------------------------------------------------------------------------------------
# size limits: the header's claim is checked before any decompression
# ---------------------------------------------------------------------------------------------

def _nifti_bytes(shape: tuple[int, ...], voxels: bytes, datatype: int = 4, bitpix: int = 16) -> bytes:
    """A NIfTI-1 single file (vox_offset 352) with ``voxels`` after the header (not necessarily complete)."""
    import nibabel as nib

    header = nib.Nifti1Header()
    header.set_data_dtype(np.int16 if datatype == 4 else np.uint8)
    header["dim"] = [len(shape), *shape, *([1] * (7 - len(shape)))]
    header["vox_offset"] = 352
    return header.binaryblock + b"\x00" * 4 + voxels


@pytest.mark.parametrize("limit", [None, 64 * 1024**2])
def test_nifti_claiming_huge_dims_is_refused_from_the_header(tmp_path, limit):
    path = tmp_path / "huge.nii.gz"
    path.write_bytes(gzip.compress(_nifti_bytes((2048, 1024, 1024), b"\x00" * 4096)))  # claims 4 GiB
    with pytest.raises(ScanTooLargeError, match=r"huge\.nii\.gz: the NIfTI header .*2048 x 1024 x 1024.* claims "
                                                 r"4,294,967,648 bytes .* over the limit of"):
        preprocess_scan(path, max_scan_bytes=limit)


def test_limit_is_per_call_and_per_block(tmp_path):
    path = tmp_path / "small.nii"
    path.write_bytes(_nifti_bytes((32, 32, 8), b"\x01\x00" * (32 * 32 * 8)))
    assert tuple(read_scan(path).shape) == (1, 32, 32, 8)  # 16 KiB: fine under the default
    with pytest.raises(ScanTooLargeError, match=r"small\.nii: .* claims 16,736 bytes .* limit of 10,000 bytes"):
        read_scan(path, max_scan_bytes=10_000)
    with scan_size_limit(10_000):
        with pytest.raises(ScanTooLargeError):
            preprocess_scan(path)
        assert tuple(read_scan(path, max_scan_bytes=1 << 20).shape) == (1, 32, 32, 8)  # the call wins
    assert tuple(read_scan(path).shape) == (1, 32, 32, 8)  # the block's limit ended with it
    with pytest.raises(ValueError, match="max_scan_bytes"):
        read_scan(path, max_scan_bytes=0)


def test_every_reader_checks_the_claimed_size(tmp_path, ct_small, ct_series_dir):
    from PIL import Image

    limit = 1000
    npy = tmp_path / "v.npy"
    np.save(npy, np.zeros((16, 16, 4), np.int16))  # 2 KiB
    png = tmp_path / "p.png"
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(png)  # 1600 bytes decoded
    nrrd_file = tmp_path / "v.nrrd"
    nrrd_file.write_bytes(_nrrd_header("", sizes="32 32", encoding="gzip").encode()
                          + gzip.compress(bytes(32 * 32)))
    mha = tmp_path / "v.mha"
    mha.write_bytes(b"ObjectType = Image\nNDims = 2\nDimSize = 40 40\nElementType = MET_UCHAR\n"
                    b"ElementDataFile = LOCAL\n" + bytes(1600))
    for path in (npy, png, nrrd_file, mha, ct_small, ct_series_dir):
        assert read_scan(path) is not None  # readable under the default limit
        with pytest.raises(ScanTooLargeError, match=rf"{Path(path).name}: .*claims .* over the limit of 1,000 bytes"):
            read_scan(path, max_scan_bytes=limit)


def test_png_claiming_huge_size_is_refused_before_decoding(tmp_path):
    """An 8-bit PNG header claiming 60000 x 60000 pixels (3.6 GB decoded) with a tiny body."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path = tmp_path / "bomb.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 60000, 60000, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 60001)) + chunk(b"IEND", b""))
    with pytest.raises(ScanTooLargeError, match="bomb.png"):
        read_scan(path)


def test_pillow_only_decodes_png_and_jpeg(tmp_path):
    """A file named .png holding another format (here GIF) is not handed to that format's decoder."""
    from PIL import Image

    path = tmp_path / "not_really.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(path, format="GIF")
    with pytest.raises(ScanReadError, match="not_really.png: cannot read as image"):
        read_scan(path)


def test_nrrd_gzip_body_is_inflated_only_as_far_as_the_header_says(tmp_path):
    """Honest sizes (64 KiB) but a gzip body inflating to 64 MiB more: only the 64 KiB the header describes are inflated."""
    body = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    stream = body.compress(bytes(64 * 1024))
    zero_mib = bytes(1 << 20)
    for _ in range(64):
        stream += body.compress(zero_mib)
    stream += body.flush()
    path = tmp_path / "bomb.nrrd"
    path.write_bytes(_nrrd_header("", sizes="256 256", encoding="gzip").encode() + stream)
    image, _ = read_scan_array(path)  # the first 64 KiB are the image; the rest is never inflated
    assert image.shape == (1, 256, 256)


def test_deflated_dicom_bomb_is_counted_not_kept(tmp_path):
    """A Deflated Explicit VR Little Endian file inflating beyond the limit is refused before pydicom inflates it."""
    import pydicom
    from pydicom.dataset import FileMetaDataset

    meta = FileMetaDataset()
    meta.TransferSyntaxUID = "1.2.840.10008.1.2.1.99"
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    meta.MediaStorageSOPInstanceUID = "1.2.3.4"
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.SamplesPerPixel = 8, 8, 8, 1
    ds.PixelRepresentation, ds.BitsStored, ds.HighBit, ds.PhotometricInterpretation = 0, 8, 7, "MONOCHROME2"
    ds.PixelData = bytes(64)
    ds.PatientComments = "x" * (4 * 1024**2)  # 4 MiB of text deflates to a few KiB
    path = tmp_path / "deflated.dcm"
    ds.save_as(path, enforce_file_format=True)
    assert path.stat().st_size < 100_000
    with pytest.raises(ScanTooLargeError, match="deflated.dcm: the deflated DICOM data hold more than 1,048,576 bytes "
                                                r"\(1.0 MiB\) of elements before any pixel data"):
        read_scan(path, max_scan_bytes=1024**2)
    assert read_scan(path).shape[-2:] == (8, 8)


def test_default_limit_is_generous_for_real_ct(tmp_path):
    """A header claiming a 512 x 512 x 4000 int16 CT (2 GB) passes the check; twice that does not."""
    big_ct = tmp_path / "big_ct.nii"
    big_ct.write_bytes(_nifti_bytes((512, 512, 4000), b""))  # header only: the check never reads data
    check_scan_file(big_ct, "nifti")
    assert DEFAULT_MAX_SCAN_BYTES == 2 * 1024**3
    too_big = tmp_path / "too_big.nii"
    too_big.write_bytes(_nifti_bytes((512, 512, 8200), b""))
    with pytest.raises(ScanTooLargeError):
        check_scan_file(too_big, "nifti")


def test_preprocess_cli_takes_the_limit_and_names_the_attack(planted, tmp_path):
    from radfm.transforms import preprocess_cli

    scans, secret = planted
    header = scans / "attack.nhdr"
    header.write_text(_nrrd_header(f"data file: {secret}"))
    with pytest.raises(SystemExit, match=r"radfm preprocess: .*attack\.nhdr: header field 'data file' .*outside"):
        preprocess_cli(str(header))
    claims_2mib = tmp_path / "claims_2mib.nii"
    claims_2mib.write_bytes(_nifti_bytes((1024, 1024), b""))  # 1024 x 1024 int16: 2 MiB claimed
    with pytest.raises(SystemExit, match=r"claims_2mib\.nii: .* over the limit of 1,048,576 bytes"):
        preprocess_cli(str(claims_2mib), max_scan_mb=1)


def _hostile_headers():
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
    from hostile_files import hostile_headers

    return hostile_headers


@pytest.mark.parametrize("variant", sorted(_hostile_headers()("x")))
def test_every_reported_bypass_is_refused_through_every_transforms_door(planted, variant, capsys):
    """22-H1 (a)-(e) through preprocess_scan, LoadScan, scan_spatial_dims and `radfm preprocess`: refused,
    and no message states the host file's size."""
    from radfm.transforms import LoadScan, preprocess_cli, scan_spatial_dims

    scans, secret = planted
    header = scans / variant
    header.write_bytes(_hostile_headers()(secret)[variant])
    size_texts = (f"{len(SECRET)}", f"{len(SECRET):,}")
    for door in (preprocess_scan, LoadScan(), read_scan, scan_spatial_dims):
        with pytest.raises(ScanReadError) as refused:
            door(header)
        assert variant in str(refused.value) and not any(t in str(refused.value) for t in size_texts), refused.value
    with pytest.raises(SystemExit) as exited:
        preprocess_cli(str(header))
    assert str(exited.value.code).startswith(f"radfm preprocess: {header}") and "root:x" not in str(exited.value.code)
