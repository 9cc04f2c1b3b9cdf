"""Generated answers as DICOM Comprehensive SR documents (highdicom).

Content tree (loosely after TID 2000, Basic Diagnostic Imaging Report):

    CONTAINER  (LN 18748-4) Diagnostic Imaging Report
      HAS CONCEPT MOD  CODE  Language of Content Item and Descendants = en-US
      HAS OBS CONTEXT  Observer Type = Device; Device Observer UID / Name / Manufacturer /
                       Model Name (= "<name> <version>") / Serial Number (= weights SHA-256)
      CONTAINS  TEXT   (99RADFM PROMPT) Model prompt = the prompt sent to the model
      CONTAINS  CONTAINER (DCM 121070) Findings
        CONTAINS  TEXT (DCM 121071) Finding = the generated text
          HAS CONCEPT MOD  Algorithm Name / Version / Parameters (TID 4019)
          INFERRED FROM    IMAGE (DCM 121324) Source image -> every source instance

The document is always UNVERIFIED and PRELIMINARY: a machine wrote it and no person has
signed it. Patient and study come from the first DICOM source; sources from other studies
are listed as pertinent other evidence.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import highdicom as hd
import pydicom
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.valuerep import DA, TM

from radfm.answering.identity import ModelIdentity, identity_of_model_dir
from radfm.utils.io import atomic_path

logger = logging.getLogger(__name__)

PROMPT_CONCEPT = hd.sr.CodedConcept(value="PROMPT", scheme_designator="99RADFM", meaning="Model prompt")
REPORT_TITLE = hd.sr.CodedConcept(value="18748-4", scheme_designator="LN", meaning="Diagnostic Imaging Report")
LANGUAGE_EN_US = hd.sr.CodedConcept(value="en-US", scheme_designator="RFC5646", meaning="English (United States)")
MANUFACTURER = "RadFM toolkit"
# Type 2 patient/study attributes highdicom copies from the first source; absent ones become empty
_TYPE2_SOURCE_ATTRIBUTES = (
    "PatientID", "PatientName", "PatientBirthDate", "PatientSex",
    "AccessionNumber", "StudyID", "StudyDate", "StudyTime", "ReferringPhysicianName",
)


class SRExportError(ValueError):
    """The SR cannot be written (e.g. no DICOM source to attach it to); the message says why."""


def read_dicom_headers(path: str | Path, series_uid: str | None = None) -> list[Dataset]:
    """Headers (no pixel data) of the DICOM image instances at ``path`` (a file or a folder, recursive).

    Non-DICOM files in a folder are skipped; ``series_uid`` keeps one series. Returns ``[]``
    for a non-DICOM file (NIfTI, PNG) so that callers can mix inputs.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    candidates = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    headers = []
    for candidate in candidates:
        if candidate.name.upper() == "DICOMDIR" or not pydicom.misc.is_dicom(candidate):
            continue
        try:
            header = pydicom.dcmread(candidate, stop_before_pixels=True)
        except Exception as error:  # a damaged file in a folder should name itself
            raise SRExportError(f"{candidate}: not a readable DICOM file ({error})") from error
        if "Rows" not in header or "SOPInstanceUID" not in header:
            continue  # not an image instance (e.g. an earlier SR in the same folder)
        if series_uid is not None and header.get("SeriesInstanceUID") != series_uid:
            continue
        headers.append(header)
    if path.is_dir() and series_uid is not None and not headers:
        raise SRExportError(f"{path}: no DICOM image with SeriesInstanceUID {series_uid}")
    return headers


# Dates and times highdicom converts (DA/TM) from the first source: a value it cannot convert would stop
# the SR with an error that quotes it (a birth date), so the SR leaves it empty instead
_CONVERTED_SOURCE_ATTRIBUTES = (("PatientBirthDate", DA), ("StudyDate", DA), ("StudyTime", TM))


def _complete_type2(header: Dataset, emptied: set[str]) -> Dataset:
    """A copy of ``header`` with missing type-2 patient/study attributes present but empty, and dates/times
    that are not valid DICOM values emptied (their keywords added to ``emptied``; the values are never logged)."""
    header = pydicom.Dataset(header)
    for keyword in _TYPE2_SOURCE_ATTRIBUTES:
        if keyword not in header:
            setattr(header, keyword, None)
    for keyword, value_type in _CONVERTED_SOURCE_ATTRIBUTES:
        value = header.get(keyword)
        if value:
            try:
                value_type(value)
            except (TypeError, ValueError):
                emptied.add(f"{keyword} (not a DICOM {value_type.__name__})")
                setattr(header, keyword, None)
    return header


def build_sr(
    answer: str,
    prompt: str,
    sources: Sequence[Dataset],
    identity: ModelIdentity,
    *,
    parameters: Iterable[str] = (),
    series_number: int = 9901,
    institution_name: str | None = None,
) -> hd.sr.ComprehensiveSR:
    """An UNVERIFIED Comprehensive SR holding ``answer``, the ``prompt`` and references to ``sources``.

    ``sources`` are headers of the DICOM instances the model saw (at least one);
    ``parameters`` are extra "key=value" strings recorded as algorithm parameters.
    """
    if not sources:
        raise SRExportError(
            "a DICOM SR must reference DICOM source images, but none of the scans is DICOM; "
            "pass the DICOM file(s) or folder the scan came from"
        )
    if not answer.strip():
        raise SRExportError("the answer to store is empty")
    emptied: set[str] = set()
    sources = [_complete_type2(s, emptied) for s in sources]
    if emptied:
        logger.warning("the SR leaves empty the source's %s", ", ".join(sorted(emptied)))

    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=pydicom.uid.generate_uid(entropy_srcs=[identity.name, identity.weights_sha256]),
        name=identity.name[:64],
        manufacturer_name=MANUFACTURER,
        model_name=f"{identity.name} {identity.version}"[:64],
        serial_number=identity.weights_sha256,
    )
    observation_context = hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(observer_type=codes.DCM.Device, observer_identifying_attributes=device)
    )
    algorithm = hd.sr.AlgorithmIdentification(
        name=identity.name,
        version=identity.version,
        manufacturer=MANUFACTURER,
        parameters=[f"weights_sha256={identity.weights_sha256}", *parameters],
    )
    finding = hd.sr.TextContentItem(
        name=codes.DCM.Finding, value=answer, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
    )
    source_images = [
        hd.sr.ImageContentItem(
            name=codes.DCM.SourceImage,
            referenced_sop_class_uid=s.SOPClassUID,
            referenced_sop_instance_uid=s.SOPInstanceUID,
            relationship_type=hd.sr.RelationshipTypeValues.INFERRED_FROM,
        )
        for s in sources
    ]
    finding.ContentSequence = hd.sr.ContentSequence([*algorithm, *source_images])
    findings = hd.sr.ContainerContentItem(
        name=codes.DCM.Findings, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
    )
    findings.ContentSequence = hd.sr.ContentSequence([finding])
    prompt_item = hd.sr.TextContentItem(
        name=PROMPT_CONCEPT, value=prompt or "(none)", relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
    )
    root = hd.sr.ContainerContentItem(name=REPORT_TITLE)
    root.ContentSequence = hd.sr.ContentSequence(
        [*hd.sr.LanguageOfContentItemAndDescendants(LANGUAGE_EN_US), *observation_context, prompt_item, findings]
    )

    # highdicom logs each module it copies from the sources at INFO ("copy attributes of module ..."):
    # seven lines of noise on the CLI's stderr per SR; warnings still come through
    highdicom_logger = logging.getLogger("highdicom")
    level = highdicom_logger.level
    highdicom_logger.setLevel(max(level, logging.WARNING))
    try:
        sr = _comprehensive_sr(sources, root, series_number, identity, institution_name)
    finally:
        highdicom_logger.setLevel(level)
    return sr


def _comprehensive_sr(sources: list[Dataset], root: hd.sr.ContainerContentItem, series_number: int,
                      identity: ModelIdentity,
                      institution_name: str | None) -> hd.sr.ComprehensiveSR:
    """highdicom's ComprehensiveSR of the finished content tree (UNVERIFIED, not final)."""
    return hd.sr.ComprehensiveSR(
        evidence=sources,
        content=root,
        series_instance_uid=hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=identity.name[:64],
        software_versions=identity.version,
        device_serial_number=identity.weights_sha256[:64],
        institution_name=institution_name,
        series_description="RadFM generated text (UNVERIFIED)",
        specific_character_set="ISO_IR 192",  # UTF-8: generated text may hold any character
        is_complete=True,
        is_final=False,
        is_verified=False,
    )


def write_dataset(dataset: Dataset, output: str | Path) -> Path:
    """Write ``dataset`` to ``output`` atomically (temp file in the same folder, then rename)."""
    output = Path(output)
    with atomic_path(output) as temp:
        dataset.save_as(temp, enforce_file_format=True)
    return output


def read_sr(path: str | Path) -> dict:
    """The answer, prompt, model identity and referenced instance UIDs of an SR written by :func:`build_sr`."""
    dataset = pydicom.dcmread(path)
    result: dict = {"verification": dataset.get("VerificationFlag"), "completion": dataset.get("CompletionFlag")}
    device: dict[str, str] = {}
    algorithm_parameters: list[str] = []
    references: list[str] = []

    def walk(items) -> None:
        for item in items:
            concept = item.ConceptNameCodeSequence[0] if "ConceptNameCodeSequence" in item else None
            meaning = concept.CodeMeaning if concept is not None else ""
            if item.ValueType == "TEXT":
                if concept.CodeValue == PROMPT_CONCEPT.value and concept.CodingSchemeDesignator == "99RADFM":
                    result["prompt"] = item.TextValue
                elif meaning == "Finding":
                    result["answer"] = item.TextValue
                elif meaning == "Algorithm Parameters":
                    algorithm_parameters.append(item.TextValue)
                elif meaning.startswith("Device Observer"):
                    device[meaning] = item.TextValue
            elif item.ValueType == "UIDREF" and meaning == "Device Observer UID":
                device[meaning] = item.UID
            elif item.ValueType == "IMAGE":
                references.append(item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
            if "ContentSequence" in item:
                walk(item.ContentSequence)

    walk(dataset.ContentSequence)
    result.update(device=device, algorithm_parameters=algorithm_parameters, referenced_sop_instance_uids=references)
    result["study_instance_uid"] = dataset.StudyInstanceUID
    return result


def export_sr(
    output: str,
    *scans: str,
    answer: str | None = None,
    prompt: str | None = None,
    from_json: str | None = None,
    model: str | None = None,
    model_name: str | None = None,
    model_version: str | None = None,
    weights_hash: str | None = None,
    series_uid: str | None = None,
    institution_name: str | None = None,
) -> str:
    """Write a generated answer as an UNVERIFIED DICOM Comprehensive SR referencing its source images.

    Args:
        output: path of the SR file to write (e.g. report.dcm); written atomically.
        scans: the scans the model saw (DICOM files or folders; NIfTI/PNG inputs are
            recorded as parameters, but at least one DICOM source is needed).
        answer: the generated text (or use --from_json).
        prompt: the prompt given to the model.
        from_json: output of `radfm generate --json` (answer, prompt, scans, model); the
            explicit options override its fields.
        model: model folder; its weights are hashed to identify the model.
        model_name / model_version / weights_hash: identify the model without a folder.
        series_uid: keep only this series from DICOM folders.
        institution_name: optional institution recorded in the SR.
    Returns the path written.
    """
    record: dict = {}
    if from_json is not None:
        try:
            record = json.loads(Path(from_json).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise SRExportError(f"{from_json}: not a readable `radfm generate --json` file ({error})") from error
        if not isinstance(record, dict):
            raise SRExportError(f"{from_json}: expected the JSON object `radfm generate --json` writes, "
                                f"got a JSON {type(record).__name__}")
    # fire turns numeric-looking values (a slice file named 17106, an answer "1") into numbers
    answer = str(answer) if answer is not None else record.get("answer")
    prompt = str(prompt) if prompt is not None else record.get("prompt", "")
    scan_paths = [str(scan) for scan in scans] or list(record.get("scans", []))
    if answer is None:
        raise SRExportError("no answer given: pass --answer TEXT or --from_json FILE")
    if not scan_paths:
        raise SRExportError("no scans given: pass the DICOM file(s) or folder(s) the answer is about")

    recorded = record.get("model", {}) if isinstance(record.get("model"), dict) else {}
    if model is not None:
        identity = identity_of_model_dir(model, name=model_name)
    else:
        identity = ModelIdentity(
            name=model_name or recorded.get("name", "RadFM"),
            version=model_version or recorded.get("version", "unknown"),
            weights_sha256=weights_hash or recorded.get("weights_sha256", "unknown"),
        )
    if model_version is not None:
        identity = ModelIdentity(identity.name, model_version, identity.weights_sha256)
    if "unknown" in (identity.version, identity.weights_sha256):
        logger.warning("radfm export-sr: warning: the model is not identified (version %s, weights %s): pass --model "
                       "FOLDER, --from_json from `radfm generate --json`, or --model_version and --weights_hash; "
                       "the SR records 'unknown'", identity.version, identity.weights_sha256)

    sources: list[Dataset] = []
    non_dicom: list[str] = []
    for scan in scan_paths:
        headers = read_dicom_headers(scan, series_uid=series_uid)
        sources.extend(headers)
        if not headers:
            non_dicom.append(Path(scan).name)
    parameters = [f"non_dicom_input={name}" for name in non_dicom]
    parameters += [f"{key}={value}" for key, value in sorted(record.get("generation", {}).items())]
    sr = build_sr(answer, prompt or "", sources, identity, parameters=parameters, institution_name=institution_name)
    return str(write_dataset(sr, output))
