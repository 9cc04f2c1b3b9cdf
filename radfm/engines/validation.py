"""Closed-answer validation: generate, match to the closed set with difflib, report accuracy.

``ClosedSetEvaluator`` is a MONAI ``Evaluator`` so that ``ValidationHandler``, the metric
bookkeeping (best metric, ``engine.state.metrics``) and ``--tracking mlflow`` (the
``validate#evaluator`` id) all work as for any MONAI bundle.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from ignite.metrics import Metric
from monai.engines import Evaluator

from radfm.metrics.closed import match_closed_set, match_reference


def generate_answers(model: Any, tokenizer: Any, prompts: Sequence[str], images: Sequence[Sequence[torch.Tensor]],
                     max_new_tokens: int = 16) -> list[str]:
    """Greedy answers for a batch of prompts (``<image>`` placeholders) and their images."""
    from radfm.model.generation import generate_text

    return generate_text(model, tokenizer, list(prompts), [list(i) for i in images], max_new_tokens=max_new_tokens)


class ClosedSetAccuracy(Metric):
    """Fraction of cases whose matched answer equals the reference's (optionally one task)."""

    def __init__(self, task: str | None = None) -> None:
        self.task = task
        # a tuple, not the output mapping: ignite expects (y_pred, y) keys in mappings
        super().__init__(output_transform=lambda output: (output["task"], output["correct"]))

    def reset(self) -> None:
        self._correct = 0
        self._total = 0

    def update(self, output: tuple[list[str], list[bool]]) -> None:
        for task, correct in zip(*output):
            if self.task is None or task == self.task:
                self._correct += int(correct)
                self._total += 1

    def compute(self) -> float:
        return self._correct / self._total if self._total else float("nan")


class ClosedSetEvaluator(Evaluator):
    """Runs the model over ``ClosedSetDataset`` batches; metrics: ``val_accuracy`` (+ per task).

    The model and tokenizer are needed for generation; ``tasks`` adds ``val_accuracy_<task>``.
    """

    def __init__(
        self,
        device: str | torch.device,
        val_data_loader: Any,
        network: torch.nn.Module,
        tokenizer: Any,
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
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens

    def _iteration(self, engine: ClosedSetEvaluator, batchdata: dict[str, list]) -> dict:
        model = getattr(engine.network, "module", engine.network)
        model.eval()
        images = [[img.to(engine.state.device) for img in case] for case in batchdata["images"]]
        answers = generate_answers(model, engine.tokenizer, batchdata["prompt"], images, engine.max_new_tokens)
        matched = [match_closed_set(a, c) for a, c in zip(answers, batchdata["choices"])]
        truth = [match_reference(r, c) for r, c in zip(batchdata["reference"], batchdata["choices"])]
        engine.state.output = {
            "ids": batchdata["ids"],
            "task": batchdata["task"],
            "prediction": answers,
            "correct": [m == t for m, t in zip(matched, truth)],
        }
        return engine.state.output
