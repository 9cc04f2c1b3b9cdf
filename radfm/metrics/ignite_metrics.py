"""Ignite metrics of the RadFM bundles (epoch-level: ``reset`` / ``update`` / ``compute``).

- :class:`ClosedSetAccuracy`: closed-set validation during training (``ClosedSetEvaluator``'s
  outputs); under DDP/FSDP it sums correct/total over the ranks, so every rank reports the
  metric of the whole (sharded) validation set.
- :class:`ClosedSetScore` / :func:`task_scores`: closed-set accuracy of ``evaluate.json``
  (``AnswerEvaluator``'s per-case outputs).
- :class:`MacroAUCF1`: macro AUC / F1 of the classification finetunes (softmax scores for
  multi-class, sigmoid scores thresholded at 0.5 for multi-label).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from ignite.metrics import Metric


def _world_size() -> int:
    """Processes in the default group (1 without one)."""
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _sum_over_ranks(*values: int) -> list[int]:
    """``values`` summed over all ranks (unchanged without a process group)."""
    import torch.distributed as dist

    if _world_size() == 1:
        return list(values)
    # gloo reduces CPU tensors; NCCL needs them on this rank's GPU
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    total = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return [int(v) for v in total.tolist()]


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
        correct, total = _sum_over_ranks(self._correct, self._total)  # collective: every rank computes
        return correct / total if total else float("nan")


class ClosedSetScore(Metric):
    """Accuracy over an evaluation of closed-set cases (all tasks, or one ``task``), from
    :class:`AnswerEvaluator`'s per-case outputs (``task``, ``correct``)."""

    def __init__(self, task: str | None = None) -> None:
        self.task = task
        super().__init__(output_transform=lambda output: output)

    def reset(self) -> None:
        self._correct, self._total = 0, 0

    def update(self, output: list[dict[str, Any]]) -> None:
        for case in output:
            if self.task is None or case["task"] == self.task:
                self._correct += int(bool(case["correct"]))
                self._total += 1

    def compute(self) -> float:
        return self._correct / self._total if self._total else float("nan")


def task_scores(tasks: Sequence[str] | None, prefix: str = "accuracy_") -> dict[str, ClosedSetScore]:
    """``{"accuracy_<task>": ClosedSetScore(task)}`` for ``evaluator#additional_metrics``."""
    return {f"{prefix}{task}": ClosedSetScore(task) for task in (tasks or [])}


def class_scores(logits: torch.Tensor, multi_label: bool) -> torch.Tensor:
    """Class probabilities ``[B, C]``: sigmoid (multi-label) or softmax (multi-class)."""
    return torch.sigmoid(logits) if multi_label else torch.softmax(logits, dim=-1)


def macro_auc_f1(labels: np.ndarray, probabilities: np.ndarray, multi_label: bool) -> tuple[float, float]:
    """(macro AUC, macro F1). Multi-class: ``radfm.metrics.classification``; multi-label: per class."""
    if multi_label:
        from sklearn.metrics import f1_score, roc_auc_score

        present = [c for c in range(labels.shape[1]) if 0 < labels[:, c].sum() < len(labels)]
        auc = float(roc_auc_score(labels[:, present], probabilities[:, present], average="macro")) if present else float("nan")
        f1 = float(f1_score(labels, (probabilities > 0.5).astype(int), average="macro", zero_division=0))
        return auc, f1
    from radfm.metrics.classification import macro_auc, macro_f1

    try:
        auc = macro_auc(labels, probabilities)
    except ValueError:  # a class missing from the validation labels
        auc = float("nan")
    return auc, macro_f1(labels, probabilities)


class MacroAUCF1(Metric):
    """Ignite metric over a whole validation epoch: ``"auc"`` or ``"f1"`` (macro)."""

    def __init__(self, kind: str = "auc", multi_label: bool = False) -> None:
        if kind not in ("auc", "f1"):
            raise ValueError(f"kind must be 'auc' or 'f1', got {kind!r}")
        self.kind = kind
        self.multi_label = multi_label
        super().__init__(output_transform=lambda out: (out["pred"], out["label"]))

    def reset(self) -> None:
        self._probabilities: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []

    def update(self, output: tuple[torch.Tensor, torch.Tensor]) -> None:
        logits, labels = output
        self._probabilities.append(class_scores(logits.detach().float(), self.multi_label).cpu().numpy())
        self._labels.append(labels.detach().cpu().numpy())

    def compute(self) -> float:
        auc, f1 = macro_auc_f1(np.concatenate(self._labels), np.concatenate(self._probabilities), self.multi_label)
        return auc if self.kind == "auc" else f1
