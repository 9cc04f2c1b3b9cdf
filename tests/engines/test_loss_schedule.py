import math

import pytest
import torch

from radfm.engines.loss import loss_positions, weighted_next_token_loss, weighted_token_ce_sums
from radfm.engines.schedule import WarmupCosine, warmup_cosine_scheduler


def test_weighted_loss_matches_hand_computation():
    # B=1, L=3, V=2: positions 0 and 1 predict tokens 1 and 2
    logits = torch.tensor([[[0.0, 0.0], [2.0, 0.0], [9.0, 9.0]]])
    input_ids = torch.tensor([[1, 1, 0]])
    weights = torch.tensor([[7.0, 3.0, 1.0]])  # weight of token 0 is never used (no prediction)
    ce_first = math.log(2.0)  # uniform over 2
    ce_second = -math.log(math.exp(2.0) / (math.exp(2.0) + 1.0))  # label 0 from logits [2, 0]
    expected = (3.0 * ce_first + 1.0 * ce_second) / 4.0
    assert weighted_next_token_loss(logits, input_ids, weights).item() == pytest.approx(expected, rel=1e-6)
    weighted_sum, total = weighted_token_ce_sums(logits, input_ids, weights)
    assert total.item() == 4.0 and weighted_sum.item() == pytest.approx(3 * ce_first + ce_second, rel=1e-6)


def test_weighted_loss_differs_from_plain_mean_and_ignores_zero_weight():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    ids = torch.randint(0, 7, (2, 5))
    weights = torch.tensor([[0, 0, 1, 3, 1], [0, 1, 1, 0, 0]], dtype=torch.float)
    loss = weighted_next_token_loss(logits, ids, weights)
    ce = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 7), ids[:, 1:].reshape(-1), reduction="none")
    w = weights[:, 1:].reshape(-1)
    assert loss.item() == pytest.approx(((ce * w).sum() / w.sum()).item(), rel=1e-6)
    assert loss.item() != pytest.approx(ce.mean().item(), rel=1e-3)
    # image tokens (ids >= V) are fine with weight 0, an error with weight > 0
    ids_img = ids.clone()
    ids_img[0, 1] = 9
    weighted_next_token_loss(logits, ids_img, weights)
    weights_bad = weights.clone()
    weights_bad[0, 1] = 1.0
    with pytest.raises(ValueError, match="image tokens"):
        weighted_next_token_loss(logits, ids_img, weights_bad)
    with pytest.raises(ValueError, match="expected logits"):
        weighted_next_token_loss(logits[0], ids, weights)


def test_logits_at_weighted_positions_only_give_the_same_loss():
    """Issue 21: the trainer asks the LM for the logits where the next token has a weight only."""
    torch.manual_seed(0)
    logits = torch.randn(2, 6, 11)
    ids = torch.randint(0, 11, (2, 6))
    ids[0, 2] = 13  # an image token (id >= V): weight 0, so its logits are never computed
    weights = torch.tensor([[0, 0, 0, 1, 3, 1], [0, 1, 0, 0, 2, 0]], dtype=torch.float)
    keep = loss_positions(weights)
    assert keep.tolist() == [[False, False, True, True, True, False], [True, False, False, True, False, False]]
    full = weighted_token_ce_sums(logits, ids, weights)
    selected = weighted_token_ce_sums(logits[keep], ids, weights, selected=True)  # what logits_to_keep=keep returns
    torch.testing.assert_close(selected, full, rtol=1e-6, atol=0)
    assert weighted_next_token_loss(logits[keep], ids, weights, selected=True).item() == pytest.approx(
        weighted_next_token_loss(logits, ids, weights).item(), rel=1e-6)
    with pytest.raises(ValueError, match="5 tokens carry a loss weight"):
        weighted_token_ce_sums(logits[keep][:-1], ids, weights, selected=True)
    with pytest.raises(ValueError, match=r"expected logits \[N, V\]"):
        weighted_token_ce_sums(logits, ids, weights, selected=True)


def test_warmup_cosine():
    sched = WarmupCosine(warmup_steps=4, total_steps=14, min_ratio=0.1)
    ramp = [sched(s) for s in range(5)]
    assert ramp == sorted(ramp) and ramp[0] == pytest.approx(0.2) and ramp[4] == pytest.approx(1.0)
    assert sched(9) == pytest.approx(0.1 + 0.9 * 0.5)  # half way through the decay
    assert sched(14) == pytest.approx(0.1) and sched(100) == pytest.approx(0.1)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    lr_sched = warmup_cosine_scheduler(opt, 4, 14)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.2)
    for _ in range(4):
        opt.step()
        lr_sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(1.0)
