"""Freeze schedule, gradient accumulation and exact resume, on the toy model (CPU, seconds)."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Events

from radfm.data.resumable_sampler import ResumableSampler
from radfm.data.sampler import ModalityBatchSampler
from radfm.engines.checkpoint import ResumeFromCheckpoint, TrainingCheckpoint, latest_checkpoint
from radfm.engines.freeze import FreezeLanguageModel, count_trainable
from radfm.engines.rng import RNGState
from radfm.engines.schedule import warmup_cosine_scheduler
from radfm.engines.trainer import RadFMTrainer

from .conftest import ToyDataset, ToyRadFM, toy_collate


class Crash(RuntimeError):
    pass


def build(ckpt_dir, *, frozen_epochs=0, accumulation=2, kill_at=None, epochs=2, batch_size=4, batching="mixed"):
    torch.manual_seed(0)
    model = ToyRadFM()
    dataset = ToyDataset()
    if batching == "modality":  # the paper's batches: 4 x 2D or 1 x 3D (16 + 8 samples: 12 batches)
        sampler = ModalityBatchSampler([3 if i % 3 == 0 else 2 for i in range(len(dataset))],
                                       batch_size_2d=batch_size, batch_size_3d=1, seed=3)
        loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=toy_collate,
                                             generator=torch.Generator())
    else:
        sampler = ResumableSampler(dataset, seed=3)
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=batch_size, sampler=sampler, collate_fn=toy_collate, generator=torch.Generator()
        )
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    steps = epochs * -(-len(loader) // accumulation)
    scheduler = warmup_cosine_scheduler(optimizer, 2, steps)
    trainer = RadFMTrainer(
        device="cpu", max_epochs=epochs, train_data_loader=loader, network=model, optimizer=optimizer,
        lr_scheduler=scheduler, accumulation_steps=accumulation,
    )
    objects = {"model": model, "optimizer": optimizer, "lr_scheduler": scheduler, "rng": RNGState()}
    ResumeFromCheckpoint(str(ckpt_dir), objects, sampler=sampler, batch_size=batch_size).attach(trainer)
    FreezeLanguageModel(model, frozen_epochs=frozen_epochs).attach(trainer)
    TrainingCheckpoint(str(ckpt_dir), objects, every_iterations=accumulation).attach(trainer)
    if kill_at is not None:
        @trainer.on(Events.ITERATION_COMPLETED(once=kill_at))
        def _crash(_engine):
            raise Crash(f"killed at iteration {kill_at}")
    return trainer, model


def test_kill_mid_epoch_and_resume_gives_identical_weights(tmp_path):
    trainer, model_straight = build(tmp_path / "a")
    trainer.run()
    assert trainer.state.iteration == 12

    trainer, _ = build(tmp_path / "b", kill_at=9)  # 6 iterations per epoch: dies inside epoch 2
    with pytest.raises(Crash):
        trainer.run()
    assert latest_checkpoint(tmp_path / "b").name.endswith("_8.pt")
    # a fresh process: new objects, the same RNG seed as any fresh start
    torch.manual_seed(1234)
    trainer, model_resumed = build(tmp_path / "b")
    trainer.run()
    assert trainer.state.iteration == 12
    for (name, a), (_, b) in zip(model_straight.state_dict().items(), model_resumed.state_dict().items()):
        assert torch.equal(a, b), name


def test_modality_batches_resume_exactly_and_reshuffle_each_epoch(tmp_path):
    def record(trainer):
        seen = []
        trainer.add_event_handler(Events.ITERATION_STARTED, lambda e: seen.append((e.state.epoch, e.state.batch["ids"])))
        return seen

    trainer, model_straight = build(tmp_path / "a", batching="modality")
    straight = record(trainer)
    trainer.run()
    assert trainer.state.iteration == 24
    assert {len(ids) for _, ids in straight} == {1, 4}
    by_epoch = [[ids for epoch, ids in straight if epoch == k] for k in (1, 2)]
    assert by_epoch[0] != by_epoch[1]  # set_epoch reached the batch sampler: a new order
    assert sorted(sum(by_epoch[0], [])) == sorted(sum(by_epoch[1], []))

    trainer, _ = build(tmp_path / "b", batching="modality", kill_at=19)  # dies inside epoch 2
    with pytest.raises(Crash):
        trainer.run()
    assert latest_checkpoint(tmp_path / "b").name.endswith("_18.pt")
    torch.manual_seed(1234)
    trainer, model_resumed = build(tmp_path / "b", batching="modality")
    resumed = record(trainer)
    trainer.run()
    assert resumed == straight[18:]  # the same remaining batches, in the same order
    for (name, a), (_, b) in zip(model_straight.state_dict().items(), model_resumed.state_dict().items()):
        assert torch.equal(a, b), name


def test_resume_without_skipping_would_differ(tmp_path):
    """Guards the test above: a resume that re-reads the epoch from its start ends elsewhere."""
    trainer, model_straight = build(tmp_path / "a")
    trainer.run()
    trainer, _ = build(tmp_path / "b", kill_at=9)
    with pytest.raises(Crash):
        trainer.run()
    trainer, model_resumed = build(tmp_path / "b")
    trainer._event_handlers[Events.STARTED][0][0].sampler = None  # no skip
    trainer.run()
    assert not all(
        torch.equal(a, b) for a, b in zip(model_straight.state_dict().values(), model_resumed.state_dict().values())
    )


def test_language_model_frozen_for_first_epoch(tmp_path):
    trainer, model = build(tmp_path, frozen_epochs=1)
    llm_start = {k: v.clone() for k, v in model.language_model.state_dict().items()}
    vision_start = {k: v.clone() for k, v in model.vision_encoder.state_dict().items()}
    total = sum(p.numel() for p in model.parameters())
    llm_total = sum(p.numel() for p in model.language_model.parameters())
    seen: dict[int, int] = {}

    @trainer.on(Events.EPOCH_COMPLETED)
    def _check(engine):
        seen[engine.state.epoch] = count_trainable(model)
        if engine.state.epoch == 1:
            for k, v in model.language_model.state_dict().items():
                assert torch.equal(v, llm_start[k]), f"{k} moved during the frozen epoch"
            assert any(not torch.equal(v, vision_start[k]) for k, v in model.vision_encoder.state_dict().items())

    trainer.run()
    assert seen == {1: total - llm_total, 2: total}
    assert any(not torch.equal(v, llm_start[k]) for k, v in model.language_model.state_dict().items())


def test_accumulation_equals_larger_batch(tmp_path):
    """2 micro-batches of 4 with accumulation 2 == batches of 8 when every sample has equal weight."""
    def run(batch_size, accumulation, sub):
        trainer, model = build(tmp_path / sub, accumulation=accumulation, batch_size=batch_size, epochs=1)
        model.dropout.p = 0.0
        for item in trainer.data_loader.dataset.items:
            item["loss_weights"][-1] = 1.0
        trainer.run()
        return model

    a = run(4, 2, "a")
    b = run(8, 1, "b")
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6, msg=name)


def test_gradients_are_freed_right_after_each_optimizer_step(tmp_path):
    """Issue 21: no gradient stays alive between optimizer steps (they were kept until the next
    iteration's zero_grad, a model's worth of memory during the next data loading and forward)."""
    trainer, model = build(tmp_path, accumulation=2, epochs=1)
    alive: list[tuple[int, bool]] = []

    @trainer.on(Events.ITERATION_COMPLETED)
    def _record(engine):
        alive.append((engine.state.iteration, any(p.grad is not None for p in model.parameters())))

    trainer.run()
    assert alive and all(has_grads == (iteration % 2 == 1) for iteration, has_grads in alive[:-1]), alive
    assert alive[-1][1] is False  # the epoch's last micro-batch always steps
