import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from radfm.metrics.classification import classification_metrics


def test_macro_auc_and_f1_match_sklearn_with_ci():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 200)
    logits = rng.normal(size=(200, 3)) + np.eye(3)[labels] * 1.5
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    results = classification_metrics(labels, probabilities, n_resamples=200)
    assert results["AUC"].value == pytest.approx(roc_auc_score(labels, probabilities, multi_class="ovr", average="macro"))
    assert results["F1"].value == pytest.approx(f1_score(labels, probabilities.argmax(1), average="macro"))
    for estimate in results.values():
        assert estimate.ci_low < estimate.value < estimate.ci_high


def test_binary_scores():
    labels = np.array([0, 0, 1, 1, 1, 0])
    scores = np.array([0.1, 0.6, 0.7, 0.9, 0.4, 0.2])
    results = classification_metrics(labels, scores, n_resamples=50)
    assert results["AUC"].value == pytest.approx(roc_auc_score(labels, scores))
