"""Answering prompts about scans.

``inference.json`` / ``evaluate.json`` engine parts (a MONAI inference workflow):
:class:`GenerationInferer` (greedy answers, grid checks), :class:`AnswerEvaluator` (the
``evaluator``), :class:`PrintAnswerd` (postprocessing), :class:`AnswerWriter` (JSONL handler).
:func:`answer_prompts` is how every engine generates (these and the training run's validation,
:mod:`radfm.engines.validation`): through the request path's own wrapper,
:meth:`radfm.answering.answerer.ModelAnswerer.answer_batch`.
Their data comes from ``radfm.data.loaders`` (``prompt_items``, ``EachImaged``, ``collate_cases``,
``ClosedSetDataset``) and their closed-set metric from ``radfm.metrics.ignite_metrics``
(``ClosedSetScore``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from monai.engines import SupervisedEvaluator
from monai.inferers import Inferer

from radfm.utils.io import atomic_write_text


def answer_prompts(model: torch.nn.Module, processor: Any, prompts: Sequence[str],
                   images: Sequence[Sequence[torch.Tensor]], max_new_tokens: int = 16,
                   **generate_kwargs: Any) -> list[str]:
    """Greedy answers for a batch of prompts and their preprocessed scans, generated the way a request is.

    One wrapper for the whole toolkit: the request path's
    :meth:`~radfm.answering.answerer.ModelAnswerer.answer_batch` (the processor tokenises the batch once,
    ``model.generate``, cut at EOS and decoded once), so validation, the bundles and the service
    cannot answer the same case differently.

    Args:
        model: a plain RadFM model (DDP's ``module`` or FSDP's gathered model, see
            :func:`radfm.engines.distributed.generation_model`).
        processor: its :class:`~radfm.model.processing.RadFMProcessor` (``radfm.load`` returns it; a
            bundle names it ``@processor``): the tokenizer, the prompt rules and the grid.
        prompts: one prompt per case (``<image>`` placeholders, or none: one per scan in front).
        images: per case its ``[3, H, W, D]`` scans, already at the processor's grid (else
            :class:`~radfm.model.processing.GridMismatchError`).
        max_new_tokens: the longest answer in tokens.
        generate_kwargs: more ``model.generate`` arguments (e.g. ``synced_gpus=False`` on one rank).

    Returns:
        One answer per prompt.
    """
    from radfm.answering.answerer import ModelAnswerer
    from radfm.answering.identity import ModelIdentity
    from radfm.answering.options import GenerationOptions

    images = [list(case) for case in images]
    for case in images:  # a tensor off the grid would be preprocessed a second time by the processor: refuse it
        processor.image_processor.check_images(case)
    # the identity only labels service answers; hashing the weights for it at every batch would cost a pass
    answerer = ModelAnswerer(model, processor, identity=ModelIdentity(), generate_kwargs=generate_kwargs)
    return answerer.answer_batch(list(prompts), images, GenerationOptions(max_new_tokens=max_new_tokens))


class GenerationInferer(Inferer):
    """Greedy answers for a batch ``{"prompt": [...], "images": [[tensors]]}`` from a RadFM network.

    ``processor``: the model's :class:`~radfm.model.processing.RadFMProcessor` (``radfm.load(...).processor``);
    answers come from :func:`answer_prompts`.

    ``trained_grid`` (from the model folder's processor (``processor_config.json``)) is checked twice: against the
    config's ``image_grid`` at construction and against every scan's shape before generation,
    so a model never answers about scans at a grid it was not trained at
    (:class:`radfm.model.processing.GridMismatchError`, naming both grids).
    """

    def __init__(self, processor: Any, max_new_tokens: int = 32, trained_grid: dict | None = None,
                 image_grid: dict | None = None, model_name: str = "the model") -> None:
        from radfm.model.processing import RadFMImageProcessor

        self.processor = processor
        self.max_new_tokens = max_new_tokens
        self.trained = None if trained_grid is None else RadFMImageProcessor.at_grid(trained_grid, "trained_grid")
        self.model_name = model_name
        if self.trained is not None:
            self.trained.check_same_grid(image_grid, model=model_name)

    def __call__(self, inputs: dict[str, Any], network: torch.nn.Module, *args: Any, **kwargs: Any) -> list[str]:
        model = getattr(network, "module", network)
        if self.trained is not None:
            for images, names in zip(inputs["images"], inputs.get("image_paths") or [None] * len(inputs["images"])):
                self.trained.check_images(images, names=names, model=self.model_name)
        # float32 at the processor's grid passes through it unchanged; the model casts to its own dtype
        images = [[img.to(device=model.device) for img in case] for case in inputs["images"]]
        return answer_prompts(model, self.processor, inputs["prompt"], images, max_new_tokens=self.max_new_tokens,
                              **kwargs)


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
