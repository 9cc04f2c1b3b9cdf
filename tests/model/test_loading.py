"""radfm.load, tied-weight saving and the memory-safe loader."""

from __future__ import annotations

import pytest
import torch

from radfm.model.config import RadFMConfig
from radfm.model.loading import LoadedModel, load
from radfm.model.processing import RadFMProcessor
from radfm.model.radfm import RadFMForConditionalGeneration


def test_load_returns_model_and_processor(tmp_path):
    """``model, processor = radfm.load(...)``: two objects, the processor's tokenizer matching the model."""
    loaded = load("tiny")
    model, processor = loaded
    assert isinstance(loaded, LoadedModel) and len(loaded) == 2
    assert loaded.model is model and loaded.processor is processor and isinstance(processor, RadFMProcessor)
    assert not hasattr(loaded, "preprocessing") and not hasattr(loaded, "preprocess_options")
    assert processor.tokenizer.convert_tokens_to_ids("<image>") == model.config.base_vocab_size
    model.save_pretrained(tmp_path / "m", processor=processor)
    again, processor2 = load(tmp_path / "m", dtype="bfloat16")
    assert again.dtype == torch.bfloat16
    assert processor2.tokenizer.get_vocab() == processor.tokenizer.get_vocab()
    assert processor2.image_processor.grid == processor.image_processor.grid
    with pytest.raises(ValueError, match="neither a model directory nor a preset"):
        load(tmp_path / "missing")


def test_the_model_carries_no_tokenizer_or_processor(tmp_path):
    """Issue 30: the processor travels beside the model (``radfm.load`` returns both), never as an attribute
    of it: no ``model.tokenizer`` / ``model.processor`` for older callers, and ``save_pretrained`` writes a
    processor only when given one."""
    model, processor = load("tiny")
    assert not hasattr(model, "tokenizer") and not hasattr(model, "processor")
    model.save_pretrained(tmp_path / "bare")  # weights and config only: nothing attached to save
    assert not (tmp_path / "bare" / "processor_config.json").exists()
    with pytest.raises(FileNotFoundError, match="processor_config.json"):
        load(tmp_path / "bare")
    model.save_pretrained(tmp_path / "m", processor=processor)
    again, _ = load(tmp_path / "m")
    assert not hasattr(again, "tokenizer") and not hasattr(again, "processor")


def test_tied_embeddings_survive_save_and_load(tmp_path, tiny_base_vocab):
    base = RadFMConfig.preset("tiny")
    llm = dict(base.text_config.to_dict(), model_type="qwen2", vocab_size=tiny_base_vocab, tie_word_embeddings=True)
    model = RadFMForConditionalGeneration(RadFMConfig(text_config=llm, vision_config=base.vision_config, perceiver_config=base.perceiver_config))
    model.save_pretrained(tmp_path / "tied")
    loaded = RadFMForConditionalGeneration.from_pretrained(tmp_path / "tied")
    lm = loaded.language_model
    assert lm.lm_head.weight is lm.get_input_embeddings().weight
    assert torch.equal(lm.lm_head.weight, model.language_model.lm_head.weight)


def test_save_is_atomic_over_an_existing_directory(tmp_path, tiny_model):
    target = tmp_path / "model"
    tiny_model.save_pretrained(target)
    tiny_model.save_pretrained(target)  # replacing works and leaves no temp folders behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_cpu_cast_keeps_ties_and_matches_a_plain_cast(tmp_path, tiny_tokenizer, tiny_base_vocab):
    """radfm.load(dtype=bf16) on the CPU: mapped fp32 weights cast one by one, tied weights stay tied."""
    base = RadFMConfig.preset("tiny")
    llm = dict(base.text_config.to_dict(), model_type="qwen2", vocab_size=tiny_base_vocab, tie_word_embeddings=True)
    model = RadFMForConditionalGeneration(RadFMConfig(text_config=llm, vision_config=base.vision_config, perceiver_config=base.perceiver_config))
    model.save_pretrained(tmp_path / "tied", tokenizer=tiny_tokenizer)
    loaded = load(tmp_path / "tied", device="cpu", dtype="bfloat16").model
    lm = loaded.language_model
    assert lm.lm_head.weight is lm.get_input_embeddings().weight
    expected = {k: v.to(torch.bfloat16) for k, v in model.state_dict().items()}
    got = loaded.state_dict()
    assert all(torch.equal(got[k], expected[k]) for k in expected)


def test_loading_writes_no_progress_bar_into_a_log(capfd):
    """Off a terminal (a log file, CI) transformers' "Loading weights" bar would write carriage-return lines."""
    from transformers.utils import logging as hf_logging

    import radfm
    from radfm.model.loading import demo_model_dir

    radfm.load(demo_model_dir(), device="cpu")
    assert "\r" not in capfd.readouterr().err
    assert hf_logging.is_progress_bar_enabled()  # switched back on afterwards
