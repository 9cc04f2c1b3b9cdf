"""Word-overlap metrics for open answers: BLEU-1..4 (sacrebleu) and ROUGE-1/ROUGE-L (rouge-score).

The paper: "For BLEU and ROUGE, if not specific pointing, we all use 1-gram by default" and
"the metrics refer to the average score on all test samples". So the headline ``BLEU`` is
sentence-level BLEU-1 averaged over cases and ``ROUGE`` is the ROUGE-1 F-measure averaged over
cases. BLEU-n here is sacrebleu's cumulative BLEU with ``max_ngram_order=n`` (geometric mean of
the 1..n-gram precisions times the brevity penalty, the usual "BLEU-n" of report generation);
for report generation (IU-X-ray style) the corpus-level BLEU-1..4 are also given.

Settings (named in every output, see :func:`bleu_settings`): sacrebleu tokenizer ``13a``,
lower-cased, no smoothing, ``effective_order=True`` for sentence level (orders longer than
the answer are skipped, so a one-word answer gets a BLEU-4 equal to its BLEU-1).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import sacrebleu
from rouge_score import rouge_scorer
from sacrebleu.metrics import BLEU

MAX_ORDER = 4
_TOKENIZER = "13a"
_SMOOTH = "none"


def bleu_settings() -> str:
    """Human-readable name of the BLEU implementation and options used."""
    return (f"sacrebleu {sacrebleu.__version__} BLEU (tokenize={_TOKENIZER}, lowercase, smooth={_SMOOTH}; "
            f"sentence level with effective_order; BLEU-n = cumulative up to n-grams)")


def rouge_settings(use_stemmer: bool = False) -> str:
    return f"rouge-score RougeScorer F-measure (rouge1, rougeL; use_stemmer={use_stemmer})"


def bleu_statistics(predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """Per-case sufficient statistics from sacrebleu: [N, 2+2*4] = (sys_len, ref_len, correct_1..4, total_1..4).

    These add up over cases, so corpus BLEU of any resample is BLEU of the summed rows.
    """
    _check_pairs(predictions, references)
    bleu = BLEU(lowercase=True, tokenize=_TOKENIZER, smooth_method=_SMOOTH, effective_order=True,
                max_ngram_order=MAX_ORDER)
    stats = np.zeros((len(predictions), 2 + 2 * MAX_ORDER), dtype=np.float64)
    for row, (prediction, reference) in enumerate(zip(predictions, references)):
        score = bleu.sentence_score(prediction, [reference])
        stats[row, 0] = score.sys_len
        stats[row, 1] = score.ref_len
        stats[row, 2:2 + MAX_ORDER] = score.counts
        stats[row, 2 + MAX_ORDER:] = score.totals
    return stats


def sentence_bleu_from_stats(stats: np.ndarray, order: int) -> np.ndarray:
    """Per-case sentence BLEU-``order`` in [0, 1] from :func:`bleu_statistics` rows [N, 10] -> [N]."""
    _check_order(order)
    values = np.empty(len(stats), dtype=np.float64)
    for row, case in enumerate(stats):
        score = BLEU.compute_bleu(
            correct=[int(c) for c in case[2:2 + order]], total=[int(t) for t in case[2 + MAX_ORDER:2 + MAX_ORDER + order]],
            sys_len=int(case[0]), ref_len=int(case[1]), smooth_method=_SMOOTH, effective_order=True,
            max_ngram_order=order)
        values[row] = score.score / 100.0
    return values


def corpus_bleu_from_sums(summed: np.ndarray, order: int) -> np.ndarray:
    """Corpus BLEU-``order`` in [0, 1] from summed statistics [B, 10] -> [B] (vectorised).

    Same formula as ``sacrebleu.BLEU.compute_bleu`` with no smoothing and no effective order
    (tested equal to ``sacrebleu.corpus_bleu``); vectorised so 1000 resamples cost one pass.
    """
    _check_order(order)
    sys_len, ref_len = summed[:, 0], summed[:, 1]
    correct = summed[:, 2:2 + order]
    total = summed[:, 2 + MAX_ORDER:2 + MAX_ORDER + order]
    with np.errstate(divide="ignore", invalid="ignore"):
        brevity = np.where(sys_len >= ref_len, 1.0, np.where(sys_len > 0, np.exp(1.0 - ref_len / np.maximum(sys_len, 1e-300)), 0.0))
        precision = np.where(total > 0, correct / np.maximum(total, 1e-300), 0.0)
        log_mean = np.log(np.maximum(precision, 1e-300)).mean(axis=1)
    score = brevity * np.exp(log_mean)
    # sacrebleu: any zero precision gives 0 (log of 0), and so does a corpus without matches.
    return np.where((precision > 0).all(axis=1), score, 0.0)


def rouge_scores(predictions: Sequence[str], references: Sequence[str], *, use_stemmer: bool = False) -> dict[str, np.ndarray]:
    """Per-case ROUGE-1 and ROUGE-L F-measures [N] each, keys ``rouge1`` and ``rougeL``."""
    _check_pairs(predictions, references)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=use_stemmer)
    rouge1 = np.empty(len(predictions), dtype=np.float64)
    rouge_l = np.empty(len(predictions), dtype=np.float64)
    for row, (prediction, reference) in enumerate(zip(predictions, references)):
        scores = scorer.score(reference, prediction)  # rouge-score takes (target, prediction)
        rouge1[row] = scores["rouge1"].fmeasure
        rouge_l[row] = scores["rougeL"].fmeasure
    return {"rouge1": rouge1, "rougeL": rouge_l}


def _check_pairs(predictions: Sequence[str], references: Sequence[str]) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"got {len(predictions)} predictions but {len(references)} references")


def _check_order(order: int) -> None:
    if not 1 <= order <= MAX_ORDER:
        raise ValueError(f"BLEU order must be 1..{MAX_ORDER}, got {order}")
