"""Answering prompts about scans: the code path of ``inference.json`` and ``radfm demo``."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

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
