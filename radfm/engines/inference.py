"""Answering prompts about scans.

``inference.json`` / ``evaluate.json`` parts (a MONAI inference workflow): :func:`prompt_items`
(the data), :class:`EachImaged` (the bundle's per-scan ``preprocessing`` on every scan of a case),
:class:`GenerationInferer` (greedy answers, grid checks), :class:`AnswerEvaluator` (the
``evaluator``), :class:`PrintAnswerd` (postprocessing), :class:`AnswerWriter` (JSONL handler),
:class:`ClosedSetScore` (closed-set accuracy metric). :func:`answer_prompts` is the same in one
Python call (no engine), for scripts.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ignite.metrics import Metric
from monai.engines import SupervisedEvaluator
from monai.inferers import Inferer

from radfm.engines.data import ImageLoader, default_image_loader


def image_loader_for(model_dir: str | os.PathLike | None) -> ImageLoader:
    """The preprocessing a model was trained with: ``preprocess_scan`` with the options recorded in
    its ``preprocess.json`` (the demo model records a smaller grid there), else the standard one."""
    if model_dir is None:
        return default_image_loader()
    from radfm.model.loading import preprocess_options

    return default_image_loader(**preprocess_options(model_dir))


def answer_prompts(
    model: torch.nn.Module,
    cases: Sequence[dict[str, Any]],
    *,
    image_loader: ImageLoader,
    base_dir: str | os.PathLike | None = None,
    max_new_tokens: int = 32,
    output_file: str | os.PathLike | None = None,
    print_answers: bool = True,
    **generate_kwargs: Any,
) -> list[str]:
    """Answer each ``{"prompt": str, "images": [paths]}`` case; print and/or write JSONL.

    Relative image paths are resolved against ``base_dir``. A prompt without ``<image>``
    placeholders gets one per image in front. Returns the answers in order.
    """
    from radfm.model.generation import generate_text

    base = Path(os.fspath(base_dir)) if base_dir is not None else Path.cwd()
    prompts, images, paths = [], [], []
    for index, case in enumerate(cases):
        if "prompt" not in case or "images" not in case:
            raise ValueError(f"case {index}: expected keys 'prompt' and 'images', got {sorted(case)}")
        case_paths = [str(p if Path(p).is_absolute() else base / p) for p in case["images"]]
        for path in case_paths:
            if not Path(path).exists():
                raise FileNotFoundError(f"case {index}: image file not found: {path}")
        prompts.append(case["prompt"])
        paths.append(case_paths)
        images.append([image_loader(p) for p in case_paths])
    network = getattr(model, "module", model).eval()
    with torch.no_grad():
        answers = generate_text(network, network.tokenizer, prompts, images, max_new_tokens=max_new_tokens,
                                **generate_kwargs)
    if print_answers:
        for prompt, case_paths, answer in zip(prompts, paths, answers):
            names = ", ".join(Path(p).name for p in case_paths)
            print(f"[{names}]\n  Q: {prompt}\n  A: {answer}\n", flush=True)
    if output_file is not None:
        _write_jsonl(Path(output_file), [
            {"prompt": p, "images": i, "answer": a} for p, i, a in zip(prompts, paths, answers)
        ])
    return answers


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    """Atomic write: a temp file in the same folder, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(row) + "\n" for row in rows)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------- inference.json / evaluate.json parts ----
def prompt_items(cases: Sequence[dict[str, Any]] | str | os.PathLike | None,
                 base_dir: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """``{"prompt", "images"}`` cases (a list, or a JSON file holding one) → dataset items.

    Each item: ``prompt``, ``image_paths`` (absolute; relative ones resolved against ``base_dir``)
    and ``images`` (the same paths; the preprocessing replaces them by tensors). Missing files and
    malformed cases raise naming the case.
    """
    if isinstance(cases, (str, os.PathLike)):
        cases = json.loads(Path(cases).read_text(encoding="utf-8"))
    base = Path(os.fspath(base_dir)) if base_dir is not None else Path.cwd()
    items = []
    for index, case in enumerate(cases or []):
        if not isinstance(case, dict) or "prompt" not in case or "images" not in case:
            raise ValueError(f"case {index}: expected an object with keys 'prompt' and 'images', got {case!r:.200}")
        paths = [str(p if Path(p).is_absolute() else base / p) for p in case["images"]]
        for path in paths:
            if not Path(path).exists():
                raise FileNotFoundError(f"case {index}: image file not found: {path}")
        items.append({"prompt": case["prompt"], "image_paths": paths, "images": list(paths)})
    return items


class EachImaged:
    """Apply a dictionary ``transform`` on ``{"image": path}`` to every path in ``item[key]`` (a list).

    Lets one bundle ``preprocessing`` (a ``Compose`` of dictionary transforms on ``image``) serve
    cases with any number of scans.
    """

    def __init__(self, keys: str, transform: Any, image_key: str = "image") -> None:
        self.key, self.transform, self.image_key = keys, transform, image_key

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        from radfm.engines.data import plain_image

        d = dict(data)
        d[self.key] = [plain_image(self.transform({self.image_key: p})[self.image_key]) for p in d[self.key]]
        return d


class GenerationInferer(Inferer):
    """Greedy answers for a batch ``{"prompt": [...], "images": [[tensors]]}`` from a RadFM network.

    ``trained_grid`` (from the model folder's ``preprocess.json``) is checked twice: against the
    config's ``image_grid`` at construction and against every scan's shape before generation,
    so a model never answers about scans at a grid it was not trained at
    (:class:`radfm.engines.grid.GridMismatchError`, naming both grids).
    """

    def __init__(self, max_new_tokens: int = 32, trained_grid: dict | None = None, image_grid: dict | None = None,
                 model_name: str = "the model") -> None:
        from radfm.engines.grid import check_same_grid

        self.max_new_tokens = max_new_tokens
        self.trained_grid = trained_grid
        self.model_name = model_name
        if trained_grid is not None and image_grid is not None:
            check_same_grid(trained_grid, image_grid, model=model_name)

    def __call__(self, inputs: dict[str, Any], network: torch.nn.Module, *args: Any, **kwargs: Any) -> list[str]:
        from radfm.engines.grid import check_images
        from radfm.model.generation import generate_text

        model = getattr(network, "module", network)
        if self.trained_grid is not None:
            for images, names in zip(inputs["images"], inputs.get("image_paths") or [None] * len(inputs["images"])):
                check_images(images, self.trained_grid, names=names, model=self.model_name)
        dtype = next(model.parameters()).dtype
        images = [[img.to(device=model.device, dtype=dtype) for img in case] for case in inputs["images"]]
        with torch.no_grad():
            return generate_text(model, model.tokenizer, list(inputs["prompt"]), images,
                                 max_new_tokens=self.max_new_tokens, **kwargs)


class AnswerEvaluator(SupervisedEvaluator):
    """MONAI evaluator of ``inference.json``: each iteration answers a batch of prompts with ``inferer``.

    Output: one dict per case (``prompt``, ``image_paths``, ``pred`` = the answer), already
    decollated (answers are strings; ``decollate`` is off); ``postprocessing`` runs on each case
    and ``val_handlers`` (e.g. :class:`AnswerWriter`) see the list. Batches come from
    :func:`radfm.engines.data.collate_cases`.
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
            _write_jsonl(Path(self.output_file), self.rows)
