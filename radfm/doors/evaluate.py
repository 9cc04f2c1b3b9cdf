"""``radfm evaluate``: run a model over a manifest, then score it (RadBench-style).

    radfm evaluate --manifest phantoms/test.jsonl --model DIR --output runs/eval [--tasks vqa,report]

Writes into OUTPUT: ``predictions.jsonl`` (one line per case, appended and fsync'ed after every
batch), ``metrics.json``, ``report.md`` and ``metrics.png``.

- Resumable: a rerun reads ``predictions.jsonl``, skips every case already recorded and drops a
  torn last line left by a kill mid-write, so each case is predicted and scored exactly once.
- A case that fails (unreadable scan, prompt too long, ...) is recorded with ``error`` and the
  run carries on; ``--retry_failed`` predicts recorded failures again on the next run.
- Sharded under torchrun (``torchrun --nproc_per_node=N -m radfm.cli evaluate ...`` or any launcher
  setting RANK/WORLD_SIZE): rank r predicts every N-th batch from r into
  ``predictions.rank<r>.jsonl`` (resumable like the single file), then rank 0 merges the new
  records into ``predictions.jsonl`` in case order and scores; metrics equal a one-process run.
  ``device="cuda"`` means each rank's own GPU (``LOCAL_RANK``); NCCL on GPUs, gloo on CPU.
- Prompts: ``radfm`` (the sample's own instruction, zero-shot, the paper's protocol for RadFM)
  or ``flamingo`` (Med-Flamingo zero/few-shot format with ``--shots K`` exemplars drawn from the
  manifest's train split of the same dataset and task; see :mod:`radfm.metrics.fewshot`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from radfm.metrics.fewshot import Exemplar, few_shot_prompt, select_exemplars
from radfm.metrics.predictions import PredictionRecord, read_jsonl
from radfm.utils.cli import as_list
from radfm.utils.io import atomic_write_text
from radfm.utils.lock import locks_folder

if TYPE_CHECKING:  # the loaders import torch: `radfm evaluate --help` and usage errors start without it
    from radfm.data.loaders import ImageLoader

logger = logging.getLogger(__name__)

PREDICTIONS_NAME = "predictions.jsonl"
PROMPT_FORMATS = ("radfm", "flamingo")

# (prompts, images per prompt) -> answers; images are [3, H, W, D] tensors.
PredictBatch = Callable[[list[str], list[list[Any]]], list[str]]


@dataclass
class EvalCase:
    """One case to predict: its prompt, the image files in prompt order, and what it is scored against."""

    id: str
    dataset: str
    task: str
    prompt: str
    image_paths: list[str]
    reference: str
    instruction: str
    closed_set: list[str] | None = None


# ---------------------------------------------------------------- case selection ----
def closed_set_of(sample: Any) -> list[str] | None:
    """yes/no for inductive tasks, a label list given in the sample's extra ``closed_set``, else None."""
    extra = getattr(sample, "extra", None) or {}
    if isinstance(extra.get("closed_set"), list):
        return [str(choice) for choice in extra["closed_set"]]
    from radfm.metrics.suite import CLOSED_TASKS  # imports the text metrics (ROUGE, nltk): here, not at --help

    return ["yes", "no"] if sample.task in CLOSED_TASKS else None


def select_samples(samples: Iterable[Any], *, tasks: Sequence[str] = (), datasets: Sequence[str] = (),
                   split: str | None = "test", limit: int | None = None) -> list[Any]:
    """Instruction samples of the chosen split/tasks/datasets (interleaved samples are not evaluable)."""
    chosen = []
    for sample in samples:
        if getattr(sample, "is_interleaved", False) or sample.instruction is None:
            continue
        if split and sample.split not in (split, None):
            continue
        if tasks and sample.task not in tasks:
            continue
        if datasets and sample.dataset not in datasets:
            continue
        chosen.append(sample)
    return chosen[:limit] if limit else chosen


def build_cases(samples: Sequence[Any], *, prompt_format: str = "radfm", shots: int = 0,
                exemplar_pool: Sequence[Any] = (), seed: int = 0) -> list[EvalCase]:
    """EvalCases for samples; ids must be unique (a duplicate would be scored twice)."""
    if prompt_format not in PROMPT_FORMATS:
        raise ValueError(f"prompt_format must be one of {', '.join(PROMPT_FORMATS)}, got {prompt_format!r}")
    if shots and prompt_format != "flamingo":
        raise ValueError("few-shot exemplars (--shots) need --prompt_format flamingo")
    seen: set[str] = set()
    pools: dict[tuple[str, str], list[tuple[Exemplar, list[str]]]] = {}
    for sample in exemplar_pool:
        if sample.instruction is not None and sample.response is not None:
            exemplar = Exemplar(sample.instruction, sample.response, len(sample.images), sample.id)
            pools.setdefault((sample.dataset, sample.task), []).append((exemplar, [i.path for i in sample.images]))
    cases = []
    for sample in samples:
        if sample.id in seen:
            raise ValueError(f"manifest has the id {sample.id!r} twice; ids must be unique to score each case once")
        seen.add(sample.id)
        paths = [image.path for image in sample.images]
        prompt = sample.instruction
        if prompt_format == "flamingo":
            pool = pools.get((sample.dataset, sample.task), [])
            chosen = select_exemplars([e for e, _ in pool], shots, exclude_id=sample.id, seed=seed,
                                      query_key=sample.id) if shots else []
            exemplar_paths = {e.id: p for e, p in pool}
            prompt = few_shot_prompt(chosen, sample.instruction, num_images=len(paths))
            paths = [p for e in chosen for p in exemplar_paths[e.id]] + paths  # images in prompt order
        cases.append(EvalCase(sample.id, sample.dataset, sample.task or "unknown", prompt, paths,
                              sample.response or "", sample.instruction, closed_set_of(sample)))
    return cases


# ---------------------------------------------------------------- resumable loop ----
def _recover(path: Path) -> list[PredictionRecord]:
    """Records already written; a torn last line (killed mid-write) is removed from the file."""
    if not path.is_file():
        return []
    records = read_jsonl(path, tolerate_truncated_tail=True)
    text = path.read_text(encoding="utf-8")
    complete = [line for line in text.splitlines() if line.strip()]
    if len(complete) != len(records) or (text and not text.endswith("\n")):
        logger.warning("%s: dropping a torn last line left by an interrupted run", path)
        atomic_write_text(path, "".join(json.dumps(r.to_json()) + "\n" for r in records))
    return records


def _record(case: EvalCase, model_name: str, prediction: str = "", error: str | None = None) -> PredictionRecord:
    return PredictionRecord(id=case.id, dataset=case.dataset, task=case.task, reference=case.reference,
                            prediction=prediction, instruction=case.instruction, model=model_name, error=error,
                            closed_set=case.closed_set, images=list(case.image_paths))


def _error_text(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def run_predictions(cases: Sequence[EvalCase], predict_batch: PredictBatch, load_image: ImageLoader,
                    predictions_path: str | Path, *, model_name: str, batch_size: int = 4,
                    retry_failed: bool = False, progress: bool = True) -> dict[str, int]:
    """Predict every case not yet in ``predictions_path``, appending one JSON line per case.

    Each batch is flushed and fsync'ed before the next starts, so a kill loses at most the batch
    in flight. Per-case failures (image loading, or generation when the case runs alone) are
    recorded with ``error``. Returns counts: ``skipped`` (already done), ``predicted``, ``failed``.
    """
    from tqdm.auto import tqdm

    from radfm.utils.progress import tqdm_options

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    path = Path(predictions_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    done = {r.id for r in _recover(path) if r.error is None or not retry_failed}
    todo = [case for case in cases if case.id not in done]
    counts = {"skipped": len(cases) - len(todo), "predicted": 0, "failed": 0}
    bar = tqdm(total=len(cases), initial=counts["skipped"], desc="evaluating", unit="case", disable=not progress,
               **tqdm_options())
    with path.open("a", encoding="utf-8") as handle:
        for start in range(0, len(todo), batch_size):
            batch = todo[start:start + batch_size]
            records = _predict_batch(batch, predict_batch, load_image, model_name)
            handle.write("".join(json.dumps(r.to_json()) + "\n" for r in records))
            handle.flush()
            os.fsync(handle.fileno())
            for r in records:
                counts["failed" if r.error else "predicted"] += 1
            bar.update(len(batch))
    bar.close()
    return counts


def _predict_batch(batch: Sequence[EvalCase], predict_batch: PredictBatch, load_image: ImageLoader,
                   model_name: str) -> list[PredictionRecord]:
    """Records for one batch, in batch order; a failing batch is retried case by case."""
    results: dict[str, PredictionRecord] = {}
    ready: list[tuple[EvalCase, list[Any]]] = []
    for case in batch:
        try:
            ready.append((case, [load_image(p) for p in case.image_paths]))
        except Exception as error:  # unreadable scan: record it, carry on
            results[case.id] = _record(case, model_name, error=_error_text(error))
    if ready:
        try:
            answers = predict_batch([c.prompt for c, _ in ready], [images for _, images in ready])
            if len(answers) != len(ready):
                raise RuntimeError(f"model returned {len(answers)} answers for {len(ready)} prompts")
            for (case, _), answer in zip(ready, answers):
                results[case.id] = _record(case, model_name, prediction=answer)
        except Exception:
            # Find the culprit(s): run each case alone so one bad case does not fail the batch.
            for case, images in ready:
                try:
                    results[case.id] = _record(case, model_name, prediction=predict_batch([case.prompt], [images])[0])
                except Exception as error:
                    results[case.id] = _record(case, model_name, error=_error_text(error))
    return [results[case.id] for case in batch]


# ---------------------------------------------------------------- model glue ----
def model_predictor(path: Any, *, max_new_tokens: int = 64) -> PredictBatch:
    """A PredictBatch through the request path (:class:`radfm.answering.request.RequestPath`).

    ``images`` are the cases' :class:`~radfm.answering.request.ScanInput` lists (see
    :func:`scan_input`): each case is one request, read and checked like every other door's
    (limits, formats, zips), so a bad scan fails its case with the same message; a batch's
    generations share one ``generate`` call (:class:`~radfm.answering.request.Batch`).
    """
    import asyncio

    from radfm.answering.request import AnswerRequest, Batch

    async def run_all(prompts: list[str], images: list[list[Any]]) -> list[Any]:
        batch = Batch(len(prompts))  # read one by one, generated together (left padded)
        return await asyncio.gather(*(path.run(AnswerRequest(prompt, list(scans), {"max_new_tokens": max_new_tokens}),
                                               batch=batch) for prompt, scans in zip(prompts, images)),
                                    return_exceptions=True)

    def predict(prompts: list[str], images: list[list[Any]]) -> list[str]:
        results = asyncio.run(run_all(prompts, images))
        failed = next((r for r in results if isinstance(r, BaseException)), None)
        if failed is not None:
            raise failed  # run_predictions then runs each case alone and records the failing one
        return [result.text for result in results]

    return predict


def scan_input(image_path: str) -> Any:
    """A manifest image path as a request path input (read later, inside the request)."""
    from radfm.answering.request import ScanInput

    return ScanInput(str(image_path), path=Path(image_path))


def check_flags(*, batch_size: int, max_new_tokens: int, limit: int | None, shots: int, n_resamples: int) -> None:
    """Refuse flag values that cannot be right, before the manifest is read or a model loads."""
    from radfm.utils.cli import UsageError

    checks = [("batch_size", batch_size, 1), ("max_new_tokens", max_new_tokens, 1), ("shots", shots, 0),
              ("n_resamples", n_resamples, 0)]
    if limit is not None:
        checks.append(("limit", limit, 1))
    for name, value, low in checks:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise UsageError(f"--{name}={value!r}: expected a whole number >= {low}")


@locks_folder("output", "radfm evaluate")  # a second run on the same OUTPUT fails at once
def evaluate(manifest: str, model: str, output: str, tasks: str | Sequence[str] | None = None,
             datasets: str | Sequence[str] | None = None, split: str = "test", batch_size: int = 4,
             max_new_tokens: int = 64, limit: int | None = None, prompt_format: str = "radfm", shots: int = 0,
             retry_failed: bool = False, model_name: str | None = None, device: str = "cpu", dtype: str | None = None,
             data_root: str | None = None, bertscore: bool = True, bertscore_model: str | None = None,
             terms: str | None = None, n_resamples: int = 1000, seed: int = 0, max_scan_mb: int = 2048,
             engine: str | None = None) -> str:
    """Evaluate a model on a manifest: predictions.jsonl, metrics.json, report.md, metrics.png in OUTPUT.

    Args:
        manifest: sample manifest (JSONL, see docs/data.md).
        model: model directory (``save_pretrained`` / ``radfm convert`` output) or the preset ``tiny``.
        output: folder for the results; rerunning with the same folder resumes.
        tasks: tasks to evaluate (comma-separated), default all.
        datasets: datasets to evaluate (comma-separated), default all.
        split: manifest split to evaluate (samples without a split are included); "" for all.
        batch_size: prompts per generate call; a failing batch is retried case by case.
        max_new_tokens: answer length limit.
        limit: evaluate only the first LIMIT selected samples (>= 1).
        prompt_format: "radfm" (instruction as is) or "flamingo" (Med-Flamingo zero/few-shot format).
        shots: few-shot exemplars per query (flamingo format), drawn from the train split, seeded.
        retry_failed: predict cases recorded with an error again.
        model_name: name in predictions and reports (default: the model folder name).
        device: torch device. dtype: e.g. bfloat16.
        data_root: folder image paths must stay inside (default: the manifest's folder).
        bertscore / bertscore_model / terms / n_resamples / seed: scoring options, as in ``radfm score``.
        max_scan_mb: largest decoded size of one scan in MiB (checked from its header); a larger one fails its case.
        engine: transformers | vllm (a batch's cases then batch continuously in vLLM; one process, no torchrun);
            default $RADFM_ENGINE, else transformers.
    Returns:
        the path of report.md.
    """
    from radfm.answering.engines import check_engine
    from radfm.answering.limits import Limits
    from radfm.answering.options import GenerationOptions
    from radfm.utils.cli import UsageError

    check_flags(batch_size=batch_size, max_new_tokens=max_new_tokens, limit=limit, shots=shots,
                n_resamples=n_resamples)
    try:
        limits = Limits.from_flags(max_scan_mb=max_scan_mb, max_new_tokens=GenerationOptions.MAX_BEAM_TOKENS)
        engine = check_engine(engine)
        if engine == "vllm" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ValueError("--engine vllm runs in one process (it batches and splits the model itself): "
                             "start it without torchrun")
    except ValueError as error:
        raise UsageError(str(error)) from None
    from radfm.data.manifest import load_manifest
    from radfm.metrics.score import build_options

    output_dir = Path(output)
    all_samples = load_manifest(manifest, data_root=data_root)
    samples = select_samples(all_samples, tasks=as_list(tasks), datasets=as_list(datasets),
                             split=split or None, limit=limit)
    if not samples:
        raise ValueError(f"{manifest}: no instruction samples match split={split!r}, tasks={tasks!r}, datasets={datasets!r}")
    pool = [s for s in all_samples if s.split == "train"] if shots else []
    cases = build_cases(samples, prompt_format=prompt_format, shots=shots, exemplar_pool=pool, seed=seed)

    from radfm.model.loading import load

    with _process_group(device) as (rank, world_size, device):
        from radfm.answering.answerer import ModelAnswerer
        from radfm.answering.engines import load_answerer
        from radfm.answering.identity import ModelIdentity
        from radfm.answering.request import RequestPath

        name = model_name or Path(str(model)).name or str(model)
        if engine == "vllm":
            answerer = load_answerer(model, engine, dtype=dtype)
        else:
            network, processor = load(model, device=device, dtype=dtype)
            # each rank generates alone: HF must not wait for the others at every token
            answerer = ModelAnswerer(network, processor, identity=ModelIdentity(name=name),
                                     generate_kwargs={"synced_gpus": False} if world_size > 1 else None)
        path = RequestPath(answerer, limits)
        predict = model_predictor(path, max_new_tokens=max_new_tokens)
        predictions_path = output_dir / PREDICTIONS_NAME
        try:
            if world_size == 1:
                counts = run_predictions(cases, predict, scan_input, predictions_path, model_name=name,
                                         batch_size=batch_size, retry_failed=retry_failed)
            else:
                counts = _run_shard(cases, predict, scan_input, output_dir, rank, world_size, model_name=name,
                                    batch_size=batch_size, retry_failed=retry_failed)
        finally:
            path.close()
        logger.info(f"rank {rank}/{world_size} predictions: %(predicted)d new, %(failed)d failed, "
                    "%(skipped)d already done", counts)
        if rank != 0:
            return str(output_dir / "report.md")  # rank 0 writes it
        return score_predictions(predictions_path, output_dir, case_ids=[c.id for c in cases], name=name,
                                 options=build_options(bertscore=bertscore, bertscore_model=bertscore_model,
                                                       terms=terms, n_resamples=n_resamples, seed=seed,
                                                       device=device))


# ---------------------------------------------------------------- sharding (torchrun) ----
def shard_predictions_path(output_dir: Path, rank: int) -> Path:
    """The file rank ``rank`` appends its records to before rank 0 merges them."""
    return Path(output_dir) / f"predictions.rank{rank}.jsonl"


@contextlib.contextmanager
def _process_group(device: str):
    """(rank, world size, this rank's device) for the run; starts (and ends) a process group when
    launched with WORLD_SIZE > 1 and none is up yet."""
    import torch
    import torch.distributed as dist

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    started = False
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if str(device).startswith("cuda") else "gloo")
        started = True
    try:
        rank, world_size = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
        if world_size > 1 and str(device) == "cuda":
            local = int(os.environ.get("LOCAL_RANK", rank % max(torch.cuda.device_count(), 1)))
            torch.cuda.set_device(local)
            device = f"cuda:{local}"
        yield rank, world_size, device
    finally:
        if started:
            from radfm.engines.distributed import destroy_process_group

            destroy_process_group()


def _run_shard(cases: Sequence[EvalCase], predict: PredictBatch, load_image: ImageLoader, output_dir: Path,
               rank: int, world_size: int, *, model_name: str, batch_size: int, retry_failed: bool) -> dict[str, int]:
    """This rank's slice of the cases not yet in predictions.jsonl; rank 0 then merges every shard."""
    import torch.distributed as dist

    from radfm.engines.distributed import rank_slice

    merged_path = output_dir / PREDICTIONS_NAME
    output_dir.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        _recover(merged_path)  # drop a torn last line before anyone reads it
    dist.barrier()
    merged = read_jsonl(merged_path) if merged_path.is_file() else []
    done = {r.id for r in merged if r.error is None or not retry_failed}
    todo = [c for c in cases if c.id not in done]
    # whole batches go round-robin: each rank's batches (and their padding) are exactly those of a
    # one-process run, so the predictions are the same
    batches = [todo[i:i + batch_size] for i in range(0, len(todo), batch_size)]
    mine = [case for batch in rank_slice(batches, rank, world_size) for case in batch]
    counts = run_predictions(mine, predict, load_image, shard_predictions_path(output_dir, rank),
                             model_name=model_name, batch_size=batch_size, retry_failed=retry_failed,
                             progress=rank == 0)
    counts["skipped"] += len(done & {c.id for c in cases})
    dist.barrier()  # every shard is complete on disk
    if rank == 0:
        _merge_shards(merged_path, [shard_predictions_path(output_dir, r) for r in range(world_size)],
                      [c.id for c in cases])
    dist.barrier()  # the merge is done before any rank returns (and a rerun reads it)
    return counts


def _merge_shards(merged_path: Path, shard_paths: Sequence[Path], case_order: Sequence[str]) -> None:
    """Append the shards' records to predictions.jsonl in case order (atomically), then remove the shards."""
    existing = _recover(merged_path)
    new = [r for path in shard_paths for r in _recover(path)]
    position = {case_id: i for i, case_id in enumerate(case_order)}
    new.sort(key=lambda r: position.get(r.id, len(position)))
    atomic_write_text(merged_path, "".join(json.dumps(r.to_json()) + "\n" for r in existing + new))
    for path in shard_paths:
        path.unlink(missing_ok=True)


def score_predictions(predictions_path: Path, output_dir: Path, *, case_ids: Sequence[str], name: str,
                      options: Any) -> str:
    """Score the cases of this run (ids in ``case_ids``) from predictions.jsonl into output_dir."""
    from radfm.metrics.predictions import deduplicate
    from radfm.metrics.score import write_outputs
    from radfm.metrics.suite import score_records

    wanted = set(case_ids)
    records, dropped = deduplicate([r for r in read_jsonl(predictions_path) if r.id in wanted])
    if dropped:
        options.notes.append(f"{dropped} earlier record(s) replaced by a retry")
    results = {name: score_records(records, options)}
    paths = write_outputs(output_dir, results, options, {name: str(predictions_path)})
    return str(paths["report"])
