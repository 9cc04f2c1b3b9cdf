"""Bundle metadata against MONAI's official schema (offline): the CLI, the function, and what the schema enforces."""

from __future__ import annotations

import json
import subprocess
import sys

import jsonschema
import pytest

from .conftest import CLASSIFICATION_BUNDLE, RADFM_BUNDLE, official_schema

METADATA = [RADFM_BUNDLE / "configs" / "metadata.json", CLASSIFICATION_BUNDLE / "configs" / "metadata.json"]


@pytest.mark.parametrize("meta_file", METADATA, ids=lambda p: p.parts[-3])
def test_metadata_validates_against_official_schema(meta_file):
    schema = json.loads(official_schema().read_text())
    jsonschema.validate(json.loads(meta_file.read_text()), schema)


@pytest.mark.parametrize("meta_file", METADATA, ids=lambda p: p.parts[-3])
def test_metadata_is_honest(meta_file):
    """Numeric value ranges, model-zoo shape symbols only, the grid's multiples, real eval numbers."""
    meta = json.loads(meta_file.read_text())
    formats = meta["network_data_format"]
    for group in ("inputs", "outputs", "post_processed_outputs"):
        for name, tensor in formats.get(group, {}).items():
            assert all(isinstance(v, (int, float)) for v in tensor["value_range"]), (group, name)
            for dim in tensor["spatial_shape"]:
                assert isinstance(dim, int) or set(dim) <= set("0123456789*np "), (group, name, dim)
    assert all(isinstance(v, (int, float)) for v in meta["eval_metrics"].values())
    assert isinstance(meta["supported_apps"], dict)
    assert "radfm-toolkit" not in meta["required_packages_version"]  # not on PyPI: a zoo CI could not install it


def test_radfm_eval_metrics_are_the_demo_numbers():
    meta = json.loads(METADATA[0].read_text())
    results = json.loads((RADFM_BUNDLE / "models" / "demo" / "eval.json").read_text())
    for task in ("diagnosis_yes_no", "lesion_location", "modality_open", "modality_yes_no"):
        assert meta["eval_metrics"][f"demo_{task}_accuracy"] == round(results[task]["accuracy"], 3), task


def test_classification_eval_metrics_are_the_shipped_models():
    meta = json.loads(METADATA[1].read_text())
    results = json.loads((CLASSIFICATION_BUNDLE / "models" / "eval.json").read_text())["held_out_metrics"]
    assert meta["eval_metrics"] == {f"held_out_{k}": round(v, 3) for k, v in results.items()}


def test_monai_verify_metadata_cli_offline(tmp_path):
    """``python -m monai.bundle verify_metadata`` skips the download because --filepath exists."""
    result = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "verify_metadata", "--meta_file", str(METADATA[0]),
         "--filepath", str(official_schema())],
        capture_output=True, text=True, timeout=180, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "skipped downloading" in result.stderr + result.stdout
    assert "metadata is verified with no error" in result.stderr + result.stdout


def test_monai_verify_metadata_rejects_missing_task(tmp_path):
    from monai.bundle import verify_metadata

    broken = tmp_path / "metadata.json"
    broken.write_text(json.dumps({k: v for k, v in json.loads(METADATA[0].read_text()).items() if k != "task"}))
    with pytest.raises(ValueError, match="task"):
        verify_metadata(meta_file=str(broken), filepath=str(official_schema()))


def test_bundle_layout():
    for rel in ("configs/metadata.json", "configs/inference.json", "configs/train.json", "configs/pretrain.json",
                "configs/instruct.json", "configs/evaluate.json", "configs/multi_gpu_train.json", "configs/logging.conf",
                "docs/README.md", "LICENSE", "large_files.yml", "models/model.pt"):
        assert (RADFM_BUNDLE / rel).is_file(), rel
    for rel in ("configs/metadata.json", "configs/train.json", "configs/inference.json", "configs/evaluate.json",
                "configs/logging.conf", "docs/README.md", "LICENSE", "models/model.pt", "models/model.ts"):
        assert (CLASSIFICATION_BUNDLE / rel).is_file(), rel
    for config in list((RADFM_BUNDLE / "configs").glob("*.json")) + list((CLASSIFICATION_BUNDLE / "configs").glob("*.json")):
        json.loads(config.read_text())  # valid JSON
    # the override files stay small: the body lives in train.json
    for name in ("pretrain.json", "instruct.json"):
        assert len(json.loads((RADFM_BUNDLE / "configs" / name).read_text())) <= 6, name


def test_large_files_are_direct_downloads():
    """large_files.yml lists only files with a direct download URL (model-zoo downloads them in CI)."""
    import yaml

    for root in (RADFM_BUNDLE, CLASSIFICATION_BUNDLE):
        entries = yaml.safe_load((root / "large_files.yml").read_text())["large_files"] or []
        for entry in entries:
            assert "/tree/" not in entry["url"] and "/blob/" not in entry["url"], entry
