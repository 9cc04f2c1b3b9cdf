"""One header read per scan per request: the budget's claim, the DICOM grouping and the reader share one parse.

Each test sends one request through :class:`RequestPath` (bytes written, claimed, grouped, read by
the real ``radfm.transforms`` readers) and counts the header parser's calls (nibabel's checked
header, ``pydicom.dcmread``, pynrrd's ``read_header``). On the code before this change a NIfTI
header was parsed twice (claim + reader, besides the guard's unchecked parse) and each DICOM
slice five times (claim, grouping, series listing, the series' header pass, the slice read).
"""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import numpy as np
import pytest

from radfm.answering.limits import Limits
from radfm.answering.request import AnswerRequest, RequestPath, ScanInput


class ReadingAnswerer:
    """Reads and preprocesses with the real readers (as ``ModelAnswerer.prepare`` does), answers a fixed text."""

    def __init__(self) -> None:
        from radfm.answering.identity import ModelIdentity

        self.identity, self.max_images = ModelIdentity(), 4
        self.shapes: list[tuple[int, ...]] = []

    def prepare(self, paths):
        from radfm.transforms import preprocess_scan

        images = [preprocess_scan(str(path)) for path in paths]
        self.shapes = [tuple(image.shape) for image in images]
        return images

    def answer(self, prompt, images, options):
        return f"{len(images)} scan(s)"


def _run(inputs: list[ScanInput], one_scan_per_input: bool = True, **limits) -> tuple[str, ReadingAnswerer]:
    answerer = ReadingAnswerer()
    path = RequestPath(answerer, Limits(**limits))
    try:
        result = asyncio.run(path.run(AnswerRequest("What is shown?", inputs, one_scan_per_input=one_scan_per_input)))
    finally:
        path.close()
    return result.text, answerer


def _spy(monkeypatch, owner, name: str) -> list[tuple]:
    """Replace ``owner.name`` by a wrapper that records each call's positional arguments; returns the record."""
    calls: list[tuple] = []
    real = getattr(owner, name)

    def recording(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, recording)
    return calls


@pytest.fixture
def count_nifti_parses(monkeypatch) -> list[int]:
    """Counts NIfTI headers built from a file's bytes with nibabel's checks (what ``nibabel.load`` does)."""
    import nibabel as nib

    calls = [0]
    original = nib.Nifti1Header.__init__

    def counting(self, binaryblock=None, endianness=None, check=True, *args, **kwargs):
        if binaryblock is not None and check:
            calls[0] += 1
        original(self, binaryblock, endianness, check, *args, **kwargs)

    monkeypatch.setattr(nib.Nifti1Header, "__init__", counting)
    return calls


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_a_nifti_upload_header_is_parsed_once_per_request(tmp_path, count_nifti_parses, monkeypatch, suffix):
    import nibabel as nib

    volume = np.arange(32 * 24 * 8, dtype=np.int16).reshape(32, 24, 8)
    source = tmp_path / f"ct{suffix}"
    nib.save(nib.Nifti1Image(volume, np.diag([0.8, 0.8, 2.0, 1.0])), source)
    loads = _spy(monkeypatch, nib, "load")
    count_nifti_parses[0] = 0
    text, answerer = _run([ScanInput(source.name, data=source.read_bytes())])
    assert text == "1 scan(s)" and len(answerer.shapes) == 1 and answerer.shapes[0][0] == 3
    assert count_nifti_parses[0] == 1  # the guard's parse; the claim and the reader reuse it
    assert loads == []  # no second route to the header (nibabel.load parses it again)


def test_the_reader_reads_the_same_voxels_from_the_guards_header(tmp_path):
    """Reading on from the guard's parse gives what nibabel's own load gives (data, affine, scaling)."""
    import nibabel as nib

    from radfm.transforms import read_scan

    volume = (np.arange(20 * 16 * 6, dtype=np.int16).reshape(20, 16, 6) - 500)
    image = nib.Nifti1Image(volume, np.array([[0, -0.7, 0, 10], [0.9, 0, 0, -4], [0, 0, 2.5, 3], [0, 0, 0, 1]]))
    image.header.set_slope_inter(0.5, -20)
    path = tmp_path / "scaled.nii.gz"
    nib.save(image, path)
    read = read_scan(path)
    expected = np.asarray(nib.load(path).get_fdata())
    assert np.allclose(read.numpy()[0], expected)
    assert np.allclose(read.meta["original_affine"], nib.load(path).affine)


def test_an_nrrd_upload_header_is_parsed_once_and_claims_its_size(tmp_path, monkeypatch):
    import nrrd

    source = tmp_path / "vol.nrrd"
    nrrd.write(str(source), np.zeros((16, 12, 8), np.float32), {"encoding": "gzip", "space": "left-posterior-superior",
                                                                      "space directions": np.diag([0.7, 0.7, 2.0]),
                                                                      "space origin": np.zeros(3)})
    from radfm.answering import worker

    parses = _spy(monkeypatch, nrrd, "read_header")
    holds = _spy(monkeypatch, worker.MemoryBudget, "hold")
    text, _ = _run([ScanInput(source.name, data=source.read_bytes())])
    assert text == "1 scan(s)"
    assert len(parses) == 1  # the guard's parse (pynrrd's parser), which the reader reads on from
    assert [claim for _, claim in holds] == [16 * 12 * 8 * 4]  # the header's claim, not the whole limit


def _dicom_slices(count: int) -> list[bytes]:
    """``count`` small CT slices of one series (explicit VR little endian, with preamble)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    series, study = generate_uid(), generate_uid()
    slices = []
    for index in range(count):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = study, series, "CT"
        ds.InstanceNumber = index + 1
        ds.ImagePositionPatient, ds.ImageOrientationPatient = [0, 0, 2.0 * index], [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.SliceThickness = [0.7, 0.7], 2.0
        ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = 24, 20, 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.PixelData = (np.arange(24 * 20, dtype=np.int16).reshape(24, 20) + 10 * index).tobytes()
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        slices.append(buffer.getvalue())
    return slices


def test_each_dicom_slice_header_is_parsed_once_per_request(monkeypatch):
    import pydicom

    slices = _dicom_slices(4)
    reads = _spy(monkeypatch, pydicom, "dcmread")
    inputs = [ScanInput(f"slice{i}.dcm", data=data) for i, data in enumerate(slices)]
    text, answerer = _run(inputs, one_scan_per_input=False)  # uploaded one file a slice, as /v1/answer takes them
    assert text == "1 scan(s)" and answerer.shapes[0][-1] == 4  # one volume of four slices
    per_file: dict[str, int] = {}
    for name in (Path(getattr(args[0], "name", args[0])).name for args in reads):
        per_file[name] = per_file.get(name, 0) + 1
    assert len(per_file) == 4 and set(per_file.values()) == {1}, per_file  # claim; grouping and reader reuse it


def test_a_dicom_slice_too_large_for_the_limit_is_still_refused_by_its_header(monkeypatch):
    """The kept header is still checked by the reader: the refusal names the limit, with 413."""
    from radfm.answering.refusal import RequestError

    slices = _dicom_slices(2)
    with pytest.raises(RequestError) as refused:
        _run([ScanInput(f"slice{i}.dcm", data=data) for i, data in enumerate(slices)], one_scan_per_input=False,
             max_scan_bytes=1000)
    assert refused.value.status == 413 and "max_scan_bytes" in str(refused.value)


def test_uploaded_files_and_zip_members_are_sniffed_once_and_written_once_under_their_final_name(monkeypatch):
    """An OpenAI ``file`` part (bytes) or a zip member is detected from its first bytes before it is written:
    one write to the name its reader expects, no rename, no second sniff (members named without a suffix too)."""
    import zipfile

    from radfm.answering import scans

    slices = _dicom_slices(3)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as bundle:
        for index, data in enumerate(slices):
            bundle.writestr(f"series/IM{index:04d}", data)  # DICOM members named without .dcm, as PACS exports them
        bundle.writestr("series/README.txt", b"exported slices")
    detected = _spy(monkeypatch, scans, "detect_kind")
    renamed = _spy(monkeypatch, Path, "rename")
    text, answerer = _run([ScanInput("series.zip", data=archive.getvalue())])
    assert text == "1 scan(s)" and len(answerer.shapes) == 1  # one series of three slices
    assert sorted(name for name, _ in detected) == ["series/IM0000", "series/IM0001", "series/IM0002",
                                                    "series/README.txt"]
    assert renamed == []
    import nibabel as nib

    volume = io.BytesIO()
    nib.Nifti1Image(np.zeros((8, 8, 4), np.int16), np.eye(4)).to_stream(volume)  # an uncompressed .nii
    single = io.BytesIO()
    with zipfile.ZipFile(single, "w") as bundle:
        bundle.writestr("brain", volume.getvalue())  # its reader needs .nii: the name is chosen before writing
    detected.clear()
    text, _ = _run([ScanInput("brain.zip", data=single.getvalue()), ScanInput("chest", data=slices[0])])
    assert text == "2 scan(s)" and [name for name, _ in detected] == ["brain", "chest"] and renamed == []
