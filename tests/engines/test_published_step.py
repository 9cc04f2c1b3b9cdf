"""Our training step computes the published step's loss and gradients (issue 21), in every mode.

The published step (``RADFM_SPEC.md`` §1, §4): image tokens embedded through a one-hot matrix over
a per-sample table ``[V+2+32S, hidden]``, the LLM's full ``[B, L, V]`` logits, the weighted
next-token loss. Ours: ``RadFMTrainer`` (indexing instead of one-hot, logits only where the loss
weight is non-zero, optional activation checkpointing).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from monai.engines.utils import IterationEvents

from radfm.engines.build import load_model
from radfm.engines.loss import weighted_next_token_loss
from radfm.engines.trainer import RadFMTrainer
from radfm.model.processing import image_token_ids

NO_DROPOUT = {"vision": {"dropout": 0.0, "emb_dropout": 0.0}}


def one_hot_embeddings(model, input_ids: torch.Tensor, images: list[list[torch.Tensor]]) -> torch.Tensor:
    """The published embedding: ``one_hot(ids) @ [text rows; figure rows; the sample's visual tokens]``."""
    per_sample = []
    for ids, scans in zip(input_ids, images):
        visual = model.encode_images(scans).flatten(0, 1)  # [32 S, hidden]
        table = torch.cat([model.get_input_embeddings().weight, model.figure_token_weight, visual])
        per_sample.append(F.one_hot(ids, table.shape[0]).to(table.dtype) @ table)
    return torch.stack(per_sample)


def make_batch(vocab: int) -> dict:
    """Two samples: a 3D scan and two scans (3D + 2D-as-3D); instruction weight 0, answer 1 and 3."""
    generator = torch.Generator().manual_seed(0)
    text = torch.randint(4, vocab, (2, 12), generator=generator)
    first = [1, *image_token_ids(vocab, 0), *[4] * 34, *text[0].tolist(), 2]
    second = [1, *image_token_ids(vocab, 0), *image_token_ids(vocab, 1), *text[1].tolist(), 2]
    input_ids = torch.tensor([first, second])
    weights = torch.zeros(input_ids.shape)
    weights[:, -8:] = 1.0
    weights[0, -5] = 3.0  # a medical term
    images = [[torch.rand(3, 64, 64, 8, generator=generator)],
              [torch.rand(3, 64, 64, 8, generator=generator), torch.rand(3, 64, 64, 4, generator=generator)]]
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "loss_weights": weights,
            "images": images}


def published_step(batch: dict) -> tuple[float, dict[str, torch.Tensor]]:
    model = load_model("tiny", seed=0, config_overrides=NO_DROPOUT).model.train()
    embeds = one_hot_embeddings(model, batch["input_ids"], batch["images"])
    logits = model.language_model(inputs_embeds=embeds, attention_mask=batch["attention_mask"]).logits
    loss = weighted_next_token_loss(logits, batch["input_ids"], batch["loss_weights"])
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def our_step(batch: dict, *, checkpointing: bool | str = False, loss_logits_only: bool = True):
    model = load_model("tiny", seed=0, config_overrides=NO_DROPOUT, gradient_checkpointing=checkpointing).model
    head_rows: list[int] = []
    model.language_model.lm_head.register_forward_hook(
        lambda _m, args, _out: head_rows.append(args[0].reshape(-1, args[0].shape[-1]).shape[0]))
    trainer = RadFMTrainer(device="cpu", max_epochs=1, train_data_loader=[batch], network=model,
                           optimizer=torch.optim.SGD(model.parameters(), lr=0.0), max_grad_norm=None,
                           loss_logits_only=loss_logits_only)
    grads: dict[str, torch.Tensor] = {}

    @trainer.on(IterationEvents.BACKWARD_COMPLETED)
    def _keep(_engine):  # before the optimizer step frees them
        grads.update({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})

    trainer.run()
    return trainer.state.output[0]["loss"].item(), grads, head_rows


@pytest.fixture(scope="module")
def batch_and_published():
    vocab = load_model("tiny", seed=0).model.config.base_vocab_size
    batch = make_batch(vocab)
    return batch, published_step(batch)


@pytest.mark.parametrize(("checkpointing", "loss_logits_only"),
                         [(False, True), (False, False), ("full", True), ("selective", True)])
def test_trainer_step_equals_the_published_step(batch_and_published, checkpointing, loss_logits_only, monkeypatch):
    import radfm.model.vision

    # checkpointed patch embedding in bands of 4 patches: the 64×64×8 scans run in 2 bands
    monkeypatch.setattr(radfm.model.vision, "PATCHES_PER_BAND", 4)
    batch, (published_loss, published_grads) = batch_and_published
    loss, grads, head_rows = our_step(batch, checkpointing=checkpointing, loss_logits_only=loss_logits_only)
    assert loss == pytest.approx(published_loss, rel=1e-6)
    assert grads.keys() == published_grads.keys()
    assert any("vision_encoder" in name for name in grads)  # the gradient reaches the ViT
    for name, grad in grads.items():
        torch.testing.assert_close(grad, published_grads[name], rtol=1e-4, atol=1e-6, msg=name)
    weighted = int((batch["loss_weights"][:, 1:] != 0).sum())  # 16 of 2 × 81 positions
    assert head_rows == [weighted if loss_logits_only else batch["input_ids"].numel()]


def test_checkpointing_modes_are_named():
    from radfm.engines.build import checkpointing_mode

    # "false"/"true": how `--gradient_checkpointing false` arrives from the command line (it used to turn it on)
    assert [checkpointing_mode(v) for v in (False, None, "none", "false", True, "true", "full", "selective")] == [
        None, None, None, None, "full", "full", "full", "selective"]
    with pytest.raises(ValueError, match="gradient_checkpointing: expected false, true, 'full' or 'selective'"):
        checkpointing_mode("partial")
    model = load_model("tiny", seed=0).model
    with pytest.raises(ValueError, match="activation checkpointing mode must be one of"):
        model.activation_checkpointing_enable(mode="partial")


def test_bundle_optimizer_is_fused_adamw_with_the_same_update():
    from radfm.engines.build import make_optimizer

    updated = []
    for fused in (True, False):
        model = load_model("tiny", seed=0).model
        optimizer = make_optimizer(model, lr=1e-2, weight_decay=0.1, fused=fused)
        assert optimizer.defaults["fused"] is (True if fused else False)
        for p in model.parameters():
            p.grad = torch.full_like(p, 0.5)
        optimizer.step()
        updated.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    torch.testing.assert_close(updated[0], updated[1], rtol=1e-6, atol=1e-7)
    assert make_optimizer(load_model("tiny", seed=0).model).defaults["fused"] is True  # the default
