"""Summaries of a rating study: mean 0–5 score per model and task with bootstrap 95% CIs,
and win/tie/lose counts between models (the paper's Fig. 3b).

Rules (also in docs/rating.md):

* Mean score of a model on a task: the mean over all ratings (every rater, every case).
* 95% CI: percentile bootstrap over *cases* (a resampled case brings all its ratings, so
  several raters scoring the same case are not counted as independent evidence);
  1000 resamples, seeded.
* Win/tie/lose of model A against model B: one comparison per (rater, case) where that rater
  scored both A and B on that case; A wins when its score is higher, ties when equal.
  A case rated by three raters therefore contributes three comparisons.
* Skipped cases and unscored answers contribute nothing.
"""

from __future__ import annotations

import itertools
import sqlite3
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

ALL_TASKS = "all"


@dataclass(frozen=True)
class Rating:
    rater: str
    case_id: str
    dataset: str
    task: str
    model: str
    score: int
    updated_at: float


@dataclass(frozen=True)
class ScoreSummary:
    model: str
    task: str
    mean: float
    ci_low: float
    ci_high: float
    n_ratings: int
    n_cases: int


@dataclass(frozen=True)
class PairCounts:
    model: str
    other: str
    task: str
    win: int
    tie: int
    lose: int

    @property
    def total(self) -> int:
        return self.win + self.tie + self.lose


def load_ratings(conn: sqlite3.Connection) -> list[Rating]:
    """All ratings of the study, ordered by case position, model and rater."""
    rows = conn.execute(
        """
        SELECT r.name AS rater, c.case_id, c.dataset, c.task, cand.model, ra.score, ra.updated_at
        FROM ratings ra
        JOIN raters r ON r.pk = ra.rater_pk
        JOIN candidates cand ON cand.pk = ra.candidate_pk
        JOIN cases c ON c.pk = cand.case_pk
        ORDER BY c.position, cand.model, r.name
        """
    ).fetchall()
    return [Rating(**dict(row)) for row in rows]


def bootstrap_mean_ci(
    scores_by_case: list[list[int]], *, n_resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
    """(mean, low, high): mean of all scores and its percentile-bootstrap CI, resampling cases.

    ``scores_by_case``: for each case, the scores it received (one per rater).
    """
    cases = [s for s in scores_by_case if s]
    if not cases:
        raise ValueError("bootstrap_mean_ci: no scores")
    sums = np.array([sum(s) for s in cases], dtype=np.float64)
    counts = np.array([len(s) for s in cases], dtype=np.float64)
    mean = float(sums.sum() / counts.sum())
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(cases), size=(n_resamples, len(cases)))  # [B, n_cases]
    means = sums[picks].sum(axis=1) / counts[picks].sum(axis=1)
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return mean, float(low), float(high)


def score_summaries(ratings: list[Rating], *, n_resamples: int = 1000, seed: int = 0) -> list[ScoreSummary]:
    """Mean and CI per (model, task), plus each model over all tasks (task ``"all"``)."""
    grouped: dict[tuple[str, str], dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for r in ratings:
        grouped[(r.model, r.task)][r.case_id].append(r.score)
        grouped[(r.model, ALL_TASKS)][r.case_id].append(r.score)
    results = []
    for (model, task), by_case in sorted(grouped.items()):
        mean, low, high = bootstrap_mean_ci(list(by_case.values()), n_resamples=n_resamples, seed=seed)
        n_ratings = sum(len(v) for v in by_case.values())
        results.append(ScoreSummary(model, task, mean, low, high, n_ratings, len(by_case)))
    return results


def win_tie_lose(ratings: list[Rating], models: list[str]) -> list[PairCounts]:
    """Counts for every ordered pair (A, B), A before B in ``models``, per task and over all tasks."""
    # (rater, case) -> {model: score}
    table: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
    task_of: dict[str, str] = {}
    for r in ratings:
        table[(r.rater, r.case_id)][r.model] = r.score
        task_of[r.case_id] = r.task
    tasks = sorted(set(task_of.values()))
    results = []
    for model, other in itertools.combinations(models, 2):
        for task in [*tasks, ALL_TASKS]:
            win = tie = lose = 0
            for (_, case_id), scores in table.items():
                if task != ALL_TASKS and task_of[case_id] != task:
                    continue
                if model in scores and other in scores:
                    difference = scores[model] - scores[other]
                    win += difference > 0
                    tie += difference == 0
                    lose += difference < 0
            results.append(PairCounts(model, other, task, win, tie, lose))
    return results


def flip(counts: PairCounts) -> PairCounts:
    """The same comparison seen from the other model."""
    return PairCounts(counts.other, counts.model, counts.task, counts.lose, counts.tie, counts.win)
