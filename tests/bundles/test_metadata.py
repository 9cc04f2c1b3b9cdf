"""Bundle metadata: MONAI's own verify_metadata (offline, against our schema) and jsonschema directly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

REPO = Path(__file__).resolve().parents[2]
SCHEMA = REPO / "bundles" / "metadata_schema.json"
METADATA = [REPO / "bundles" / "radfm" / "configs" / "metadata.json",
            REPO / "bundles" / "radfm_classification" / "configs" / "metadata.json"]


@pytest.mark.parametrize("meta_file", METADATA, ids=lambda p: p.parts[-3])
def test_metadata_validates_against_schema(meta_file):
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.validate(json.loads(meta_file.read_text()), schema)


def test_schema_rejects_missing_and_mistyped_keys():
    schema = json.loads(SCHEMA.read_text())
    good = json.loads(METADATA[0].read_text())
    for key in ("version", "network_data_format", "monai_version"):
        bad = {k: v for k, v in good.items() if k != key}
        with pytest.raises(jsonschema.ValidationError, match=key):
            jsonschema.validate(bad, schema)
    mistyped = {**good, "changelog": ["0.1.0"]}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(mistyped, schema)
    bad_tensor = json.loads(json.dumps(good))
    del bad_tensor["network_data_format"]["inputs"]["image"]["num_channels"]
    with pytest.raises(jsonschema.ValidationError, match="num_channels"):
        jsonschema.validate(bad_tensor, schema)


def test_monai_verify_metadata_cli_offline(tmp_path):
    """``python -m monai.bundle verify_metadata`` skips the download because --filepath exists."""
    result = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "verify_metadata", "--meta_file", str(METADATA[0]),
         "--filepath", str(SCHEMA)],
        capture_output=True, text=True, timeout=180, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "skipped downloading" in result.stderr + result.stdout
    assert "metadata is verified with no error" in result.stderr + result.stdout


def test_monai_verify_metadata_function(tmp_path):
    """The function behind the CLI: the classification bundle passes, a metadata without ``task`` fails."""
    from monai.bundle import verify_metadata

    verify_metadata(meta_file=str(METADATA[1]), filepath=str(SCHEMA))
    broken = tmp_path / "metadata.json"
    broken.write_text(json.dumps({k: v for k, v in json.loads(METADATA[0].read_text()).items() if k != "task"}))
    with pytest.raises(ValueError, match="task"):
        verify_metadata(meta_file=str(broken), filepath=str(SCHEMA))


def test_bundle_layout():
    root = REPO / "bundles" / "radfm"
    for rel in ("configs/metadata.json", "configs/inference.json", "configs/pretrain.json", "configs/instruct.json",
                "configs/multi_gpu_train.json", "configs/logging.conf", "docs/README.md", "LICENSE", "large_files.yml"):
        assert (root / rel).is_file(), rel
    cls_root = REPO / "bundles" / "radfm_classification"
    for rel in ("configs/metadata.json", "configs/train.json", "configs/logging.conf", "docs/README.md", "LICENSE"):
        assert (cls_root / rel).is_file(), rel
    for config in list((root / "configs").glob("*.json")) + list((cls_root / "configs").glob("*.json")):
        json.loads(config.read_text())  # valid JSON
