"""Seeded, vectorised bootstrap confidence intervals (the paper: 95% CI, 1000 resamples).

Every metric here is written as *summable per-case statistics* plus a function that turns
summed statistics into the metric value:

- a per-case mean (BLEU of one answer, ROUGE, BERTScore, ...) has stats ``[value, 1]``
  and value ``sum / count``; cases where the metric is undefined get ``[0, 0]``;
- corpus BLEU has sacrebleu's n-gram match counts, which add up over cases;
- F1 has per-class TP/FP/FN counts.

One resample is then a vector of case multiplicities ``w`` (multinomial counts, shape [N])
and its summed statistics are ``w @ stats``. All resamples together are one matrix product
``W [B, N] @ stats [N, K] -> [B, K]``, so 1000 resamples of 10,000 cases cost milliseconds.
The same ``W`` is used for every metric of a dataset, so derived numbers (e.g. the mean of
four metrics, Fig. 3a's AVG) are resampled consistently.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

DEFAULT_RESAMPLES = 1000
DEFAULT_SEED = 0
DEFAULT_CONFIDENCE = 0.95

# Summed stats [.., K] -> metric values [..]
Reducer = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its bootstrap percentile interval (all in metric units)."""

    value: float
    ci_low: float
    ci_high: float
    n: int  # cases that contributed (metric defined)

    def as_dict(self) -> dict[str, float | int]:
        return {"value": self.value, "ci_low": self.ci_low, "ci_high": self.ci_high, "n": self.n}


@dataclass
class Bootstrap:
    """Resampling plan for ``n_cases`` cases: ``n_resamples`` seeded multinomial resamples.

    ``weights`` is the [B, N] matrix of case multiplicities (each row sums to N); it is drawn
    once from ``numpy.random.default_rng(seed)``, so the same seed gives the same intervals.
    """

    n_cases: int
    n_resamples: int = DEFAULT_RESAMPLES
    seed: int = DEFAULT_SEED
    confidence: float = DEFAULT_CONFIDENCE
    _weights: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.n_cases < 0 or self.n_resamples < 1:
            raise ValueError(f"bootstrap needs n_cases >= 0 and n_resamples >= 1, got {self.n_cases}, {self.n_resamples}")
        if not 0.0 < self.confidence < 1.0:
            raise ValueError(f"confidence must lie in (0, 1), got {self.confidence}")

    @property
    def weights(self) -> np.ndarray:
        """Case multiplicities, float64 [n_resamples, n_cases]."""
        if self._weights is None:
            rng = np.random.default_rng(self.seed)
            weights = np.empty((self.n_resamples, self.n_cases), dtype=np.float64)
            if self.n_cases:
                # Row-wise bincount of uniform indices == one classic bootstrap resample.
                for row in range(self.n_resamples):
                    indices = rng.integers(0, self.n_cases, size=self.n_cases)
                    weights[row] = np.bincount(indices, minlength=self.n_cases)
            self._weights = weights
        return self._weights

    def resampled_sums(self, stats: np.ndarray) -> np.ndarray:
        """Summed statistics of every resample: [N, K] -> [B, K]."""
        stats = np.asarray(stats, dtype=np.float64)
        if stats.shape[0] != self.n_cases:
            raise ValueError(f"stats have {stats.shape[0]} rows but the bootstrap plan has {self.n_cases} cases")
        return self.weights @ stats

    def interval(self, resampled_values: np.ndarray) -> tuple[float, float]:
        """Percentile interval of resampled metric values [B] (undefined resamples, NaN, ignored)."""
        finite = resampled_values[np.isfinite(resampled_values)]
        if finite.size == 0:
            return float("nan"), float("nan")
        tail = (1.0 - self.confidence) / 2.0 * 100.0
        low, high = np.percentile(finite, [tail, 100.0 - tail])
        return float(low), float(high)

    def point_and_resampled(self, stats: np.ndarray, reduce: Reducer) -> tuple[float, np.ndarray]:
        """(``reduce`` on all cases, ``reduce`` on every resample [B]); NaN/empty when no cases."""
        stats = np.asarray(stats, dtype=np.float64)
        if self.n_cases == 0:
            return float("nan"), np.full(self.n_resamples, np.nan)
        point = float(reduce(stats.sum(axis=0, keepdims=True))[0])
        return point, reduce(self.resampled_sums(stats))

    def estimate(self, stats: np.ndarray, reduce: Reducer, n_defined: int | None = None) -> Estimate:
        """Point value ``reduce(stats.sum(0))`` and its CI from ``reduce`` on every resample."""
        point, resampled = self.point_and_resampled(stats, reduce)
        return self.estimate_from(point, resampled, self.n_cases if n_defined is None else n_defined)

    def estimate_from(self, point: float, resampled: np.ndarray, n_defined: int) -> Estimate:
        """An :class:`Estimate` from a point value and already resampled values [B]."""
        low, high = self.interval(resampled)
        return Estimate(point, low, high, n_defined)


def mean_stats(values: np.ndarray) -> np.ndarray:
    """Per-case values [N] (NaN = undefined for that case) -> summable stats [N, 2] = (value, defined)."""
    values = np.asarray(values, dtype=np.float64)
    defined = np.isfinite(values)
    return np.stack([np.where(defined, values, 0.0), defined.astype(np.float64)], axis=1)


def reduce_mean(summed: np.ndarray) -> np.ndarray:
    """[.., 2] summed (value, count) -> mean [..]; NaN where no case is defined."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(summed[:, 1] > 0, summed[:, 0] / np.maximum(summed[:, 1], 1e-300), np.nan)


def bootstrap_mean(values: np.ndarray, *, n_resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED,
                   confidence: float = DEFAULT_CONFIDENCE) -> Estimate:
    """Mean of per-case values [N] (NaN entries skipped) with its bootstrap CI."""
    values = np.asarray(values, dtype=np.float64)
    plan = Bootstrap(len(values), n_resamples=n_resamples, seed=seed, confidence=confidence)
    return plan.estimate(mean_stats(values), reduce_mean, n_defined=int(np.isfinite(values).sum()))
