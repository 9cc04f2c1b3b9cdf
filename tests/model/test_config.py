from __future__ import annotations

import pytest

from radfm.model.config import RadFMConfig


def test_presets_and_json_round_trip(tmp_path):
    big = RadFMConfig.preset("radfm-14b")
    assert big.base_vocab_size == 32000 and big.hidden_size == 5120
    assert big.vision.dim == 768 and big.vision.depth == 12 and big.perceiver.depth == 6
    tiny = RadFMConfig.preset("tiny", vocab_size=321)
    assert tiny.base_vocab_size == 321 and tiny.total_vocab_size == 321 + 2 + 32 * tiny.max_images
    path = tmp_path / "config.json"
    tiny.to_json_file(path)
    assert RadFMConfig.from_json_file(path) == tiny


def test_bad_config_is_named(tmp_path):
    with pytest.raises(ValueError, match="unknown RadFM preset"):
        RadFMConfig.preset("huge")
    with pytest.raises(ValueError, match="model_type"):
        RadFMConfig(text_config={"vocab_size": 10, "hidden_size": 8})
    with pytest.raises(ValueError, match="num_latents must be 32"):
        RadFMConfig(perceiver_config={"num_latents": 16})
    path = tmp_path / "bad.json"
    path.write_text('{"model_type": "radfm", "text_config": {"model_type": "llama"')
    with pytest.raises(ValueError, match=r"cannot read RadFM config .*bad.json"):
        RadFMConfig.from_json_file(path)


def test_old_format_config_names_the_converter(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"llm": {"model_type": "llama", "vocab_size": 10, "hidden_size": 8}, "vision": {}}')
    with pytest.raises(ValueError, match=r"config.json is an old-format RadFM model folder.*radfm convert OLD_FOLDER"):
        RadFMConfig.from_json_file(path)


@pytest.mark.parametrize("where, value, message", [
    ("text_config", {"vocab_size": 1_000_000_000}, r"text_config.vocab_size = 1000000000 is out of range"),
    ("text_config", {"hidden_size": -4}, r"text_config.hidden_size = -4 is out of range"),
    ("vision_config", {"depth": 10**6}, r"vision_config.depth = 1000000 is out of range"),
    ("text_config", {"num_hidden_layers": 1000, "hidden_size": 30000, "intermediate_size": 100000},
     r"about .* parameters, more than the limit"),
])
def test_absurd_sizes_are_refused_before_building(tmp_path, where, value, message):
    """22-L4: a config.json asking for terabytes is refused by the config, before any tensor exists."""
    base = RadFMConfig.preset("tiny").to_dict()
    base[where].update(value)
    path = tmp_path / "config.json"
    import json

    path.write_text(json.dumps(base))
    with pytest.raises(ValueError, match=message):
        RadFMConfig.from_json_file(path)
