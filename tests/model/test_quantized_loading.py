"""Quantised loading on the CPU (bitsandbytes' CPU backend): ``radfm.load(..., quantization=)`` and transformers'
``AutoModelForImageTextToText.from_pretrained(..., quantization_config=)`` replace the language model's Linear
layers with bitsandbytes' kinds, keep the vision side, the perceiver, the projection and the LM head in full
precision, and the model still answers."""

from __future__ import annotations

import bitsandbytes as bnb  # the test extra installs it (setup.py); a missing package fails, it does not skip
import pytest
import torch

from radfm.model.loading import load, quantization_config

KEPT = ("vision_encoder", "perceiver", "projection", "language_model.lm_head")
QUANTISED = {"8bit": bnb.nn.Linear8bitLt, "4bit": bnb.nn.Linear4bit}


def _linear_kinds(model: torch.nn.Module) -> tuple[dict[str, type], dict[str, type]]:
    """``(language model's decoder Linear layers, kept parts' Linear layers)`` -> their classes."""
    layers = {name: type(module) for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}
    decoder = {name: kind for name, kind in layers.items() if name.startswith("language_model.model.")}
    kept = {name: kind for name, kind in layers.items() if name.startswith(KEPT)}
    return decoder, kept


def _images() -> list[torch.Tensor]:
    torch.manual_seed(3)
    return [torch.rand(3, 64, 64, 8)]


def _answer(model: torch.nn.Module, processor, prompt: str, max_new_tokens: int) -> list[str]:
    """The processor's batch -> transformers' ``generate`` -> the processor's decode."""
    inputs = processor(text=[prompt], images=[_images()])
    new_tokens = model.generate(**inputs, max_new_tokens=max_new_tokens, eos_token_id=processor.tokenizer.eos_token_id,
                                pad_token_id=processor.tokenizer.pad_token_id)
    return processor.batch_decode(new_tokens)


@pytest.mark.parametrize("bits", ["8bit", "4bit"])
def test_radfm_load_quantises_the_language_model_only_and_answers(tiny_model_dir, bits):
    plain, _ = load(tiny_model_dir, device="cpu", dtype="float32")
    model, processor = load(tiny_model_dir, dtype="float32", quantization=bits)
    decoder, kept = _linear_kinds(model)
    assert decoder and all(kind is QUANTISED[bits] for kind in decoder.values()), decoder
    assert kept and all(kind is torch.nn.Linear for kind in kept.values()), kept
    assert model.is_quantized and model.hf_quantizer is not None
    for name, tensor in model.state_dict().items():
        if name.startswith(KEPT):  # the kept parts load the stored weights unchanged
            assert torch.equal(tensor.float(), plain.state_dict()[name].float()), name
    answer = _answer(model, processor, "<image> What is shown?", max_new_tokens=5)
    assert isinstance(answer[0], str) and answer[0].strip()
    with torch.no_grad():  # close to the unquantised model: the same weights, only rounded
        ids = torch.tensor([[1, 5, 6, 7, 8, 9]])
        logits, reference = model(input_ids=ids).logits, plain(input_ids=ids).logits
    assert torch.isfinite(logits).all()
    similarity = torch.nn.functional.cosine_similarity(logits.flatten(), reference.flatten(), dim=0)
    print(f"{bits}: cosine similarity of the logits to the unquantised model's {similarity:.4f}; answer {answer!r}")
    assert similarity > 0.9


def test_auto_class_takes_the_same_quantisation_config(tiny_model_dir):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    import radfm  # noqa: F401  (registers RadFM with the Auto classes)

    config = quantization_config("4bit", torch.float32)
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, quantization_config=config, device_map="cpu",
                                                        dtype=torch.float32)
    decoder, kept = _linear_kinds(model)
    assert decoder and all(kind is bnb.nn.Linear4bit for kind in decoder.values())
    assert all(kind is torch.nn.Linear for kind in kept.values())
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    answer = _answer(model, processor, "<image> Findings?", max_new_tokens=4)
    assert isinstance(answer[0], str) and answer[0].strip()
