"""score_records embeds every open group's sentences in one pass; values stay those of group-by-group scoring."""

from __future__ import annotations

import numpy as np
import pytest

from radfm.metrics.bootstrap import Bootstrap
from radfm.metrics.predictions import PredictionRecord
from radfm.metrics.suite import ScoringOptions, score_open, score_records


@pytest.fixture(scope="module")
def one_layer_scorer():
    from radfm.metrics.bertscore import BertScoreF1

    return BertScoreF1(num_layers=1, batch_size=8)


def test_one_pass_equals_group_by_group(one_layer_scorer, random_pairs):
    records = []
    for i, (prediction, reference) in enumerate(random_pairs):
        dataset = ("a", "b")[i % 2]
        records.append(PredictionRecord(id=str(i), dataset=dataset, task="vqa", reference=reference,
                                        prediction=prediction, error="boom" if i == 5 else None))
    records += [PredictionRecord(id=f"c{i}", dataset="c", task="vqa", reference=answer, prediction=answer)
                for i, answer in enumerate(["yes", "no", "yes"])]
    options = ScoringOptions(n_resamples=50, bertscore=one_layer_scorer)
    results = score_records(records, options)
    assert [(r.dataset, r.kind) for r in results] == [("a", "open"), ("b", "open"), ("c", "closed")]
    assert results[0].n_failed == 0 and results[1].n_failed == 1
    for result in results[:2]:
        scored = [r for r in records if r.dataset == result.dataset and r.error is None]
        expected = score_open(scored, Bootstrap(len(scored), n_resamples=50, seed=options.seed), options)
        assert set(result.metrics) == set(expected)
        for name, estimate in expected.items():
            assert result.metrics[name].value == pytest.approx(estimate.value, abs=1e-6), name
            assert result.metrics[name].ci_low == pytest.approx(estimate.ci_low, abs=1e-6), name
    assert results[2].metrics["ACC"].value == 1.0


def test_score_groups_equals_separate_calls(one_layer_scorer, random_pairs):
    first = ([p for p, _ in random_pairs[:25]], [r for _, r in random_pairs[:25]])
    second = ([p for p, _ in random_pairs[25:]], [r for _, r in random_pairs[25:]])
    together = one_layer_scorer.score_groups([first, second, ([], [])])
    assert np.abs(together[0] - one_layer_scorer(*first)).max() < 1e-6  # float32 rounding of other batches
    assert np.abs(together[1] - one_layer_scorer(*second)).max() < 1e-6
    assert together[2].shape == (0,)
    with pytest.raises(ValueError, match="group 1"):
        one_layer_scorer.score_groups([first, (["a"], [])])
