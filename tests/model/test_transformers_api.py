"""RadFM as a transformers model: Auto classes, save/load, streaming, PEFT, folder checks (issue 21, 22-M6/L4)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import threading

import pytest
import torch

import radfm  # noqa: F401  (registers RadFM with transformers' Auto classes)
from radfm.model.loading import load
from radfm.model.radfm import RadFMForConditionalGeneration
from radfm.utils.resources import bundle_dir

DEMO = bundle_dir("radfm") / "models" / "demo"


@pytest.fixture(scope="module")
def auto_demo():
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(DEMO)
    model = AutoModelForImageTextToText.from_pretrained(DEMO).eval()
    return processor, model


def _quick_start_cases() -> list[dict]:
    from monai.bundle import ConfigParser

    parser = ConfigParser()  # the default cases name the shipped scans through $@dataset_dir
    parser.read_config(str(bundle_dir("radfm") / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle_dir("radfm"))
    return parser.get_parsed_content("cases")


def test_auto_classes_answer_the_quick_start_like_the_demo(auto_demo, capsys):
    """The four quick-start questions: AutoProcessor + AutoModelForImageTextToText == `python -m radfm.demo`."""
    from radfm.demo import main

    processor, model = auto_demo
    assert type(model) is RadFMForConditionalGeneration
    main(max_new_tokens=8)
    printed = capsys.readouterr().out
    expected = [line.split("A: ", 1)[1].strip() for line in printed.splitlines() if line.startswith("  A: ")]
    assert len(expected) == 4
    sample_data = bundle_dir("radfm") / "sample_data"
    answers = []
    for case in _quick_start_cases():
        inputs = processor(text=case["prompt"], images=[str(sample_data / name) for name in case["images"]])
        new_tokens = model.generate(**inputs, max_new_tokens=8)
        answers.append(processor.batch_decode(new_tokens)[0])
    assert answers == expected


def test_chat_template_places_image_parts(auto_demo):
    processor, _ = auto_demo
    messages = [{"role": "user", "content": [{"type": "text", "text": "What is the modality of the input scan "},
                                             {"type": "image"}, {"type": "text", "text": "?"}]}]
    assert processor.apply_chat_template(messages, tokenize=False) == _quick_start_cases()[2]["prompt"]


def test_save_and_load_round_trip_gives_identical_logits(auto_demo, tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor, model = auto_demo
    model.save_pretrained(tmp_path / "again", max_shard_size="2MB")  # sharded safetensors
    processor.save_pretrained(tmp_path / "again")
    assert len(list((tmp_path / "again").glob("model-*.safetensors"))) > 1
    again = AutoModelForImageTextToText.from_pretrained(tmp_path / "again").eval()
    processor2 = AutoProcessor.from_pretrained(tmp_path / "again")
    assert processor2.image_processor.grid == processor.image_processor.grid
    inputs = processor(text=["<image> What is the modality?", "No image here."],
                       images=[[torch.rand(1, 70, 90)], []])
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, again(**inputs).logits)


def test_text_iterator_streamer_streams(auto_demo):
    from transformers import TextIteratorStreamer

    processor, model = auto_demo
    inputs = processor(text="What is the modality of the input scan <image>?", images=[torch.rand(1, 64, 64, 12)])
    streamer = TextIteratorStreamer(processor.tokenizer, skip_special_tokens=True)
    thread = threading.Thread(target=model.generate, kwargs={**inputs, "max_new_tokens": 6, "streamer": streamer})
    thread.start()
    pieces = list(streamer)
    thread.join()
    reference = processor.batch_decode(model.generate(**inputs, max_new_tokens=6))[0]
    assert len(pieces) >= 1 and "".join(pieces).strip() == reference


def test_peft_lora_trains_one_step():
    from peft import LoraConfig, get_peft_model

    loaded = load("tiny", device="cpu")
    model = get_peft_model(loaded.model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    inputs = loaded.processor(text=["<image> findings?"], images=[[torch.rand(3, 64, 64, 8)]])
    labels = inputs["input_ids"].clone()
    labels[labels >= loaded.processor.base_vocab_size] = -100
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    loss = model(**inputs, labels=labels).loss
    loss.backward()
    optimizer.step()
    moved = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, trainable[n])]
    assert torch.isfinite(loss) and moved


def test_gradient_checkpointing_and_sdpa_are_transformers(auto_demo):
    _, model = auto_demo
    assert model.supports_gradient_checkpointing
    assert model.config.text_config._attn_implementation == "sdpa"
    assert {"VisionEncoder3D", "PerceiverResampler", "LlamaDecoderLayer"} <= set(model._no_split_modules)


@pytest.mark.parametrize("missing", ["processor_config.json", "tokenizer_config.json"])
def test_folder_without_processor_files_is_refused_naming_the_file(tmp_path, missing):
    """22-M6: no silent default grid; the missing file is named (radfm.load and AutoProcessor)."""
    from transformers import AutoProcessor

    folder = tmp_path / "model"
    shutil.copytree(DEMO, folder)
    (folder / missing).unlink()
    with pytest.raises(FileNotFoundError, match=missing):
        load(folder)
    with pytest.raises(FileNotFoundError, match=missing):
        AutoProcessor.from_pretrained(folder)


@pytest.mark.parametrize("name, content, message", [
    ("config.json", "{not json", r"config.json: not readable JSON"),
    ("processor_config.json", '{"image_processor": ', r"processor_config.json: not readable JSON"),
    ("processor_config.json", '{"image_processor": {"size_2d": [60, 64]}}', r"processor_config.json.*size_2d"),
    ("tokenizer_config.json", "\x00\x01", r"tokenizer_config.json: not readable JSON"),
    ("model.safetensors", "garbage", r"model.safetensors"),
])
def test_corrupt_folder_names_the_file(tmp_path, name, content, message):
    """22-L4: a corrupt model folder's error names the file."""
    folder = tmp_path / "model"
    shutil.copytree(DEMO, folder)
    (folder / name).write_text(content)
    with pytest.raises(ValueError, match=message):
        load(folder, device="cpu")


def test_absurd_vocab_size_is_refused_before_allocation(tmp_path):
    """22-L4: vocab_size 1e9 is refused by the config check, naming the field and the limit."""
    folder = tmp_path / "model"
    shutil.copytree(DEMO, folder)
    config = json.loads((folder / "config.json").read_text())
    config["text_config"]["vocab_size"] = 1_000_000_000
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"text_config.vocab_size = 1000000000 is out of range"):
        load(folder, device="cpu")


def test_old_format_folder_names_the_converter_and_converts(tmp_path):
    """An old-format folder: one clear line naming `radfm convert`; the converter keeps every tensor."""
    from radfm.model.convert import convert

    reference = load(DEMO, device="cpu").model.state_dict()
    old = tmp_path / "old"
    old.mkdir()
    config = json.loads((DEMO / "config.json").read_text())
    legacy = {"llm": config["text_config"], "vision": config["vision_config"],
              "perceiver": config["perceiver_config"], "max_images": config["max_images"]}
    for part in ("vision", "perceiver"):
        legacy[part] = {k: v for k, v in legacy[part].items() if k not in ("model_type", "dtype")}
    (old / "config.json").write_text(json.dumps(legacy))
    for name in ("model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy2(DEMO / name, old / name)
    grid = json.loads((DEMO / "processor_config.json").read_text())["image_processor"]
    (old / "preprocess.json").write_text(json.dumps({k: grid[k] for k in ("size_2d", "size_3d", "max_depth")}))
    for loader in (lambda: load(old, device="cpu"), lambda: RadFMForConditionalGeneration.from_pretrained(old)):
        with pytest.raises(ValueError) as error:
            loader()
        assert "old-format" in str(error.value) and "radfm convert" in str(error.value)
        assert "\n" not in str(error.value)
    # the upgrade is the converter's alone: no loader-side module for old folders is left (issue 30)
    assert importlib.util.find_spec("radfm.model.legacy") is None
    convert(str(old), output=str(tmp_path / "new"))
    converted = load(tmp_path / "new", device="cpu")
    assert converted.processor.image_processor.grid == {k: grid[k] for k in ("size_2d", "size_3d", "max_depth")}
    state = converted.model.state_dict()
    assert state.keys() == reference.keys() and all(torch.equal(state[k], reference[k]) for k in state)
