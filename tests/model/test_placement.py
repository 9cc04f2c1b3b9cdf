"""radfm.load with device maps on CPU (transformers' loading): half of the LLM layers offloaded to disk gives
identical outputs; the vision side stays with the token embeddings."""

from __future__ import annotations

import pytest
import torch

from radfm.model.loading import load, parse_max_memory


@pytest.fixture(scope="module")
def plain(tiny_model_dir):
    model, processor = load(tiny_model_dir, device="cpu", dtype="float32")
    return model, processor.tokenizer


@pytest.fixture(scope="module")
def inputs(plain):
    model, _ = plain
    torch.manual_seed(1)
    base = model.config.base_vocab_size
    images = [torch.rand(3, 64, 64, 8), torch.rand(3, 128, 128, 4)]
    # two image blocks (slots 0 and 1) between text tokens
    ids = [1, base, *range(base + 2, base + 34), base + 1, 7, 8, base, *range(base + 34, base + 66), base + 1, 9, 10]
    return torch.tensor([ids]), [images]


def _offload_half_map(num_layers: int) -> dict[str, str]:
    device_map = {name: "cpu" for name in ("vision_encoder", "perceiver", "projection", "figure_token_weight",
                                           "language_model.model.embed_tokens", "language_model.model.norm",
                                           "language_model.model.rotary_emb")}
    for layer in range(num_layers):
        device_map[f"language_model.model.layers.{layer}"] = "cpu" if layer < num_layers // 2 else "disk"
    device_map["language_model.lm_head"] = "disk"
    return device_map


def test_disk_offload_of_half_the_layers_gives_identical_outputs(tiny_model_dir, tmp_path, plain, inputs, answers):
    model, tokenizer = plain
    layers = model.config.text_config.num_hidden_layers
    offloaded, _ = load(tiny_model_dir, device_map=_offload_half_map(layers), dtype="float32",
                           offload_folder=str(tmp_path / "offload"))
    on_meta = {n for n, p in offloaded.named_parameters() if p.device.type == "meta"}
    assert any(f"layers.{layers - 1}." in n for n in on_meta) and not any("layers.0." in n for n in on_meta)
    ids, images = inputs
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids, images=images).logits, offloaded(input_ids=ids, images=images).logits)
    prompt = ["<image> and <image>: findings?"]
    assert answers(model, tokenizer, prompt, images, max_new_tokens=6) == \
        answers(offloaded, tokenizer, prompt, images, max_new_tokens=6)


def test_auto_device_map_with_memory_cap_spills_to_disk(tiny_model_dir, tmp_path, plain, inputs):
    model, _ = plain
    vision_bytes = sum(p.numel() * 4 for n, p in model.named_parameters() if not n.startswith("language_model"))
    llm_bytes = sum(p.numel() * 4 for p in model.language_model.parameters())
    capped, _ = load(tiny_model_dir, device_map="sequential", dtype="float32",
                        max_memory={"cpu": vision_bytes + llm_bytes // 2}, offload_folder=str(tmp_path / "off"))
    placed = set(capped.hf_device_map.values())
    assert placed == {"cpu", "disk"}
    assert capped.hf_device_map["vision_encoder"] == capped.hf_device_map["language_model.model.embed_tokens"] == "cpu"
    ids, images = inputs
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids, images=images).logits, capped(input_ids=ids, images=images).logits)


def test_vision_side_must_share_the_embedding_device(tiny_model_dir, plain, tmp_path):
    device_map = _offload_half_map(plain[0].config.text_config.num_hidden_layers)
    device_map["perceiver"] = "disk"
    with pytest.raises(ValueError, match="perceiver.*disk.*embed_tokens.*cpu"):
        load(tiny_model_dir, device_map=device_map, offload_folder=str(tmp_path))


def test_bf16_loading(tiny_model_dir):
    model, _ = load(tiny_model_dir, device="cpu", dtype="bfloat16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_quantized_loading_is_guarded(tiny_model_dir, monkeypatch):
    with pytest.raises(ValueError, match="'2bit': expected '8bit' or '4bit'"):
        load(tiny_model_dir, quantization="2bit")
    monkeypatch.setitem(__import__("sys").modules, "bitsandbytes", None)  # not installed
    with pytest.raises(RuntimeError, match="pip install bitsandbytes"):
        load(tiny_model_dir, quantization="4bit")


def test_parse_max_memory():
    assert parse_max_memory("0=22GiB, 1=22GiB,cpu=64GiB") == {0: "22GiB", 1: "22GiB", "cpu": "64GiB"}
    assert parse_max_memory({"cuda:0": "10GiB"}) == {0: "10GiB"}
    with pytest.raises(ValueError, match="gpu7"):
        parse_max_memory("gpu7=1GiB")
