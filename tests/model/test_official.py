"""Parity with the published code on the golden fixture, and loading the published layout."""

from __future__ import annotations

import gzip
import json

import pytest
import torch

from radfm.model.config import RadFMConfig
from radfm.model.official import map_official_keys
from radfm.model.radfm import RadFMForConditionalGeneration
from radfm.model.weights import CheckpointError

CASES = ("xray2d", "ct3d_two_scans")


def _check_parity(model: RadFMForConditionalGeneration, case: dict[str, torch.Tensor]) -> None:
    images = case["vision_x_uint8"].float() / 255.0
    with torch.no_grad():
        logits = model(input_ids=case["input_ids"], images=images).logits
    assert logits.shape == case["logits"].shape
    assert (logits - case["logits"]).abs().max().item() < 1e-4
    expected = case["greedy_new_tokens"]
    new = model.generate(input_ids=case["input_ids"], images=images, max_new_tokens=len(expected))
    assert new[0].tolist() == expected.tolist()


@pytest.mark.parametrize("name", CASES)
def test_from_official_matches_published_outputs(official_model, official_cases, name):
    _check_parity(official_model, official_cases[name])


def test_images_as_nested_lists_match_published_layout(official_model, official_cases):
    case = official_cases["ct3d_two_scans"]
    images = [[img.float() / 255.0 for img in case["vision_x_uint8"][0]]]
    with torch.no_grad():
        logits = official_model(input_ids=case["input_ids"], images=images).logits
    assert (logits - case["logits"]).abs().max().item() < 1e-4


def test_save_pretrained_round_trip_keeps_parity(official_model, official_cases, tmp_path, tiny_tokenizer):
    out = tmp_path / "model"
    official_model.save_pretrained(out, tokenizer=tiny_tokenizer, max_shard_size=4_000_000)
    shards = sorted(p.name for p in out.glob("model-*.safetensors"))
    assert len(shards) > 1  # sharded
    assert (out / "config.json").is_file() and (out / "tokenizer.json").is_file()
    loaded = RadFMForConditionalGeneration.from_pretrained(out)
    assert (out / "processor_config.json").is_file() and (out / "tokenizer_config.json").is_file()
    for name in CASES:
        _check_parity(loaded, official_cases[name])


def test_radfm_convert_cli_keeps_parity(official_tiny_dir, official_fixture, official_cases, tmp_path):
    from radfm.cli import main

    llm_config = tmp_path / "llm_config.json"
    llm_config.write_text(json.dumps(official_fixture["llm_config"]))
    out = tmp_path / "converted"
    main(["convert", str(official_tiny_dir / "pytorch_model.bin"), "--llm-config", str(llm_config), "--output", str(out)])
    loaded = RadFMForConditionalGeneration.from_pretrained(out)
    for name in CASES:
        _check_parity(loaded, official_cases[name])


def test_bfloat16_load_casts_every_float_tensor(official_tiny_dir, official_fixture):
    model = RadFMForConditionalGeneration.from_official(
        official_tiny_dir / "pytorch_model.bin", llm_config=official_fixture["llm_config"], dtype="bfloat16"
    )
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def _official_state(official_tiny_dir) -> dict[str, torch.Tensor]:
    return torch.load(official_tiny_dir / "pytorch_model.bin", weights_only=True)


def test_unknown_keys_and_wrong_shapes_are_listed(official_tiny_dir, official_fixture, tmp_path):
    state = _official_state(official_tiny_dir)
    state["embedding_layer.surprise.weight"] = torch.zeros(2)
    bad = tmp_path / "unknown.bin"
    torch.save(state, bad)
    with pytest.raises(CheckpointError, match="embedding_layer.surprise.weight"):
        RadFMForConditionalGeneration.from_official(bad, llm_config=official_fixture["llm_config"])

    state = _official_state(official_tiny_dir)
    state["embedding_layer.fc.bias"] = torch.zeros(7)
    del state["lang_model.model.norm.weight"]
    bad = tmp_path / "shape.bin"
    torch.save(state, bad)
    with pytest.raises(CheckpointError) as info:
        RadFMForConditionalGeneration.from_official(bad, llm_config=official_fixture["llm_config"])
    message = str(info.value)
    assert "projection.bias: file [7]" in message
    assert "language_model.model.norm.weight" in message and "missing" in message


def test_non_weights_pickle_is_refused(tmp_path, official_fixture):
    import argparse

    bad = tmp_path / "code.bin"
    torch.save({"weights": torch.zeros(1), "obj": argparse.Namespace(run="code")}, bad)
    with pytest.raises(CheckpointError, match="refused"):
        RadFMForConditionalGeneration.from_official(bad, llm_config=official_fixture["llm_config"])


def test_radfm_14b_on_meta_matches_published_key_list(data_files):
    with gzip.open(data_files / "official_state_dict_keys.tsv.gz", "rt") as handle:
        rows = [line.rstrip("\n").split("\t") for line in handle][1:]
    published = {key: tuple(int(n) for n in shape.split("x")) if shape else () for key, shape in rows}
    mapping, dropped, unknown = map_official_keys(published)
    assert unknown == []
    assert any(k.endswith("rotary_emb.inv_freq") for k in dropped)
    assert "lang_model.model.embed_tokens.weight" in dropped  # shared, kept once
    model = RadFMForConditionalGeneration.empty(RadFMConfig.preset("radfm-14b"))
    assert next(model.parameters()).device.type == "meta"
    ours = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    expected = {mapping[key]: published[key] for key in mapping}
    assert ours == expected
    n_params = sum(t.numel() for t in model.parameters())
    assert 13.0e9 < n_params < 13.3e9  # MedLLaMA-13B + vision/perceiver (BERT etc. dropped)


def test_legacy_pickle_format_loads_without_mmap(official_tiny_dir, official_fixture, official_cases, tmp_path):
    legacy = tmp_path / "legacy.bin"
    torch.save(_official_state(official_tiny_dir), legacy, _use_new_zipfile_serialization=False)
    model = RadFMForConditionalGeneration.from_official(legacy, llm_config=official_fixture["llm_config"])
    _check_parity(model, official_cases["ct3d_two_scans"])
