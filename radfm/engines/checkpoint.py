"""Checkpoints that resume exactly: model, optimizer, scheduler, engine state and RNG states.

Saving uses ignite's ``Checkpoint`` with an atomic ``DiskSaver`` (temp file, then rename);
loading uses MONAI's ``CheckpointLoader`` (``torch.load(weights_only=True)``) and then tells
the training sampler how much of the interrupted epoch was already seen.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, DiskSaver
from monai.handlers import CheckpointLoader
from torch.utils.data import DistributedSampler

from radfm.data.sampler import ModalityBatchSampler

logger = logging.getLogger(__name__)
_STEP_RE = re.compile(r"_(\d+)\.pt$")


def latest_checkpoint(directory: str | Path) -> Path | None:
    """The checkpoint in ``directory`` with the highest iteration, or None."""
    directory = Path(directory)
    if not directory.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in directory.glob("*.pt") if (m := _STEP_RE.search(p.name))]
    return max(found)[1] if found else None


class TrainingCheckpoint:
    """Save ``save_dict`` every ``every_iterations`` iterations and at each epoch end.

    ``save_dict``: model, optimizer, lr_scheduler, rng (the trainer is added at ``attach``, so
    that bundle configs have no reference cycle). ``every_iterations`` should be a multiple of the gradient-accumulation steps: a checkpoint
    holds no half-accumulated gradients. Keeps the newest ``n_saved`` files.
    """

    def __init__(self, save_dir: str, save_dict: dict[str, Any], every_iterations: int = 0, n_saved: int = 1) -> None:
        self.save_dir = save_dir
        self.save_dict = dict(save_dict)
        self.every_iterations = every_iterations
        self.n_saved = n_saved
        self.checkpoint: Checkpoint | None = None

    def attach(self, engine: Engine) -> None:
        """Registers the handlers; the engine itself is saved under ``"trainer"``."""
        self.checkpoint = Checkpoint(
            {**self.save_dict, "trainer": engine},
            DiskSaver(self.save_dir, atomic=True, require_empty=False, create_dir=True),
            filename_prefix="train",
            n_saved=self.n_saved,
            global_step_transform=lambda eng, _event: eng.state.iteration,
        )
        acc = getattr(engine, "accumulation_steps", 1)
        if self.every_iterations and self.every_iterations % acc:
            raise ValueError(
                f"checkpoint every_iterations={self.every_iterations} must be a multiple of accumulation_steps={acc}"
            )
        if self.every_iterations:
            engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.every_iterations), self._save)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._save)

    def _save(self, engine: Engine) -> None:
        step = engine.state.iteration
        if self.checkpoint.last_checkpoint is not None and _STEP_RE.search(str(self.checkpoint.last_checkpoint)):
            if int(_STEP_RE.search(str(self.checkpoint.last_checkpoint)).group(1)) == step:
                return  # iteration and epoch events on the same step
        self.checkpoint(engine)


class ResumeFromCheckpoint(CheckpointLoader):
    """At ``STARTED``, load the newest checkpoint of ``load_dir`` (if any) and skip seen samples.

    ``load_dict`` must hold the same objects as the saver's ``save_dict`` (with an
    ``RNGState``; the trainer is added at ``attach``). ``sampler`` is the training sampler
    (``radfm.data.loaders.train_sampler``): a ``ResumableSampler`` skips ``seen batches ×
    batch_size`` samples, a ``ModalityBatchSampler`` skips the seen batches and is given the
    epoch at every epoch start (MONAI's workflow does that only for a ``DistributedSampler``).
    """

    def __init__(
        self, load_dir: str, load_dict: dict[str, Any], sampler: Any = None, batch_size: int = 1
    ) -> None:
        self.load_dir = load_dir
        self.sampler = sampler
        self.batch_size = batch_size
        super().__init__(load_path=str(load_dir), load_dict=dict(load_dict), map_location="cpu")

    def attach(self, engine: Engine) -> None:
        """Registers at ``STARTED``; the engine's own state is restored from ``"trainer"``."""
        self.load_dict.setdefault("trainer", engine)
        super().attach(engine)
        if self.sampler is not None and not isinstance(self.sampler, DistributedSampler):
            engine.add_event_handler(Events.EPOCH_STARTED, lambda e: self.sampler.set_epoch(e.state.epoch))

    def __call__(self, engine: Engine) -> None:
        path = latest_checkpoint(self.load_dir)
        if path is None:
            logger.info("no checkpoint in %s: starting from scratch", self.load_dir)
            return
        self.load_path = str(path)
        super().__call__(engine)
        seen = engine.state.iteration % engine.state.epoch_length if engine.state.epoch_length else 0
        if seen and self.sampler is not None:
            batch_sampler = isinstance(self.sampler, ModalityBatchSampler)
            self.sampler.skip_next_epoch(seen if batch_sampler else seen * self.batch_size)
        logger.info("resumed from %s at iteration %d (epoch %d)", path, engine.state.iteration, engine.state.epoch)
