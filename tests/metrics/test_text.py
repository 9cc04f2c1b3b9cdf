import math

import numpy as np
import pytest
import sacrebleu
from nltk.translate.bleu_score import sentence_bleu
from sacrebleu.metrics import BLEU

from radfm.metrics import text


def test_hand_computed_bleu1_with_brevity_penalty():
    stats = text.bleu_statistics(["the cat sat"], ["the cat sat on the mat"])
    # all 3 unigrams match, BP = exp(1 - 6/3)
    assert text.sentence_bleu_from_stats(stats, 1)[0] == pytest.approx(math.exp(-1))
    stats = text.bleu_statistics(["no effusion seen"], ["No pleural effusion."])
    # tokens (13a, lower): no effusion seen | no pleural effusion . -> 2 of 3 match, equal lengths? 3 vs 4
    assert text.sentence_bleu_from_stats(stats, 1)[0] == pytest.approx(2 / 3 * math.exp(1 - 4 / 3))


def test_wrong_yes_no_answer_scores_zero_and_right_one_scores_one():
    stats = text.bleu_statistics(["no", "Yes"], ["yes", "yes"])
    for order in (1, 4):
        assert np.allclose(text.sentence_bleu_from_stats(stats, order), [0.0, 1.0])


def test_hand_computed_rouge():
    scores = text.rouge_scores(["the lung is clear"], ["lungs clear the lung"])
    # unigrams: pred {the, lung, is, clear}, ref {lungs, clear, the, lung}: overlap 3 -> P=R=3/4
    assert scores["rouge1"][0] == pytest.approx(0.75)
    # LCS "the lung" or "lung ... clear"? ref order: lungs clear the lung -> LCS("the lung is clear", ref) = 2
    assert scores["rougeL"][0] == pytest.approx(0.5)


def test_sentence_bleu_matches_sacrebleu_on_random_pairs(random_pairs):
    predictions, references = zip(*random_pairs)
    stats = text.bleu_statistics(predictions, references)
    for order in range(1, 5):
        bleu = BLEU(lowercase=True, smooth_method="none", effective_order=True, max_ngram_order=order)
        expected = [bleu.sentence_score(p, [r]).score / 100 for p, r in random_pairs]
        assert np.allclose(text.sentence_bleu_from_stats(stats, order), expected)


def test_bleu1_matches_nltk_on_random_pairs(random_pairs):
    # An independent implementation: on lower-case words without punctuation the tokenisations agree.
    predictions, references = zip(*random_pairs)
    ours = text.sentence_bleu_from_stats(text.bleu_statistics(predictions, references), 1)
    for value, (prediction, reference) in zip(ours, random_pairs):
        expected = sentence_bleu([reference.split()], prediction.split(), weights=(1.0,)) if prediction else 0.0
        assert value == pytest.approx(expected, abs=1e-9)


def test_corpus_bleu_matches_sacrebleu_on_random_pairs_and_subsets(random_pairs):
    predictions, references = zip(*random_pairs)
    stats = text.bleu_statistics(predictions, references)
    rng = np.random.default_rng(0)
    for subset in [np.arange(len(stats))] + [rng.choice(len(stats), 20) for _ in range(5)]:
        summed = stats[subset].sum(axis=0, keepdims=True)
        for order in range(1, 5):
            expected = sacrebleu.corpus_bleu([predictions[i] for i in subset], [[references[i] for i in subset]],
                                             lowercase=True, smooth_method="none", force=True).score
            if order != 4:
                expected = BLEU(lowercase=True, smooth_method="none", max_ngram_order=order, force=True).corpus_score(
                    [predictions[i] for i in subset], [[references[i] for i in subset]]).score
            assert text.corpus_bleu_from_sums(summed, order)[0] == pytest.approx(expected / 100, abs=1e-9)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        text.bleu_statistics(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="order"):
        text.sentence_bleu_from_stats(np.zeros((1, 10)), 5)
