import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from radfm.metrics import closed
from radfm.metrics.bootstrap import Bootstrap


@pytest.mark.parametrize("output, expected", [
    ("Yes.", "yes"), ("yes, there is a nodule", "yes"), ("No", "no"), ("nope", "no"), ("  YES  ", "yes"),
])
def test_yes_no_matching(output, expected):
    assert closed.match_closed_set(output, closed.YES_NO) == expected


def test_label_list_matching_picks_the_most_similar_label():
    labels = ["CT", "MRI", "X-ray", "ultrasound"]
    assert closed.match_closed_set("This is an MRI scan", labels) == "MRI"
    assert closed.match_closed_set("xray", labels) == "X-ray"
    assert closed.match_closed_set("ultra sound", labels) == "ultrasound"
    with pytest.raises(ValueError, match="empty"):
        closed.match_closed_set("x", [])


def test_hand_computed_accuracy_and_f1():
    truth = ["yes", "yes", "no", "no", "yes"]
    pred = ["yes", "no", "no", "yes", "yes"]
    # yes: tp 2, fp 1, fn 1 -> F1 2*2/(4+1+1) = 2/3; no: tp 1, fp 1, fn 1 -> 1/2
    stats = closed.confusion_stats(truth, pred, ["yes", "no"])
    summed = stats.sum(axis=0, keepdims=True)
    assert closed.reduce_accuracy(summed, 2)[0] == pytest.approx(3 / 5)
    assert closed.reduce_binary_f1(summed, 2, 0)[0] == pytest.approx(2 / 3)
    assert closed.reduce_macro_f1(summed, 2)[0] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert closed.accuracy(truth, pred) == pytest.approx(0.6)


def test_f1_equals_sklearn_on_every_bootstrap_resample():
    rng = np.random.default_rng(0)
    labels = ["a", "b", "c", "d"]
    truth = list(rng.choice(labels, 30))
    pred = list(rng.choice(labels[:3], 30))  # class "d" never predicted
    stats = closed.confusion_stats(truth, pred, labels)
    plan = Bootstrap(30, n_resamples=25, seed=1)
    macro = closed.reduce_macro_f1(plan.resampled_sums(stats), 4)
    binary = closed.reduce_binary_f1(plan.resampled_sums(stats), 4, 0)
    accuracy = closed.reduce_accuracy(plan.resampled_sums(stats), 4)
    for row, weights in enumerate(plan.weights):
        index = np.repeat(np.arange(30), weights.astype(int))
        t, p = [truth[i] for i in index], [pred[i] for i in index]
        assert macro[row] == pytest.approx(f1_score(t, p, average="macro", zero_division=0))
        assert binary[row] == pytest.approx(f1_score(t, p, labels=["a"], average="macro", zero_division=0))
        assert accuracy[row] == pytest.approx(accuracy_score(t, p))


def test_reference_outside_the_closed_set_is_warned(caplog):
    import logging

    from radfm.metrics.closed import match_reference

    with caplog.at_level(logging.WARNING):
        assert match_reference("Yes.", ["yes", "no"]) == "yes"
    assert not caplog.text
    with caplog.at_level(logging.WARNING):
        assert match_reference("pneumothorax", ["pneumonia", "normal"], where="case 7") == "pneumonia"
    assert "case 7: reference 'pneumothorax' is not in the closed set ['pneumonia', 'normal']" in caplog.text
