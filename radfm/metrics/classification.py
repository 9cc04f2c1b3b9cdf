"""Classification finetunes (paper Table 3): macro AUC and macro F1 with bootstrap CIs (scikit-learn).

AUC is not a sum over cases, so each of the resamples is scored with scikit-learn directly;
resamples that miss a class (AUC undefined) are skipped when forming the interval.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import f1_score, roc_auc_score

from radfm.metrics.bootstrap import DEFAULT_RESAMPLES, DEFAULT_SEED, Bootstrap, Estimate


def macro_auc(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """labels [N] int in 0..C-1, probabilities [N, C] (or [N] for binary) -> macro one-vs-rest AUC."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels)
    if probabilities.ndim == 1 or probabilities.shape[1] == 1:
        return float(roc_auc_score(labels, probabilities.reshape(-1)))
    if probabilities.shape[1] == 2:
        return float(roc_auc_score(labels, probabilities[:, 1]))
    # Rows normalised so the multi-class API accepts logits-softmaxed or raw scores alike.
    scores = probabilities / probabilities.sum(axis=1, keepdims=True)
    return float(roc_auc_score(labels, scores, multi_class="ovr", average="macro",
                               labels=np.arange(probabilities.shape[1])))


def macro_f1(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Macro F1 of the arg-max (or > 0.5 for [N] binary scores) decision."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    predicted = (probabilities > 0.5).astype(int) if probabilities.ndim == 1 else probabilities.argmax(axis=1)
    return float(f1_score(labels, predicted, average="macro", zero_division=0))


def classification_metrics(labels: np.ndarray, probabilities: np.ndarray, *, n_resamples: int = DEFAULT_RESAMPLES,
                           seed: int = DEFAULT_SEED) -> dict[str, Estimate]:
    """{"AUC": macro AUC, "F1": macro F1}, each with a 95% bootstrap CI.

    labels: [N] ints; probabilities: [N, C] class scores, or [N] positive-class scores.
    """
    labels = np.asarray(labels)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if len(labels) != len(probabilities):
        raise ValueError(f"got {len(labels)} labels but {len(probabilities)} score rows")
    plan = Bootstrap(len(labels), n_resamples=n_resamples, seed=seed)
    results: dict[str, Estimate] = {}
    for name, metric in (("AUC", macro_auc), ("F1", macro_f1)):
        resampled = np.full(n_resamples, np.nan)
        for row, weights in enumerate(plan.weights):
            index = np.repeat(np.arange(len(labels)), weights.astype(int))
            if len(np.unique(labels[index])) < 2:
                continue  # metric undefined on a one-class resample
            try:
                resampled[row] = metric(labels[index], probabilities[index])
            except ValueError:
                continue
        low, high = plan.interval(resampled)
        results[name] = Estimate(metric(labels, probabilities), low, high, len(labels))
    return results
