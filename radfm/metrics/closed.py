"""Closed-set answers (yes/no, a dataset's label list): match, accuracy, binary and macro F1.

The paper matches each free-text output to the closed set with ``difflib.SequenceMatcher``
(the most similar choice wins) and then computes ACC and F1. F1 is written as per-class
TP/FP/FN counts per case so that it can be bootstrapped like every other metric
(:mod:`radfm.metrics.bootstrap`); the values equal scikit-learn's ``f1_score``.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Sequence

import numpy as np

YES_NO: tuple[str, str] = ("yes", "no")
logger = logging.getLogger(__name__)


def normalise_answer(text: str) -> str:
    """Lower case, surrounding whitespace and trailing punctuation removed."""
    return text.strip().lower().rstrip(".!?;:, ").strip()


def match_closed_set(output: str, choices: Sequence[str]) -> str:
    """The choice most similar to ``output`` (``SequenceMatcher.ratio`` on normalised text).

    Ties go to the earlier choice, so the closed set's order is the tie-break rule.
    """
    if not choices:
        raise ValueError("closed set is empty: need at least one choice to match against")
    normalised = normalise_answer(output)
    best_choice, best_ratio = choices[0], -1.0
    for choice in choices:
        ratio = difflib.SequenceMatcher(None, normalised, normalise_answer(choice)).ratio()
        if ratio > best_ratio:
            best_choice, best_ratio = choice, ratio
    return best_choice


def match_reference(reference: str, choices: Sequence[str], where: str = "") -> str:
    """The reference's label in the closed set: exact (normalised) match, else the most similar (with a warning).

    A reference outside its closed set is a data problem (a typo, another label list); it is
    still scored as the nearest choice but logged, naming ``where`` (e.g. the case id).
    """
    normalised = normalise_answer(reference)
    for choice in choices:
        if normalise_answer(choice) == normalised:
            return choice
    nearest = match_closed_set(reference, choices)
    logger.warning("%sreference %r is not in the closed set %s; scored as the nearest choice %r",
                   f"{where}: " if where else "", reference, list(choices), nearest)
    return nearest


def confusion_stats(y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]) -> np.ndarray:
    """Per-case one-hot TP/FP/FN counts: [N, 3C] laid out as (tp_0..tp_C-1, fp_.., fn_..)."""
    index = {label: i for i, label in enumerate(labels)}
    n, c = len(y_true), len(labels)
    stats = np.zeros((n, 3 * c), dtype=np.float64)
    for row, (truth, pred) in enumerate(zip(y_true, y_pred)):
        t, p = index[truth], index[pred]
        if t == p:
            stats[row, t] = 1.0
        else:
            stats[row, c + p] = 1.0  # false positive for the predicted class
            stats[row, 2 * c + t] = 1.0  # false negative for the true class
    return stats


def reduce_accuracy(summed: np.ndarray, n_labels: int) -> np.ndarray:
    """Summed confusion stats [.., 3C] -> accuracy [..] (correct / cases)."""
    tp = summed[:, :n_labels].sum(axis=1)
    fn = summed[:, 2 * n_labels:].sum(axis=1)  # every wrong case is exactly one FN
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(tp + fn > 0, tp / np.maximum(tp + fn, 1e-300), np.nan)


def _per_class_f1(summed: np.ndarray, n_labels: int) -> tuple[np.ndarray, np.ndarray]:
    tp = summed[:, :n_labels]
    fp = summed[:, n_labels:2 * n_labels]
    fn = summed[:, 2 * n_labels:]
    denominator = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1e-300), 0.0)
    return f1, denominator > 0


def reduce_macro_f1(summed: np.ndarray, n_labels: int) -> np.ndarray:
    """Macro F1 over the classes present (in truth or prediction), as sklearn's default labels."""
    f1, present = _per_class_f1(summed, n_labels)
    counts = present.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, (f1 * present).sum(axis=1) / np.maximum(counts, 1), np.nan)


def reduce_binary_f1(summed: np.ndarray, n_labels: int, positive_index: int) -> np.ndarray:
    """F1 of one positive class (sklearn ``average='binary'``, zero_division=0)."""
    f1, _ = _per_class_f1(summed, n_labels)
    return f1[:, positive_index]


def accuracy(y_true: Sequence[str], y_pred: Sequence[str]) -> float:
    """Fraction of exact label matches."""
    if len(y_true) != len(y_pred) or not y_true:
        raise ValueError(f"accuracy needs equal, non-empty label lists, got {len(y_true)} and {len(y_pred)}")
    return float(np.mean([t == p for t, p in zip(y_true, y_pred)]))
