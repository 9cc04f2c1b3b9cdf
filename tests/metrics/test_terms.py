import math

import pytest

from radfm.metrics.terms import VocabularyTermExtractor, default_term_extractor, term_precision_recall


def test_hand_computed_term_precision_and_recall():
    extractor = VocabularyTermExtractor.from_terms(["pleural effusion", "effusion", "pneumothorax", "lung", "nodule"])
    predictions = ["Small pleural effusion and a lung nodule.", "Nothing to see.", "pneumothorax"]
    references = ["Large pleural effusion, no pneumothorax.", "Lung nodule.", "normal"]
    precision, recall = term_precision_recall(predictions, references, extractor)
    # case 0: pred {pleural effusion, lung, nodule}, ref {pleural effusion, pneumothorax} -> P 1/3, R 1/2
    assert precision[0] == pytest.approx(1 / 3) and recall[0] == pytest.approx(1 / 2)
    # case 1: no predicted terms -> precision undefined; recall 0 of 2
    assert math.isnan(precision[1]) and recall[1] == 0.0
    # case 2: reference without terms -> recall undefined
    assert precision[2] == 0.0 and math.isnan(recall[2])


def test_longest_phrase_wins():
    extractor = VocabularyTermExtractor.from_terms(["effusion", "pleural effusion"])
    assert extractor.extract_terms("PLEURAL EFFUSION") == {"pleural effusion"}


def test_default_extractor_is_named_and_finds_radiology_terms():
    extractor, note = default_term_extractor()
    assert extractor is not None, note
    assert extractor.name in note
    assert "pneumothorax" in extractor.extract_terms("Right-sided pneumothorax is seen.")


def test_empty_vocabulary_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        VocabularyTermExtractor.from_terms(["  "], name="blank")
