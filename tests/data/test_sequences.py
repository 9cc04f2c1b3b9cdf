import numpy as np
import pytest

from radfm.data.manifest import ImageRef, Sample
from radfm.data.medical_terms import MedicalTermMatcher, default_matcher
from radfm.data.sequences import IGNORE_INDEX, SequenceBuilder
from radfm.model.processing import block_positions, encode_prompt
from radfm.model.tokenizer import BLOCK_LENGTH


@pytest.fixture()
def builder(tiny_tokenizer, base_vocab_size):
    return SequenceBuilder(tiny_tokenizer, base_vocab_size, max_length=256)


def test_shipped_vocabulary_matches_terms():
    m = default_matcher()
    assert len(m) > 5000
    assert m.terms("Findings: Pneumothorax and a left pleural effusion; no cardiomegaly.") == [
        "pneumothorax", "pleural effusion", "cardiomegaly"]
    assert m.spans("pneumothoraxes are plural") == []  # whole words only


def test_instruction_weights(builder, tiny_tokenizer, base_vocab_size):
    out = builder.instruction("<image> Does the patient have pneumothorax?", "Yes, pneumothorax in the left lung.", 1)
    ids, weights, labels = out["input_ids"].tolist(), out["loss_weights"].tolist(), out["labels"].tolist()
    prompt = encode_prompt(tiny_tokenizer, "<image> Does the patient have pneumothorax?", base_vocab_size=base_vocab_size)
    assert ids[: len(prompt)] == prompt
    assert all(w == 0 for w in weights[: len(prompt)])  # instruction (incl. its "pneumothorax") and image block
    assert all(label == IGNORE_INDEX for label in labels[: len(prompt)])
    resp_ids, resp_w = np.array(ids[len(prompt):-1]), np.array(weights[len(prompt):-1])
    # exactly the tokens of the medical term get 3; the rest of the response 1
    assert tiny_tokenizer.decode(resp_ids[resp_w == 3]) == " pneumothorax lung"  # both in the vocabulary
    assert tiny_tokenizer.decode(resp_ids[resp_w == 1]) == "Yes, in the left."
    assert ids[-1] == tiny_tokenizer.eos_token_id and weights[-1] == 1.0
    assert labels[len(prompt):] == ids[len(prompt):]
    assert out["attention_mask"].tolist() == [1] * len(ids) and out["num_images"] == 1


def test_term_weighting_can_be_disabled(tiny_tokenizer, base_vocab_size):
    b = SequenceBuilder(tiny_tokenizer, base_vocab_size, matcher=False)
    out = b.instruction("<image> q", "pneumothorax", 1)
    assert set(out["loss_weights"].tolist()) == {0.0, 1.0}
    custom = SequenceBuilder(tiny_tokenizer, base_vocab_size, matcher=MedicalTermMatcher(["left lung"]))
    got = custom.instruction("<image> q", "left lung pneumothorax", 1)
    assert sorted(set(got["loss_weights"].tolist())) == [0.0, 1.0, 3.0]


def test_interleaved_weights(builder, tiny_tokenizer, base_vocab_size):
    out = builder(Sample("x", "pmc-inline", [ImageRef("/a.png"), ImageRef("/b.png")],
                         text="As shown in Fig. 1 <image>, a pneumothorax. Then <image> the lung."))
    ids, weights = out["input_ids"].tolist(), out["loss_weights"].tolist()
    spans = block_positions(ids, base_vocab_size)
    assert len(spans) == 2 and out["num_images"] == 2
    for start, end in spans:
        assert weights[start:end] == [0.0] * BLOCK_LENGTH
        assert all(label == IGNORE_INDEX for label in out["labels"].tolist()[start:end])
    assert weights[0] == 0.0  # BOS
    ids_np, w_np = np.array(ids), np.array(weights)
    assert tiny_tokenizer.decode(ids_np[w_np == 3]) == " pneumothorax lung"
    assert "As shown in Fig. 1" in tiny_tokenizer.decode(ids_np[w_np == 1])
    assert ids[-1] == tiny_tokenizer.eos_token_id


def test_truncation_never_cuts_an_image_block(tiny_tokenizer, base_vocab_size):
    text = "word " * 20 + "<image>" + " more" * 5 + "<image> end"
    full = SequenceBuilder(tiny_tokenizer, base_vocab_size, max_length=4096).interleaved(text, 2)
    first_block = block_positions(full["input_ids"].tolist(), base_vocab_size)[0]
    for max_length in range(first_block[0] + 1, first_block[1]):
        out = SequenceBuilder(tiny_tokenizer, base_vocab_size, max_length=max_length).interleaved(text, 2)
        assert len(out["input_ids"]) == first_block[0] and out["num_images"] == 0 and out["truncated"]
    out = SequenceBuilder(tiny_tokenizer, base_vocab_size, max_length=first_block[1] + 3).interleaved(text, 2)
    assert out["num_images"] == 1 and len(out["input_ids"]) == first_block[1] + 3
    assert not full["truncated"] and full["num_images"] == 2


def test_weights_follow_offsets_without_token_loop(tiny_tokenizer, base_vocab_size):
    # a long response: the term mask must line up with tokens everywhere
    response = " ".join(["pneumothorax is seen"] * 200)
    out = SequenceBuilder(tiny_tokenizer, base_vocab_size, max_length=10_000).instruction("<image> q", response, 1)
    ids, w = out["input_ids"].numpy(), out["loss_weights"].numpy()
    assert tiny_tokenizer.decode(ids[w == 3]).split() == ["pneumothorax"] * 200
    assert tiny_tokenizer.decode(ids[w == 1][:-1]).split() == ["is", "seen"] * 200
