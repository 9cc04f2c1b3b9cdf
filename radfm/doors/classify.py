"""``radfm classify``: run a classifier folder (the classification bundle's finetune) on scans.

A classifier folder holds everything it needs: ``model.pt`` (weights), ``classifier.json`` (the
architecture and classes, :mod:`radfm.model.classifier`) and ``preprocess.json`` (the grid it was
trained at, read by :meth:`radfm.model.processing.RadFMImageProcessor.from_model_dir`). Every scan
is preprocessed at that grid, so the grid cannot differ from the training one.
"""

from __future__ import annotations

import json as jsonlib
from typing import Any

from radfm.utils.cli import UsageError

UNVERIFIED = "[unverified research output: not for clinical use]"


def classify_scans(model_dir: str, scans: list[str], device: str = "cpu") -> list[dict[str, Any]]:
    """Class probabilities of each scan under the classifier in ``model_dir``.

    Args:
        model_dir: a classifier folder (``model.pt``, ``classifier.json``, ``preprocess.json``).
        scans: scan paths (files, DICOM folders; ``[t]`` picks a volume of a 4D NIfTI).
        device: torch device.

    Returns:
        One record per scan: ``scan``, ``probabilities`` (class name -> probability), ``prediction``
        (the most probable class; for a multi-label classifier the list of classes at p >= 0.5).
    """
    import torch

    from radfm.model.classifier import load_classifier_dir
    from radfm.model.processing import RadFMImageProcessor

    model, config = load_classifier_dir(model_dir, device=device)
    processor = RadFMImageProcessor.from_model_dir(model_dir)
    names = config["labels"] or [str(k) for k in range(config["num_classes"])]
    records = []
    with torch.inference_mode():
        for scan in scans:
            image = torch.as_tensor(processor.process_one(scan))  # [3, H, W, D] at the folder's grid
            records.append(_record(model, config, names, scan, image, device))
    return records


def _record(model: Any, config: dict[str, Any], names: list[str], scan: str, image: Any, device: str) -> dict[str, Any]:
    import torch

    logits = model(image[None].to(device, torch.float32))[0]
    probabilities = torch.sigmoid(logits) if config["multi_label"] else torch.softmax(logits, dim=0)
    values = [round(float(p), 4) for p in probabilities]
    if config["multi_label"]:
        prediction: Any = [name for name, p in zip(names, values) if p >= 0.5]
    else:
        prediction = names[max(range(len(values)), key=values.__getitem__)]
    return {"scan": scan, "probabilities": dict(zip(names, values)), "prediction": prediction}


def classify(*scans: str, model: str | None = None, json: bool = False, device: str = "auto") -> None:
    """Classify scans with a classifier folder; prints one line per scan (or JSON records with --json).

    Example: radfm classify chest.png --model runs/my_classifier

    Args:
        scans: scan files (NIfTI, PNG, JPEG, NRRD, MHA, DICOM) or DICOM series folders.
        model: classifier folder (model.pt, classifier.json, preprocess.json; what the classification
            bundle's train.json writes to its ckpt_dir); default: the bundle's example classifier.
        json: print a JSON list of records (scan, probabilities per class, prediction).
        device: auto | cpu | cuda | cuda:N.
    """
    from radfm.utils.resources import bundle_dir

    scan_paths = [str(scan) for scan in scans]  # fire turns numeric-looking values into numbers
    if not scan_paths:
        raise UsageError("no scans given: pass one or more scan files or DICOM folders")
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    model_dir = str(model) if model is not None else str(bundle_dir("radfm_classification") / "models")
    records = classify_scans(model_dir, scan_paths, device=device)
    if json:
        print(jsonlib.dumps(records, indent=1))
        return
    for record in records:
        shown = ", ".join(f"{name} {p:.3f}" for name, p in record["probabilities"].items())
        prediction = record["prediction"]
        label = ", ".join(prediction) or "none" if isinstance(prediction, list) else prediction
        print(f"{record['scan']}: {label} ({shown})")
    print(UNVERIFIED)
