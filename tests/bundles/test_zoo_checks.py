"""Model-zoo's bundle checks (ci/verify_bundle.py), run through ``monai.bundle``, and workflow properties.

What model-zoo's CI checks, offline: required files (``configs/metadata.json``, ``LICENSE``,
``models/model.pt``, ``configs/inference.json``), version/changelog, ``verify_metadata`` against
MONAI's official schema, ``verify_net_in_out`` and ``ckpt_export`` (the classification bundle;
the LLM bundle's forward takes token ids + a list of scans, so it sits on the zoo's shape and
TorchScript exclusion lists), plus ``create_workflow(...).check_properties()`` for every config.
"""

from __future__ import annotations

import json

import pytest
import torch

from .conftest import CLASSIFICATION_BUNDLE, RADFM_BUNDLE, REPO, SMALL_GRID, official_schema

BUNDLES = {"radfm": RADFM_BUNDLE, "radfm_classification": CLASSIFICATION_BUNDLE}


@pytest.mark.parametrize("name", sorted(BUNDLES))
def test_required_files_and_changelog(name):
    root = BUNDLES[name]
    for rel in ("configs/metadata.json", "LICENSE", "models/model.pt", "configs/inference.json", "configs/logging.conf",
                "docs/README.md", "large_files.yml"):
        assert (root / rel).is_file(), rel
    meta = json.loads((root / "configs" / "metadata.json").read_text())
    assert meta["version"] in meta["changelog"]
    assert not (REPO / "bundles" / "metadata_schema.json").exists()  # validate against the official schema only


@pytest.mark.parametrize("name", sorted(BUNDLES))
def test_verify_metadata_against_official_schema(name):
    from monai.bundle import verify_metadata

    verify_metadata(meta_file=str(BUNDLES[name] / "configs" / "metadata.json"), filepath=str(official_schema()))


def test_official_schema_rejects_what_it_used_to_hide(tmp_path):
    """String value ranges (the old "V-1", "-inf") fail the official schema."""
    from monai.bundle import verify_metadata

    meta = json.loads((CLASSIFICATION_BUNDLE / "configs" / "metadata.json").read_text())
    meta["network_data_format"]["outputs"]["pred"]["value_range"] = ["-inf", "inf"]
    bad = tmp_path / "metadata.json"
    bad.write_text(json.dumps(meta))
    with pytest.raises(ValueError):
        verify_metadata(meta_file=str(bad), filepath=str(official_schema()))


@pytest.mark.parametrize("name", sorted(BUNDLES))
def test_model_pt_is_a_weights_only_state_dict_of_network_def(name):
    """``models/model.pt`` loads with ``weights_only=True`` into inference.json's ``network_def`` (strict)."""
    from monai.bundle import ConfigParser

    root = BUNDLES[name]
    parser = ConfigParser()
    parser.read_config(str(root / "configs" / "inference.json"))
    parser.read_meta(str(root / "configs" / "metadata.json"))
    parser["bundle_root"] = str(root)
    network = parser.get_parsed_content("network_def")
    state = torch.load(root / "models" / "model.pt", map_location="cpu", weights_only=True)
    network.load_state_dict(state, strict=True)


def test_classification_verify_net_in_out():
    from monai.bundle import verify_net_in_out

    verify_net_in_out(net_id="network_def", meta_file=str(CLASSIFICATION_BUNDLE / "configs" / "metadata.json"),
                      config_file=str(CLASSIFICATION_BUNDLE / "configs" / "inference.json"),
                      bundle_root=str(CLASSIFICATION_BUNDLE), device="cpu")


def test_classification_ckpt_export_matches_shipped_torchscript(tmp_path):
    """``ckpt_export`` of models/model.pt (as the zoo CI runs it) and the shipped models/model.ts agree with eager."""
    from monai.bundle import ckpt_export

    exported = tmp_path / "verify_model.ts"
    ckpt_export(net_id="network_def", filepath=str(exported), ckpt_file=str(CLASSIFICATION_BUNDLE / "models" / "model.pt"),
                meta_file=str(CLASSIFICATION_BUNDLE / "configs" / "metadata.json"),
                config_file=str(CLASSIFICATION_BUNDLE / "configs" / "inference.json"),
                bundle_root=str(CLASSIFICATION_BUNDLE))  # the CI's call: torch.jit.script (no use_trace)
    shipped = torch.jit.load(str(CLASSIFICATION_BUNDLE / "models" / "model.ts"), map_location="cpu").eval()
    exported_net = torch.jit.load(str(exported), map_location="cpu").eval()
    from radfm.model.classifier import load_classifier

    eager = load_classifier(2, preset="tiny")
    eager.load_state_dict(torch.load(CLASSIFICATION_BUNDLE / "models" / "model.pt", weights_only=True))
    eager.eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        # the traced encoder reads batch size and grid from each input (README, "Export"): other batch
        # sizes, a larger 2D grid and a 3D volume give the eager answers too
        for shape in [(2, 3, 64, 64, 4), (1, 3, 96, 64, 4), (1, 3, 64, 64, 8)]:
            images = torch.rand(*shape, generator=generator)
            expected = eager(images)
            torch.testing.assert_close(shipped(images), expected, atol=1e-5, rtol=0)
            torch.testing.assert_close(exported_net(images), expected, atol=1e-5, rtol=0)
    extra = {"metadata.json": ""}
    torch.jit.load(str(exported), map_location="cpu", _extra_files=extra)
    assert json.loads(extra["metadata.json"])["version"] == json.loads(
        (CLASSIFICATION_BUNDLE / "configs" / "metadata.json").read_text())["version"]


# ---------------------------------------------------------------- workflow properties ----
def _radfm_overrides(phantom_data, tmp_path):
    return {"dataset_dir": str(phantom_data["dir"]), "train_manifest": str(phantom_data["train"]),
            "val_manifest": str(phantom_data["val"]), "manifest": str(phantom_data["val"]), "split": "val",
            "output_dir": str(tmp_path / "out"), "image_grid": SMALL_GRID, "model": "tiny"}


def _classification_items(phantom_data, tmp_path):
    cases = [c for c in phantom_data["cases"] if c["dims"] == 2]
    items = [{"image": str(phantom_data["dir"] / c["image"]), "label": ["X-ray", "ultrasound"].index(c["modality"])}
             for c in cases]
    path = tmp_path / "items.json"
    path.write_text(json.dumps(items))
    return path


CONFIGS = [  # (bundle, config files, workflow type)
    ("radfm", ["train.json", "pretrain.json"], "train"),
    ("radfm", ["train.json", "instruct.json"], "train"),
    ("radfm", ["inference.json"], "infer"),
    ("radfm", ["evaluate.json"], "infer"),
    ("radfm_classification", ["train.json"], "train"),
    ("radfm_classification", ["inference.json"], "infer"),
    ("radfm_classification", ["evaluate.json"], "infer"),
]


@pytest.mark.parametrize(("name", "files", "workflow_type"), CONFIGS,
                         ids=[f"{n}:{'+'.join(f)}" for n, f, _ in CONFIGS])
def test_check_properties(name, files, workflow_type, phantom_data, tmp_path):
    from monai.bundle import create_workflow

    root = BUNDLES[name]
    overrides: dict = {}
    if name == "radfm" and files != ["inference.json"]:
        overrides = _radfm_overrides(phantom_data, tmp_path)
        if files[-1] == "instruct.json":
            overrides.pop("model")  # the demo model folder: its own grid, so no image_grid override either
            overrides.pop("image_grid")
        if files == ["evaluate.json"]:
            overrides = {k: overrides[k] for k in ("dataset_dir", "manifest", "split", "output_dir")}
        else:  # evaluate.json's keys: the training configs refuse keys they do not define
            overrides = {k: v for k, v in overrides.items() if k not in ("manifest", "split")}
    elif name == "radfm_classification" and files != ["inference.json"]:
        items = str(_classification_items(phantom_data, tmp_path))
        overrides = {"train_items": items, "val_items": items, "test_items": items, "output_dir": str(tmp_path / "out"),
                     "ckpt_dir": str(tmp_path / "models")}
        overrides.pop("test_items" if files == ["train.json"] else "train_items")
        if files != ["train.json"]:
            overrides = {k: v for k, v in overrides.items() if k not in ("val_items", "ckpt_dir")}
    config = [str(root / "configs" / f) for f in files]
    workflow = create_workflow(workflow_type=workflow_type, config_file=config if len(config) > 1 else config[0],
                               meta_file=str(root / "configs" / "metadata.json"), bundle_root=str(root),
                               logging_file=str(root / "configs" / "logging.conf"), **overrides)
    assert workflow.check_properties() == []


def test_check_properties_catches_a_wrong_reference(tmp_path):
    """The check is real: a dataset that bypasses ``preprocessing`` is reported."""
    from monai.bundle import create_workflow

    config = json.loads((CLASSIFICATION_BUNDLE / "configs" / "inference.json").read_text())
    config["dataset"]["transform"] = "@postprocessing"
    path = tmp_path / "inference.json"
    path.write_text(json.dumps(config))
    workflow = create_workflow(workflow_type="infer", config_file=str(path), bundle_root=str(CLASSIFICATION_BUNDLE),
                               meta_file=str(CLASSIFICATION_BUNDLE / "configs" / "metadata.json"))
    assert workflow.check_properties() == ["preprocessing"]
