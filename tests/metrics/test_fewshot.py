import pytest

from radfm.metrics.fewshot import (
    END_OF_CHUNK,
    FEW_SHOT_HEADER,
    Exemplar,
    few_shot_prompt,
    select_exemplars,
    zero_shot_prompt,
)


def test_zero_shot_prompt_is_the_med_flamingo_format():
    prompt = zero_shot_prompt("<image> What is the modality?")
    assert prompt == ("You are a helpful medical assistant. Please answer the question about the given image. "
                      "<image>Question: What is the modality? Answer:")


def test_few_shot_prompt_lists_exemplars_then_the_query():
    shots = [Exemplar("Is there a fracture?", "yes"), Exemplar("Which side? <image>", "left", num_images=2)]
    prompt = few_shot_prompt(shots, "Is the lung clear?", num_images=3)
    assert prompt == (f"{FEW_SHOT_HEADER} <image>Question: Is there a fracture? Answer: yes{END_OF_CHUNK}"
                      f"<image><image>Question: Which side? Answer: left{END_OF_CHUNK}"
                      "<image><image><image>Question: Is the lung clear? Answer:")
    assert prompt.count("<image>") == 6
    assert few_shot_prompt([], "q") == zero_shot_prompt("q")


def test_exemplar_selection_is_seeded_and_never_returns_the_query():
    pool = [Exemplar(f"q{i}", f"a{i}", id=str(i)) for i in range(10)]
    first = select_exemplars(pool, 3, exclude_id="4", seed=1, query_key="4")
    assert first == select_exemplars(pool, 3, exclude_id="4", seed=1, query_key="4")
    assert all(e.id != "4" for e in first) and len(set(first)) == 3
    assert select_exemplars(pool, 9, exclude_id="4") and len(select_exemplars(pool, 9, exclude_id="4")) == 9
    with pytest.raises(ValueError, match="only 9"):
        select_exemplars(pool, 10, exclude_id="4")
