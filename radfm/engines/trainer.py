"""The RadFM trainer: MONAI's ``SupervisedTrainer`` with the paper's loss and large-model knobs.

What differs from ``SupervisedTrainer._iteration``: the weighted next-token loss normalised
by the token weight of the whole global batch (so DDP over N ranks equals one process with
N× the batch), bf16/fp16 autocast on any device, ``no_sync`` between accumulation steps,
gradient clipping, and the LR scheduler stepped once per optimizer step. Handlers, metrics,
events and bundle tracking (``--tracking mlflow``) are MONAI's.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
import torch.distributed as dist
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents
from monai.utils import CommonKeys as Keys

from radfm.data.loaders import prepare_radfm_batch
from radfm.engines.loss import loss_positions, weighted_token_ce_sums

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def accepts_logits_to_keep(network: torch.nn.Module) -> bool:
    """Whether ``network``'s forward takes ``logits_to_keep`` (named, or through ``**kwargs``).

    DDP/FSDP wrappers are looked through (``.module``); their own forward passes keywords on.
    """
    while isinstance(getattr(network, "module", None), torch.nn.Module):
        network = network.module
    parameters = inspect.signature(network.forward).parameters.values()
    return any(p.name == "logits_to_keep" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


class RadFMTrainer(SupervisedTrainer):
    """Ignite trainer for RadFM (pretraining and instruction tuning).

    Args beyond ``SupervisedTrainer``'s: ``precision`` ("fp32" | "bf16" | "fp16" autocast),
    ``lr_scheduler`` (stepped per optimizer step), ``max_grad_norm`` (None = no clipping),
    ``loss_logits_only`` (default True: the network is asked for the logits of the positions
    that carry a loss weight only, ``logits_to_keep=loss_positions(loss_weights)``, so the
    vocabulary projection and its backward skip image, instruction and padding tokens; the loss is
    the same. A network whose forward takes no ``logits_to_keep``, or returns ``[B, L, V]``
    anyway, gets the full-logits loss).
    ``loss_function`` defaults to the weighted next-token loss and is not used otherwise.
    ``inferer`` (MONAI's, default ``SimpleInferer``) runs the forward pass:
    ``inferer(input_ids, network, images=..., attention_mask=...)``.
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable,
        network: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        lr_scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
        precision: str = "fp32",
        accumulation_steps: int = 1,
        max_grad_norm: float | None = 1.0,
        epoch_length: int | None = None,
        train_handlers: Sequence | None = None,
        prepare_batch: Callable = prepare_radfm_batch,
        loss_logits_only: bool = True,
        **kwargs: Any,
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            train_data_loader=train_data_loader,
            network=network,
            optimizer=optimizer,
            loss_function=kwargs.pop("loss_function", None) or (lambda *a: None),
            epoch_length=epoch_length,
            prepare_batch=prepare_batch,
            train_handlers=train_handlers,
            decollate=False,  # images are ragged lists; nothing to decollate
            optim_set_to_none=True,  # frozen params must keep grad None so optimizers skip them
            accumulation_steps=accumulation_steps,
            **kwargs,
        )
        self.lr_scheduler = lr_scheduler
        self.autocast_dtype = PRECISIONS[precision]
        self.max_grad_norm = max_grad_norm
        self.loss_logits_only = bool(loss_logits_only) and accepts_logits_to_keep(network)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        device_type = torch.device(self.state.device).type
        return torch.autocast(device_type, dtype=self.autocast_dtype)

    def _step_flags(self) -> tuple[bool, bool]:
        """(this micro-batch starts an accumulation window, step the optimizer after it)."""
        acc = self.accumulation_steps
        epoch_length = self.state.epoch_length
        local_iter = (self.state.iteration - 1) % epoch_length if epoch_length else self.state.iteration - 1
        last_of_epoch = epoch_length is not None and local_iter + 1 == epoch_length
        return local_iter % acc == 0, (local_iter + 1) % acc == 0 or last_of_epoch

    def _iteration(self, engine: RadFMTrainer, batchdata: dict[str, Any]) -> list[dict]:
        """One micro-batch; returns ``[{"loss", "tokens", "id"}]`` per sample (the batch's loss)."""
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        inputs, loss_weights, _, _ = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking)
        should_zero_grad, should_step = engine._step_flags()
        engine.network.train()
        if should_zero_grad:  # normally a no-op: gradients are freed right after each optimizer step
            engine.optimizer.zero_grad(set_to_none=True)

        # DDP: all-reduce gradients only on the micro-batch that steps
        sync = contextlib.nullcontext() if should_step or not hasattr(engine.network, "no_sync") else engine.network.no_sync()
        with sync:
            with engine._autocast():
                # the bundle's train#inferer (SimpleInferer by default): network(input_ids, images=..., ...)
                extra = {k: v for k, v in inputs.items() if k != "input_ids"}
                if engine.loss_logits_only:
                    extra["logits_to_keep"] = loss_positions(loss_weights)
                outputs = engine.inferer(inputs["input_ids"], engine.network, **extra)
            engine.fire_event(IterationEvents.FORWARD_COMPLETED)
            # [N, V] when the network honoured logits_to_keep, [B, L, V] otherwise
            selected = engine.loss_logits_only and outputs.logits.dim() == 2
            weighted_sum, weight_total = weighted_token_ce_sums(
                outputs.logits, inputs["input_ids"], loss_weights, selected=selected
            )
            # normalise by the mean per-rank token weight of the global batch, so that the
            # DDP gradient average equals Σ w·CE / Σ w over all ranks
            normaliser = weight_total.detach().clone()
            if _distributed():
                dist.all_reduce(normaliser)
                normaliser = normaliser / dist.get_world_size()
            loss = weighted_sum / normaliser.clamp(min=1e-8)
            batch_loss = (weighted_sum / weight_total.clamp(min=1e-8)).detach()
            tokens = int(inputs["attention_mask"].sum())
            # one dict per sample, like MONAI's decollated outputs, so that MONAI's handlers and
            # tracking defaults (``from_engine(["loss"], first=True)``) read the loss unchanged
            ids = batchdata.get("ids") or [None] * inputs["input_ids"].shape[0]
            engine.state.output = [{Keys.LOSS: batch_loss, "tokens": tokens, "id": i} for i in ids]
            engine.fire_event(IterationEvents.LOSS_COMPLETED)
            (loss / engine.accumulation_steps).backward()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)

        if should_step:
            if engine.max_grad_norm is not None:
                if hasattr(engine.network, "clip_grad_norm_"):  # FSDP: each rank holds a shard of the
                    engine.network.clip_grad_norm_(engine.max_grad_norm)  # gradients; the norm is global
                else:
                    params = [p for p in engine.network.parameters() if p.grad is not None]
                    if params:
                        torch.nn.utils.clip_grad_norm_(params, engine.max_grad_norm)
            engine.optimizer.step()
            # free the gradients now, not at the start of the next step: otherwise they stay
            # alive through the data loading and the next forward pass (a full model's worth of
            # memory on top of the peak)
            engine.optimizer.zero_grad(set_to_none=True)
            if engine.lr_scheduler is not None:
                engine.lr_scheduler.step()
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output
