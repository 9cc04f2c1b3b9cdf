"""Adapters: published dataset layouts -> manifest ``Sample``s, one module per layout.

``ADAPTERS`` maps the ``radfm data convert FORMAT`` names to ``convert(src, **options)``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

# format name -> (module, function, one-line description)
ADAPTERS: dict[str, tuple[str, str, str]] = {
    "vqa-rad": ("vqa_rad", "convert", "VQA-RAD JSON ('VQA_RAD Dataset Public.json' + image folder)"),
    "slake": ("slake", "convert", "SLAKE train/validate/test.json + imgs/"),
    "pmc-vqa": ("pmc_vqa", "convert", "PMC-VQA train.csv/test.csv + images/"),
    "iu-xray": ("report_table", "convert_iu_xray", "IU X-ray indiana_reports.csv + indiana_projections.csv"),
    "mimic-cxr": ("report_table", "convert_mimic_cxr", "MIMIC-CXR-JPG metadata + sectioned reports"),
    "report-csv": ("report_table", "convert_report_csv", "any CSV with image_path, findings, impression"),
    "diagnosis-table": ("diagnosis_table", "convert", "CSV image_path, disease, label (binary)"),
    "radiopaedia": ("radiopaedia", "convert", "Radiopaedia-style case JSON (RP3D)"),
    "medpix": ("medpix", "convert", "MedPix 2.0 Case_topic.json + Descriptions.json"),
    "pmc-inline": ("pmc_inline", "convert", "PMC OA JATS XML -> interleaved text with figures"),
    "pmc-casereport": ("pmc_casereport", "convert", "PMC-CaseReport QA CSV with patient context"),
}


def get_adapter(name: str) -> Callable:
    """The ``convert`` function for format ``name`` (see ``ADAPTERS``)."""
    key = name.lower().replace("_", "-")
    if key not in ADAPTERS:
        raise KeyError(f"unknown dataset format {name!r}; choose from: {', '.join(ADAPTERS)}")
    module, function, _ = ADAPTERS[key]
    return getattr(importlib.import_module(f"radfm.data.adapters.{module}"), function)
