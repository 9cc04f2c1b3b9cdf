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
        RadFMConfig(llm={"vocab_size": 10, "hidden_size": 8})
    path = tmp_path / "bad.json"
    path.write_text('{"llm": {"model_type": "llama", "vocab_size": 10, "hidden_size": 8}, "colour": 1}')
    with pytest.raises(ValueError, match=r"bad.json.*colour"):
        RadFMConfig.from_json_file(path)
    with pytest.raises(ValueError, match="num_latents must be 32"):
        RadFMConfig(perceiver={"num_latents": 16})
