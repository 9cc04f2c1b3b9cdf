"""Freeze schedule: the language model is frozen for the first N epochs, then everything trains.

The optimizer holds every parameter from the start; frozen parameters get no gradient
(``requires_grad=False``, ``zero_grad(set_to_none=True)``) and torch optimizers skip
parameters whose ``.grad`` is None, so they do not move, weight decay included.
"""

from __future__ import annotations

import logging

import torch
from ignite.engine import Engine, Events

logger = logging.getLogger(__name__)


def count_trainable(module: torch.nn.Module) -> int:
    """Number of parameters with ``requires_grad``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def set_language_model_trainable(model: torch.nn.Module, trainable: bool, *, lora: bool = False) -> None:
    """(Un)freeze ``model.language_model``; with LoRA only the adapter weights ever train."""
    language_model = _unwrap(model).language_model
    for name, param in language_model.named_parameters():
        param.requires_grad = trainable and (not lora or "lora_" in name)


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The bare model inside DDP/FSDP wrappers."""
    return getattr(model, "module", model)


class FreezeLanguageModel:
    """Ignite handler: LLM frozen during epochs ``1..frozen_epochs``, trainable afterwards."""

    def __init__(self, model: torch.nn.Module, frozen_epochs: int = 1, lora: bool = False) -> None:
        if frozen_epochs < 0:
            raise ValueError(f"frozen_epochs must be >= 0, got {frozen_epochs}")
        self.model = model
        self.frozen_epochs = frozen_epochs
        self.lora = lora

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        frozen = engine.state.epoch <= self.frozen_epochs
        set_language_model_trainable(self.model, not frozen, lora=self.lora)
        logger.info(
            "epoch %d: language model %s; %d trainable parameters",
            engine.state.epoch, "frozen" if frozen else "trainable", count_trainable(self.model),
        )
