"""Closed-answer validation: generate, match to the closed set with difflib, report accuracy.

``ClosedSetEvaluator`` is a MONAI ``Evaluator`` so that ``ValidationHandler``, the metric
bookkeeping (best metric, ``engine.state.metrics``) and ``--tracking mlflow`` (the
``validate#evaluator`` id) all work as for any MONAI bundle.

Multi-process (DDP / FSDP mixins): validation is sharded, not repeated. Each rank's loader holds
its share of the cases (the mixins give ``validate#dataloader`` a ``monai.data.DistributedSampler``
with ``even_divisible=False``: no padding, no case twice), each rank generates alone
(:func:`radfm.engines.distributed.generation_model`: DDP's module, or FSDP's gathered parameters),
and ``radfm.metrics.ignite_metrics.ClosedSetAccuracy`` sums correct/total over the ranks, so every
rank reports the metric of the whole validation set.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from monai.engines import Evaluator

from radfm.engines.distributed import generation_model, world
from radfm.engines.inference import answer_prompts
from radfm.metrics.closed import match_closed_set, match_reference
from radfm.metrics.ignite_metrics import ClosedSetAccuracy

logger = logging.getLogger(__name__)


class ClosedSetEvaluator(Evaluator):
    """Runs the model over ``ClosedSetDataset`` batches; metrics: ``val_accuracy`` (+ per task).

    ``processor``: the model's :class:`~radfm.model.processing.RadFMProcessor` (the bundle's ``@processor``);
    answers come from :func:`radfm.engines.inference.answer_prompts`, the request path's generation.
    ``tasks`` adds ``val_accuracy_<task>``.
    Under DDP/FSDP every rank must run it (as ``ValidationHandler`` does), each on its shard.
    """

    def __init__(
        self,
        device: str | torch.device,
        val_data_loader: Any,
        network: torch.nn.Module,
        processor: Any,
        *,
        max_new_tokens: int = 16,
        tasks: Sequence[str] = (),
        val_handlers: Sequence | None = None,
        **kwargs: Any,
    ) -> None:
        additional = {f"val_accuracy_{task}": ClosedSetAccuracy(task) for task in tasks}
        super().__init__(
            device=device,
            val_data_loader=val_data_loader,
            key_val_metric={"val_accuracy": ClosedSetAccuracy()},
            additional_metrics=additional or None,
            val_handlers=val_handlers,
            decollate=False,
            prepare_batch=lambda batch, *a, **k: batch,
            **kwargs,
        )
        self.network = network
        self.processor = processor
        self.max_new_tokens = max_new_tokens
        self.generation_network: torch.nn.Module | None = None  # set while ``run`` holds it

    def run(self, global_epoch: int = 1) -> None:  # type: ignore[override]
        """Validate once: gathers FSDP parameters for the run (collective), then MONAI's ``run``."""
        rank, world_size = world()
        if world_size > 1:
            sampler = getattr(self.data_loader, "sampler", None)
            if not hasattr(sampler, "num_replicas"):
                logger.warning("rank %d: validation loader is not sharded (no DistributedSampler): each of the %d "
                               "ranks validates every case", rank, world_size)
            smallest = self._fewest_batches()
            if smallest == 0:  # a rank without cases would skip the run and leave the others waiting
                raise ValueError(f"validation set too small to shard over {world_size} ranks (a rank has no "
                                 "case); use more validation cases or fewer processes")
        was_training = self.network.training
        with generation_model(self.network) as model:
            self.generation_network = model
            try:
                super().run(global_epoch)
            finally:
                self.generation_network = None
                self.network.train(was_training)

    def _fewest_batches(self) -> int:
        """The smallest number of validation batches on any rank (collective)."""
        import torch.distributed as dist

        count = torch.tensor([len(self.data_loader)], dtype=torch.float64)
        if dist.get_backend() == "nccl":
            count = count.to(torch.device("cuda", torch.cuda.current_device()))
        dist.all_reduce(count, op=dist.ReduceOp.MIN)
        return int(count.item())

    def _iteration(self, engine: ClosedSetEvaluator, batchdata: dict[str, list]) -> dict:
        model = getattr(engine, "generation_network", None)
        if model is None:  # run outside ``run`` (e.g. a bare ignite call): a plain or DDP model
            model = getattr(engine.network, "module", engine.network)
        model.eval()
        images = [[img.to(engine.state.device) for img in case] for case in batchdata["images"]]
        # each rank generates alone (see ``generation_model``): HF must not wait for the others at every token
        answers = answer_prompts(model, engine.processor, batchdata["prompt"], images, engine.max_new_tokens,
                                 synced_gpus=False)
        matched = [match_closed_set(a, c) for a, c in zip(answers, batchdata["choices"])]
        truth = [match_reference(r, c) for r, c in zip(batchdata["reference"], batchdata["choices"])]
        engine.state.output = {
            "ids": batchdata["ids"],
            "task": batchdata["task"],
            "prediction": answers,
            "correct": [m == t for m, t in zip(matched, truth)],
        }
        return engine.state.output
