"""Synthetic DICOM studies (a CT series, a chest X-ray) for the node's tests, its benchmark and a dry run.

The pixels are a phantom (an ellipse body with a bright round lesion), the patient is made up
("Synthetic^Patient"): nothing here comes from a person.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
DX_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation


def _base(modality: str, sop_class: str, study_uid: str, series_uid: str, number: int, patient_id: str,
          description: str):
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    sop_uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    today = datetime.date.today().strftime("%Y%m%d")
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Synthetic^Patient", patient_id, "", "O"
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = today, "120000", "1", ""
    ds.ReferringPhysicianName = ""
    ds.SeriesDate, ds.ContentDate, ds.ContentTime = today, today, "120000"
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = modality, 1, number
    ds.SeriesDescription = description
    ds.Manufacturer = "RadFM synthetic"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    return ds


def _phantom(size: int, z: float) -> np.ndarray:
    """[size, size] in [0, 1]: an ellipse (body) and a round lesion whose radius shrinks away from z = 0.5."""
    y, x = np.mgrid[0:size, 0:size] / (size - 1) - 0.5
    body = (x / 0.42) ** 2 + (y / 0.32) ** 2 <= 1
    lesion = (x - 0.12) ** 2 + (y + 0.05) ** 2 <= max(0.0, 0.08 ** 2 - (z - 0.5) ** 2 * 0.02)
    return body * 0.5 + lesion * 0.5


def write_ct_series(folder: str | Path, slices: int = 8, size: int = 64, study_uid: str | None = None,
                    patient_id: str = "SYN0001", description: str = "CHEST CT") -> list[Path]:
    """``slices`` axial CT slices (``size`` x ``size``, HU via rescale) of one new series; returns the files."""
    from pydicom.uid import generate_uid

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or generate_uid()
    series_uid, frame_uid = generate_uid(), generate_uid()
    files = []
    for i in range(slices):
        ds = _base("CT", CT_IMAGE_STORAGE, study_uid, series_uid, i + 1, patient_id, description)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = frame_uid, ""
        ds.ImagePositionPatient = [-size / 2, -size / 2, float(i * 2.5)]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.SliceThickness = [1.0, 1.0], 2.5
        ds.Rows = ds.Columns = size
        ds.PixelRepresentation = 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
        ds.KVP, ds.AcquisitionNumber = 120, 1
        hu = _phantom(size, i / max(1, slices - 1)) * 1200 - 1000 + 24  # air -1000, body ~-400..200
        ds.PixelData = (hu + 1024).astype(np.int16).tobytes()
        path = folder / f"ct{i:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return files


def write_chest_xray(folder: str | Path, size: int = 128, study_uid: str | None = None,
                     patient_id: str = "SYN0002", description: str = "CHEST PA") -> Path:
    """One DX chest radiograph (``size`` x ``size``, 12 bits) of one new series; returns the file."""
    from pydicom.uid import generate_uid

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ds = _base("DX", DX_IMAGE_STORAGE, study_uid or generate_uid(), generate_uid(), 1, patient_id, description)
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.BodyPartExamined, ds.ViewPosition = "CHEST", "PA"
    ds.Rows = ds.Columns = size
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 12, 11, 0
    ds.ImagerPixelSpacing = ds.PixelSpacing = [0.5, 0.5]
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "US"
    ds.PresentationLUTShape = "IDENTITY"
    ds.BurnedInAnnotation, ds.LossyImageCompression = "NO", "00"
    ds.DetectorType = "DIRECT"
    ds.PatientOrientation = ["L", "F"]
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    ds.PixelData = (_phantom(size, 0.5) * 4000).astype(np.uint16).tobytes()
    path = folder / "dx.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path
