"""``radfm.metrics.ignite_metrics``: the bundles' epoch-level Ignite metrics."""

from __future__ import annotations

import math

import pytest
import torch


def test_closed_set_accuracy_metric():
    from radfm.metrics.ignite_metrics import ClosedSetAccuracy

    metric = ClosedSetAccuracy()
    per_task = ClosedSetAccuracy("vqa")
    for m in (metric, per_task):
        m.reset()
        m.update((["vqa", "vqa", "modality_inductive"], [True, False, True]))
    assert metric.compute() == pytest.approx(2 / 3) and per_task.compute() == pytest.approx(0.5)


def test_closed_set_score_per_task_and_empty():
    from radfm.metrics.ignite_metrics import ClosedSetScore, task_scores

    cases = [{"task": "vqa", "correct": True}, {"task": "vqa", "correct": False}, {"task": "modality", "correct": True}]
    overall, per_task = ClosedSetScore(), task_scores(["vqa", "absent"])
    assert sorted(per_task) == ["accuracy_absent", "accuracy_vqa"]
    for metric in (overall, *per_task.values()):
        metric.reset()
        metric.update(cases)
    assert overall.compute() == pytest.approx(2 / 3) and per_task["accuracy_vqa"].compute() == pytest.approx(0.5)
    assert math.isnan(per_task["accuracy_absent"].compute())


def test_macro_auc_f1_multi_class_and_multi_label():
    from radfm.metrics.ignite_metrics import MacroAUCF1

    logits = torch.tensor([[3.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 3.0], [3.0, 0.0, 0.0]])
    labels = torch.tensor([0, 1, 2, 0])
    for kind in ("auc", "f1"):
        metric = MacroAUCF1(kind)
        metric.reset()
        metric.update((logits, labels))
        assert metric.compute() == pytest.approx(1.0)
    wrong = MacroAUCF1("f1")
    wrong.reset()
    wrong.update((logits, torch.tensor([1, 2, 0, 1])))
    assert wrong.compute() == pytest.approx(0.0)
    multi = MacroAUCF1("f1", multi_label=True)
    multi.reset()
    multi.update((torch.tensor([[4.0, -4.0], [4.0, 4.0], [-4.0, -4.0]]), torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])))
    assert multi.compute() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="kind must be 'auc' or 'f1'"):
        MacroAUCF1("accuracy")
