"""Every ``python -m monai.bundle`` command shown in the bundle READMEs, exercised with tiny overrides.

Commands are read from the READMEs' bash blocks and parsed as MONAI's command line parses them
(``fire``: literal values, else strings), then run in-process in the bundle folder with overrides
that point them at phantom data and temporary outputs. Inference, evaluation and export commands
run to the end; training commands are built and their trainer instantiated (full training runs of
the same configs are in test_radfm_bundle.py / test_classification_bundle.py); ``torchrun`` lines
are covered by the DDP/FSDP tests.
"""

from __future__ import annotations

import ast
import json
import re
import shlex
import subprocess
import sys

import pytest

from .conftest import CLASSIFICATION_BUNDLE, RADFM_BUNDLE, SMALL_GRID


def _commands(readme):
    blocks = re.findall(r"```bash\n(.*?)```", readme.read_text(), flags=re.S)
    text = "\n".join(blocks).replace("\\\n", " ")
    lines = [re.sub(r"\s+#.*$", "", line).strip() for line in text.splitlines()]
    return [line for line in lines if line.startswith(("python -m monai.bundle", "python -c"))]


def _parse(command):
    """``python -m monai.bundle <cmd> [positional] --key value ...`` → (cmd, positional, kwargs) like fire."""
    tokens = [t.replace("\\$", "$") for t in shlex.split(command)[3:]]  # bash drops the \ of "\$" (shlex keeps it)
    name, rest = tokens[0], tokens[1:]
    positional = [t for t in rest[:1] if not t.startswith("--")]
    rest = rest[len(positional):]
    kwargs = {}
    for key, value in zip(rest[::2], rest[1::2]):
        try:
            kwargs[key[2:]] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            kwargs[key[2:]] = value
    return name, positional, kwargs


RADFM_COMMANDS = [c for c in _commands(RADFM_BUNDLE / "docs" / "README.md") if "monai.bundle" in c]
CLASSIFICATION_COMMANDS = _commands(CLASSIFICATION_BUNDLE / "docs" / "README.md")


def test_readmes_show_the_commands():
    assert len(RADFM_COMMANDS) >= 9 and len(CLASSIFICATION_COMMANDS) >= 4
    assert any("'configs/train.json','configs/instruct.json'" in c for c in RADFM_COMMANDS)
    assert any("--tracking mlflow" in c and "sqlite:///" in c for c in RADFM_COMMANDS)


def _run(name, positional, kwargs, train):
    from monai.bundle import ckpt_export
    from monai.bundle.scripts import create_workflow, run

    if name == "ckpt_export":
        ckpt_export(*positional, **kwargs)
    elif train:
        workflow = create_workflow(workflow_type="train", **kwargs)
        assert workflow.check_properties() == []
        workflow.parser.get_parsed_content("train#trainer")
    else:
        run(**kwargs)


@pytest.mark.parametrize("command", RADFM_COMMANDS, ids=range(len(RADFM_COMMANDS)))
def test_radfm_readme_command(command, phantom_data, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(RADFM_BUNDLE)
    name, positional, kwargs = _parse(command)
    config = str(kwargs["config_file"])
    train = "train.json" in config
    if train:
        kwargs.update(train_manifest=str(phantom_data["train"]), val_manifest=str(phantom_data["val"]),
                      output_dir=str(tmp_path / "out"), max_length=192)
        if kwargs.get("model") == "runs/pretrain/model":  # stage 1's output: make it first (tiny, 64² grid)
            from radfm.engines.build import load_model
            from radfm.model.processing import RadFMImageProcessor

            model, processor = load_model("tiny")
            model.save_pretrained(tmp_path / "pretrain_model", processor=processor)
            RadFMImageProcessor.at_grid(SMALL_GRID).save_grid(tmp_path / "pretrain_model")
            kwargs["model"] = str(tmp_path / "pretrain_model")
        if "image_grid" not in kwargs and "instruct.json" not in config:
            kwargs["image_grid"] = SMALL_GRID
        if "instruct.json" in config and "model" not in kwargs:
            kwargs["image_grid"] = {"size_2d": [128, 128], "size_3d": [128, 128], "max_depth": 8}  # the demo's own
        if isinstance(kwargs.get("scan_dataset"), dict) and "cache_dir" in kwargs["scan_dataset"]:
            kwargs["scan_dataset"]["cache_dir"] = str(tmp_path / "scan_cache")  # not into the bundle folder
        if "tracking_uri" in kwargs:
            kwargs["tracking_uri"] = f"sqlite:///{tmp_path / 'mlruns.db'}"
    elif "evaluate.json" in config:
        kwargs.update(manifest=str(phantom_data["val"]), split="val", output_dir=str(tmp_path / "eval"), max_new_tokens=2)
    else:
        kwargs.update(max_new_tokens=2)
        if kwargs.get("model_dir") == "models/radfm-14b":  # a saved (safetensors) model folder: the demo's
            kwargs["model_dir"] = str(RADFM_BUNDLE / "models" / "demo")
    _run(name, positional, kwargs, train)
    if "inference.json" in config:
        out = capsys.readouterr().out
        assert out.count("  A: ") == 4, out[-2000:]


def test_radfm_readme_export_command(tmp_path):
    (command,) = [c for c in _commands(RADFM_BUNDLE / "docs" / "README.md") if c.startswith("python -c")]
    code = shlex.split(command)[2].replace("'runs/instruct/model'", repr(str(RADFM_BUNDLE / "models" / "demo")))
    code = code.replace("'models/model.pt'", repr(str(tmp_path / "model.pt")))
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
    import torch

    exported = torch.load(tmp_path / "model.pt", weights_only=True)
    shipped = torch.load(RADFM_BUNDLE / "models" / "model.pt", weights_only=True)
    assert exported.keys() == shipped.keys() and all(torch.equal(exported[k], shipped[k]) for k in shipped)


@pytest.mark.parametrize("command", CLASSIFICATION_COMMANDS, ids=range(len(CLASSIFICATION_COMMANDS)))
def test_classification_readme_command(command, phantom_data, tmp_path, monkeypatch):
    monkeypatch.chdir(CLASSIFICATION_BUNDLE)
    name, positional, kwargs = _parse(command)
    cases = [c for c in phantom_data["cases"] if c["dims"] == 2]
    items = tmp_path / "items.json"
    items.write_text(json.dumps([{"image": str(phantom_data["dir"] / c["image"]),
                                  "label": ["X-ray", "ultrasound"].index(c["modality"])} for c in cases]))
    config = str(kwargs.get("config_file"))
    train = "train.json" in config
    if name == "ckpt_export":
        kwargs["filepath"] = str(tmp_path / "model.ts")
    elif train:
        kwargs.update(train_items=str(items), val_items=str(items), ckpt_dir=str(tmp_path / "models"),
                      output_dir=str(tmp_path / "runs"), epochs=1, image_grid=SMALL_GRID)
    else:
        kwargs.update(output_dir=str(tmp_path / "eval"))
        if "test_items" in kwargs:
            kwargs["test_items"] = str(items)
    _run(name, positional, kwargs, train)
    if name == "ckpt_export":
        assert (tmp_path / "model.ts").is_file()
    elif "inference.json" in config:
        assert len((tmp_path / "eval" / "predictions.csv").read_text().splitlines()) == 2
    elif "evaluate.json" in config:
        assert "macro_auc" in (tmp_path / "eval" / "metrics.csv").read_text()
