"""Phantom data and a helper that runs a bundle config exactly as ``python -m monai.bundle run`` does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RADFM_BUNDLE = REPO / "bundles" / "radfm"
CLASSIFICATION_BUNDLE = REPO / "bundles" / "radfm_classification"
SMALL_LOADER = "$radfm.data.loaders.default_image_loader(size_2d=(64, 64), size_3d=(64, 64), max_depth=8)"
# the bundles' one grid entry, small for tests
SMALL_GRID = {"size_2d": [64, 64], "size_3d": [64, 64], "max_depth": 8}
# pretrain/instruct are override files on the shared train.json
PRETRAIN = [RADFM_BUNDLE / "configs" / "train.json", RADFM_BUNDLE / "configs" / "pretrain.json"]
INSTRUCT = [RADFM_BUNDLE / "configs" / "train.json", RADFM_BUNDLE / "configs" / "instruct.json"]


def official_schema() -> Path:
    """MONAI's official metadata schema, carried by the tests (``tests/bundles/data/``; tests run offline).

    Missing, the schema tests fail rather than skip: a silent skip hid them on every machine
    without the shared folder.
    """
    path = Path(__file__).resolve().parent / "data" / "meta_schema_20240725.json"
    if not path.is_file():
        pytest.fail(f"MONAI's official metadata schema is missing: {path} (a copy of model-zoo's "
                    "meta_schema_20240725.json belongs in the repository)")
    return path


def run_bundle(config_files, meta_file, **overrides):
    """``monai.bundle.run``'s own steps (create_workflow → run → finalize); returns the workflow."""
    from monai.bundle.scripts import create_workflow

    files = [str(f) for f in config_files] if isinstance(config_files, (list, tuple)) else str(config_files)
    workflow = create_workflow(config_file=files, meta_file=str(meta_file), **overrides)
    workflow.run()
    workflow.finalize()
    return workflow


@pytest.fixture(scope="session")
def phantom_data(tmp_path_factory) -> dict[str, Path]:
    """12 phantom cases; small manifests (16 training samples, 4 validation) to keep runs short."""
    from radfm.data.phantoms import make_phantoms

    root = tmp_path_factory.mktemp("phantoms")
    make_phantoms(root / "ph", n=12, seed=0, progress=False)
    lines = (root / "ph" / "train.jsonl").read_text().splitlines()
    keep = [line for line in lines if json.loads(line)["task"] not in ("report", "rationale")][:16]
    (root / "ph" / "small_train.jsonl").write_text("\n".join(keep) + "\n")
    val = [json.loads(line) for line in lines if json.loads(line)["task"] in ("modality_inductive", "diagnosis_inductive")]
    for sample in val:
        sample["split"] = "val"
    (root / "ph" / "small_val.jsonl").write_text("".join(json.dumps(s) + "\n" for s in val[:4]))
    cases = [json.loads(line) for line in (root / "ph" / "cases.jsonl").read_text().splitlines()]
    return {"dir": root / "ph", "train": root / "ph" / "small_train.jsonl", "val": root / "ph" / "small_val.jsonl",
            "cases": cases}
