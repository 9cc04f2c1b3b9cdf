"""Answering prompts about scans.

``inference.json`` / ``evaluate.json`` engine parts (a MONAI inference workflow):
:class:`GenerationInferer` (greedy answers, grid checks), :class:`AnswerEvaluator` (the
``evaluator``), :class:`PrintAnswerd` (postprocessing), :class:`AnswerWriter` (JSONL handler).
Their data comes from ``radfm.data.loaders`` (``prompt_items``, ``EachImaged``, ``collate_cases``,
``ClosedSetDataset``) and their closed-set metric from ``radfm.metrics.ignite_metrics``
(``ClosedSetScore``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from monai.engines import SupervisedEvaluator
from monai.inferers import Inferer

from radfm.utils.io import atomic_write_text


class GenerationInferer(Inferer):
    """Greedy answers for a batch ``{"prompt": [...], "images": [[tensors]]}`` from a RadFM network.

    ``trained_grid`` (from the model folder's processor (``processor_config.json``)) is checked twice: against the
    config's ``image_grid`` at construction and against every scan's shape before generation,
    so a model never answers about scans at a grid it was not trained at
    (:class:`radfm.model.processing.GridMismatchError`, naming both grids).
    """

    def __init__(self, max_new_tokens: int = 32, trained_grid: dict | None = None, image_grid: dict | None = None,
                 model_name: str = "the model") -> None:
        from radfm.model.processing import RadFMImageProcessor

        self.max_new_tokens = max_new_tokens
        self.trained = None if trained_grid is None else RadFMImageProcessor.at_grid(trained_grid, "trained_grid")
        self.model_name = model_name
        if self.trained is not None:
            self.trained.check_same_grid(image_grid, model=model_name)

    def __call__(self, inputs: dict[str, Any], network: torch.nn.Module, *args: Any, **kwargs: Any) -> list[str]:
        from radfm.engines.validation import generate_answers

        model = getattr(network, "module", network)
        if self.trained is not None:
            for images, names in zip(inputs["images"], inputs.get("image_paths") or [None] * len(inputs["images"])):
                self.trained.check_images(images, names=names, model=self.model_name)
        dtype = next(model.parameters()).dtype
        images = [[img.to(device=model.device, dtype=dtype) for img in case] for case in inputs["images"]]
        with torch.no_grad():
            return generate_answers(model, model.tokenizer, list(inputs["prompt"]), images,
                                    max_new_tokens=self.max_new_tokens, **kwargs)


class AnswerEvaluator(SupervisedEvaluator):
    """MONAI evaluator of ``inference.json``: each iteration answers a batch of prompts with ``inferer``.

    Output: one dict per case (``prompt``, ``image_paths``, ``pred`` = the answer), already
    decollated (answers are strings; ``decollate`` is off); ``postprocessing`` runs on each case
    and ``val_handlers`` (e.g. :class:`AnswerWriter`) see the list. Batches come from
    :func:`radfm.data.loaders.collate_cases`.
    """

    def __init__(self, device: str | torch.device, val_data_loader: Any, network: torch.nn.Module,
                 inferer: Inferer, **kwargs: Any) -> None:
        kwargs.setdefault("prepare_batch", lambda batch, *a, **k: batch)
        kwargs["decollate"] = False
        super().__init__(device=torch.device(device), val_data_loader=val_data_loader, network=network,
                         inferer=inferer, **kwargs)

    def _iteration(self, engine: AnswerEvaluator, batchdata: dict[str, Any]) -> dict:
        from monai.engines.utils import IterationEvents

        engine.network.eval()
        answers = engine.inferer(batchdata, engine.network)
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        paths = batchdata.get("image_paths") or [[] for _ in answers]
        cases = [{"prompt": p, "image_paths": list(i), "pred": a} for p, i, a in zip(batchdata["prompt"], paths, answers)]
        if "choices" in batchdata and "reference" in batchdata:  # closed-set cases (evaluate.json)
            from radfm.metrics.closed import match_closed_set, match_reference

            for case, choices, reference, task, case_id in zip(cases, batchdata["choices"], batchdata["reference"],
                                                                batchdata["task"], batchdata["ids"]):
                case.update(id=case_id, task=task, reference=reference,
                            correct=match_closed_set(case["pred"], choices) == match_reference(reference, choices))
        engine.state.output = cases
        engine.fire_event(IterationEvents.MODEL_COMPLETED)  # runs the postprocessing on each case
        return engine.state.output


class PrintAnswerd:
    """Postprocessing: print one decollated case (``[scans]  Q: prompt  A: answer``); returns it unchanged."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        if self.enabled:
            names = ", ".join(Path(p).name for p in data.get("image_paths") or [])
            print(f"[{names}]\n  Q: {data['prompt']}\n  A: {data['pred']}\n", flush=True)
        return data


class AnswerWriter:
    """Handler: collect every case's answer and, at the end, write them as JSONL (atomic) if ``output_file``."""

    def __init__(self, output_file: str | os.PathLike | None = None) -> None:
        self.output_file = output_file
        self.rows: list[dict[str, Any]] = []

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, lambda _: self.rows.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.COMPLETED, self._write)

    def _collect(self, engine: Any) -> None:
        cases = engine.state.output
        self.rows.extend({"prompt": c["prompt"], "images": list(c["image_paths"]), "answer": c["pred"]} for c in cases)

    def _write(self, engine: Any) -> None:
        if self.output_file is not None:
            _write_jsonl(self.output_file, self.rows)


def _write_jsonl(path: str | os.PathLike, rows: list[dict]) -> None:
    """``rows`` as JSON lines, written atomically (``radfm.utils.io``)."""
    atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in rows))
