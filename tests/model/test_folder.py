"""A model folder is data, never code: custom code is refused without a prompt, weights must cover the
network its config describes (checked from the headers, before anything is allocated), and the
recorded grid must fit the vision encoder."""

from __future__ import annotations

import builtins
import io
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import AutoModelForImageTextToText

import radfm
from radfm.model.folder import check_model_folder
from radfm.model.loading import demo_model_dir
from radfm.model.processing import RadFMProcessor


@pytest.fixture()
def folder(tmp_path) -> Path:
    """A copy of the demo model folder to spoil."""
    copy = tmp_path / "model"
    shutil.copytree(demo_model_dir(), copy)
    return copy


def _edit_json(path: Path, change) -> None:
    values = json.loads(path.read_text(encoding="utf-8"))
    change(values)
    path.write_text(json.dumps(values), encoding="utf-8")


class _Stdin(io.StringIO):
    """Answers "y" to any prompt, and remembers whether anything read it."""

    def __init__(self) -> None:
        super().__init__("y\n" * 10)

    @property
    def was_read(self) -> bool:
        return self.tell() > 0


def test_a_folder_naming_custom_code_is_refused_without_reading_stdin(folder, tmp_path, monkeypatch):
    """transformers asks "Do you wish to run the custom code? [y/N]" for an auto_map with an unknown
    tokenizer class; a "y" on stdin would import the folder's Python. Every load path refuses instead."""
    marker = tmp_path / "custom-code-ran"
    (folder / "custom_tokenizer.py").write_text(textwrap.dedent(f"""
        from pathlib import Path
        Path({str(marker)!r}).write_text("ran")
        from transformers import PreTrainedTokenizerFast as CustomTokenizer
    """), encoding="utf-8")

    def name_custom_code(values: dict) -> None:
        values["tokenizer_class"] = "CustomTokenizer"
        values["auto_map"] = {"AutoTokenizer": ["custom_tokenizer.CustomTokenizer", None]}

    _edit_json(folder / "tokenizer_config.json", name_custom_code)
    stdin = _Stdin()
    prompts = []
    monkeypatch.setattr(sys, "stdin", stdin)
    monkeypatch.setattr(builtins, "input", lambda *args: prompts.append(args) or stdin.readline().strip())

    with pytest.raises(ValueError, match=r"tokenizer_config\.json: names custom code \(auto_map\)"):
        radfm.load(folder, device="cpu")
    with pytest.raises(ValueError, match="custom code"):  # the processor on its own (no folder check first)
        RadFMProcessor.from_pretrained(folder)
    with pytest.raises(ValueError, match="trust_remote_code=True is refused"):
        RadFMProcessor.from_pretrained(folder, trust_remote_code=True)
    assert prompts == [] and not stdin.was_read and not marker.exists()


def test_a_config_naming_custom_code_is_refused(folder):
    _edit_json(folder / "config.json", lambda values: values.update(
        auto_map={"AutoModelForImageTextToText": "modeling_custom.CustomModel"}))
    with pytest.raises(ValueError, match=r"config\.json: names custom code \(auto_map\)"):
        radfm.load(folder, device="cpu")


def test_weights_holding_one_unrelated_tensor_are_refused_naming_what_is_missing(folder):
    """Not a random model: the folder must hold the weights its config names."""
    save_file({"unrelated": torch.zeros(4)}, str(folder / "model.safetensors"))
    with pytest.raises(ValueError, match=r"the weights do not cover the model .* 98 of the model's 98 tensors "
                                               r"are missing: figure_token_weight, vision_encoder\."):
        radfm.load(folder, device="cpu")


def test_a_missing_or_reshaped_tensor_is_named(folder):
    with safe_open(str(folder / "model.safetensors"), framework="pt") as handle:
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    dropped = "language_model.model.layers.3.mlp.down_proj.weight"
    del tensors[dropped]
    save_file(tensors, str(folder / "model.safetensors"))
    with pytest.raises(ValueError, match=rf"1 of the model's 98 tensors are missing: {dropped}\. Nothing was loaded"):
        radfm.load(folder, device="cpu")
    tensors[dropped] = torch.zeros(3, 3)
    save_file(tensors, str(folder / "model.safetensors"))
    with pytest.raises(ValueError, match=rf"stored at another shape: {dropped} \[3, 3\] \(config\.json: \[192, 384\]\)"):
        AutoModelForImageTextToText.from_pretrained(folder)  # the Auto path checks the same


# Runs in its own process so that its peak RSS is the load's own.
_PEAK_SCRIPT = """
import json, resource, sys
import radfm
from radfm.model.config import RadFMConfig

radfm.load(sys.argv[1], device="cpu")  # the complete demo folder first: imports and the processor are warm
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
try:
    radfm.load(sys.argv[2], device="cpu")
    outcome = "loaded"
except ValueError as error:
    outcome = str(error)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
described = RadFMConfig.from_json_file(sys.argv[2] + "/config.json").estimated_parameters() * 4
print(json.dumps({"outcome": outcome, "grew": after - before, "described": described}))
"""


def test_a_config_larger_than_its_weights_is_refused_before_allocation(folder):
    """A 1 KiB config.json with wide layers and no weights for them: refused from the headers, while
    the peak RSS stays far below the ~1.9 GB the config describes (measured in a subprocess)."""
    _edit_json(folder / "config.json", lambda values: values["text_config"].update(
        hidden_size=4096, intermediate_size=4096, num_hidden_layers=4, num_attention_heads=32,
        num_key_value_heads=32, head_dim=128))
    run = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT, str(demo_model_dir()), str(folder)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert "the weights do not cover the model" in result["outcome"], result["outcome"]
    assert result["described"] > 1.5e9
    assert result["grew"] < 128 * 2**20, f"peak RSS grew {result['grew'] / 2**20:.0f} MiB while refusing"


@pytest.mark.parametrize("grid, reason", [
    ({"size_2d": [16384, 16384], "size_3d": [16384, 16384], "max_depth": 4096}, r"H, W must be at most 512"),
    ({"size_3d": [256, 256], "max_depth": 1024}, r"D at most 512"),
])
def test_a_grid_the_vision_encoder_cannot_take_is_refused_at_load(folder, grid, reason):
    """Before: accepted at load, then every scan was preprocessed to the grid (1.6 GB) before generate refused it."""
    _edit_json(folder / "processor_config.json", lambda values: values["image_processor"].update(grid))
    with pytest.raises(ValueError, match=rf"processor_config\.json: the recorded grid does not fit the model's "
                                               rf"vision encoder \(patch 32x32x4, position tables \[16, 16, 128\]\): .*{reason}"):
        radfm.load(folder, device="cpu")


def test_a_folder_that_does_not_exist_is_named_as_missing(tmp_path):
    from radfm.model.loading import resolve_model_dir

    with pytest.raises(FileNotFoundError, match="does not exist") as raised:
        resolve_model_dir(tmp_path / "no-such-model")
    assert "no config.json" not in str(raised.value)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        check_model_folder(tmp_path / "no-such-model")
