from __future__ import annotations

import pytest

from radfm.model.config import RadFMConfig


def test_presets_and_json_round_trip(tmp_path):
    big = RadFMConfig.preset("radfm-14b")
    assert big.base_vocab_size == 32000 and big.hidden_size == 5120
    assert big.vision_config.dim == 768 and big.vision_config.depth == 12 and big.perceiver_config.depth == 6
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


def _without_meta(values: dict) -> dict:
    return {k: v for k, v in values.items() if k not in ("model_type", "transformers_version")}


def test_head_dim_follows_a_changed_hidden_size():
    """A copy of a config with a new width (to_dict, edit, rebuild) derives head_dim again, not the old 64 // 4."""
    values = RadFMConfig.preset("tiny").to_dict()
    values["text_config"].update(hidden_size=128)
    text = RadFMConfig(**_without_meta(values)).text_config
    assert text.head_dim == 128 // text.num_attention_heads == 32


@pytest.mark.parametrize(("overrides", "head_dim"), [
    ({"model_type": "llama", "head_dim": 8}, 8),  # an explicit head_dim unlike hidden // heads
    ({"model_type": "gemma", "head_dim": 16, "hidden_activation": "gelu_pytorch_tanh"}, 16),  # class default 256
])
def test_explicit_head_dim_is_kept(overrides, head_dim):
    tiny = RadFMConfig.preset("tiny").text_config.to_dict()
    text = {k: tiny[k] for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                                 "num_attention_heads", "num_key_value_heads")} | overrides
    values = RadFMConfig(text_config=text).to_dict()
    assert values["text_config"]["head_dim"] == head_dim
    values["text_config"].update(hidden_size=128)
    assert RadFMConfig(**_without_meta(values)).text_config.head_dim == head_dim


def test_cpu_small_preset_is_the_benchmark_model():
    """One small model for every benchmark: 50.2 M parameters (docs/training.md quotes them)."""
    from radfm.model.radfm import RadFMForConditionalGeneration

    config = RadFMConfig.preset("cpu-small")
    assert (config.hidden_size, config.text_config.num_hidden_layers, config.base_vocab_size) == (512, 4, 32000)
    assert (config.vision_config.dim, config.vision_config.depth) == (192, 4)
    assert round(sum(p.numel() for p in RadFMForConditionalGeneration(config).parameters()) / 1e6, 1) == 50.2


def test_names_kept_for_older_callers_are_gone():
    """Issue 30: a 0.x package keeps no aliases: the class has transformers' name only, the config its
    parts' names only (an old config.json is refused on load, naming `radfm convert`)."""
    import radfm
    import radfm.model
    import radfm.model.radfm as module

    base = RadFMConfig.preset("tiny")
    with pytest.raises(TypeError, match="text_config, vision_config and perceiver_config"):
        RadFMConfig(llm=base.text_config.to_dict(), vision=base.vision_config, perceiver=base.perceiver_config)
    assert not any(hasattr(base, name) for name in ("llm", "vision", "perceiver"))
    assert not hasattr(module, "RadFM")
    for package in (radfm, radfm.model):
        with pytest.raises(AttributeError):
            package.RadFM  # noqa: B018
