"""The Ray Data pipeline of ``radfm batch``: CPU tasks read, model actors generate, the driver writes.

::

    items (driver: manifest / folder tree / DICOMweb, minus the keys already in the output)
      -> ray.data.from_items(..., one block per batch)
      -> map(read_row)            CPU tasks (``read_workers`` at once): the request path with prompt=None
                                  (formats, guards, limits, DICOM grouping, the model's image processor),
                                  admitted by the reading budget -> the preprocessed images (pickled numpy)
      -> map_batches(Generator)   actors (``actors``, each ``gpus_per_actor`` GPUs), the model loaded once per
                                  actor; each batch runs through the request path as one ``generate`` call
      -> map(write_sr_row)        CPU tasks, only with ``sr_folder``: one DICOM SR per answered series
      -> driver: each finished block written as its own Parquet part (atomic), summary at the end

**The reading budget across workers.** One budget (``budget_mb``) bounds the image bytes of the whole run,
whatever the number of workers or nodes: (1) each of the ``read_workers`` read tasks admits its scans with
the request path's own :class:`~radfm.answering.worker.MemoryBudget` holding ``budget / read_workers`` bytes
(a scan whose header claims more than that share fails its row with ``scan_too_large``: the per-worker
shares sum to the budget, so the claims being read at once never exceed it); (2) the preprocessed images
waiting for the model are Ray objects, and Ray Data's streaming executor holds the object store memory of
the run under ``budget`` (``DataContext.execution_options.resource_limits.object_store_memory``):
it stops launching read tasks (backpressure) while that much is queued for the actors.

**Failures.** A failed study is a row with its ``error`` (the request path's code and message); no stage
raises for one study. A generation failure of a batch is retried study by study, so one bad study does not
fail its batch.

**Engines.** ``transformers`` (the :class:`~radfm.answering.answerer.ModelAnswerer`) is wired; ``vllm``
is refused with a clear error until the vLLM engine (``radfm/answering/vllm_engine.py``) is wired into
:func:`make_answerer`.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import pickle
import socket
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from radfm.batch.archive_items import BatchInputError
from radfm.utils.lock import locks_folder

logger = logging.getLogger(__name__)

MiB = 1024 * 1024
ENGINES = ("transformers", "vllm")


class EngineUnavailable(BatchInputError):
    """The generation engine asked for cannot run here; the message says why and what to use."""


def check_engine(engine: str) -> None:
    """Refuse an engine that cannot run, before Ray starts or a model loads.

    Raises:
        EngineUnavailable: ``vllm`` (not wired yet; not installed), or an unknown name.
    """
    import importlib.util

    if engine == "transformers":
        return
    if engine == "vllm":
        if importlib.util.find_spec("vllm") is None:
            raise EngineUnavailable("--engine vllm: vLLM is not installed here (pip install vllm, on a GPU machine); "
                                    "use --engine transformers")
        raise EngineUnavailable("--engine vllm: the batch stage is not wired to the vLLM engine yet "
                                "(radfm/answering/vllm_engine.py); use --engine transformers")
    raise EngineUnavailable(f"--engine={engine!r}: expected one of {', '.join(ENGINES)}")


def make_answerer(engine: str, model_dir: str, device: str, dtype: str | None):
    """The answerer of one generate actor (the model loaded once per actor).

    Args:
        engine: ``transformers`` (``vllm`` plugs in here once its engine exists).
        model_dir: the model folder.
        device / dtype: where and how the model loads (``cuda`` inside an actor is the GPU Ray gave it).

    Returns:
        An answerer with ``prepare``/``answer``/``answer_batch``, ``identity`` and ``max_images``.
    """
    check_engine(engine)
    from radfm.answering.answerer import ModelAnswerer

    return ModelAnswerer.from_model_dir(model_dir, device=device, dtype=dtype)


def node_name() -> str:
    """This worker's Ray node id (short) and pid, for the rows' ``read_node`` / ``generate_node``."""
    try:
        import ray

        node = ray.get_runtime_context().get_node_id()[:12]
    except Exception:  # noqa: BLE001 - outside Ray (unit use): the host name
        node = socket.gethostname()
    return f"{node}:{os.getpid()}"


def error_text(error: BaseException) -> str:
    """A row's error: the request path's code (``invalid_scan``, ``scan_too_large``) or the type, then the message."""
    code = getattr(error, "code", None)
    return f"{code or type(error).__name__}: {error}"


# ---------------------------------------------------------------- read stage (CPU tasks) -----
class ImageOnlyAnswerer:
    """The reading half of the answerer: the model's image processor, no model (read tasks load no weights)."""

    def __init__(self, model_dir: str, preprocess_options: dict[str, Any] | None = None) -> None:
        from radfm.model.processing import RadFMImageProcessor

        self.processor = SimpleNamespace(image_processor=RadFMImageProcessor.from_model_dir(model_dir))
        self.preprocess_options = dict(preprocess_options or {})
        config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
        self.max_images = int(config.get("max_images", 10))
        self.identity = None

    def prepare(self, scan_paths):
        """The model answerer's own ``prepare`` (one preprocessing, one error wording)."""
        from radfm.answering.answerer import ModelAnswerer

        return ModelAnswerer.prepare(self, scan_paths)


_READING_PATHS: dict[tuple, Any] = {}  # per worker process: Ray reuses its workers, so each builds one path


def _reading_path(model_dir: str, limits: dict[str, Any], preprocess_options: dict[str, Any]):
    from radfm.answering.limits import Limits
    from radfm.answering.request import RequestPath

    key = (model_dir, json.dumps(limits, sort_keys=True), json.dumps(preprocess_options, sort_keys=True))
    if key not in _READING_PATHS:
        _READING_PATHS[key] = RequestPath(ImageOnlyAnswerer(model_dir, preprocess_options), Limits(**limits))
    return _READING_PATHS[key]


def read_row(row: dict[str, Any], *, model_dir: str, limits: dict[str, Any],
             preprocess_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Read, guard and preprocess one item's scans through the request path (``prompt=None``).

    Args:
        row: a work item (:mod:`radfm.batch.archive_items`).
        model_dir: the model folder (its image processor: the grid).
        limits: :class:`~radfm.answering.limits.Limits` fields of this worker (its share of the budget).
        preprocess_options: per-scan options (window, ...).

    Returns:
        The row with ``images`` (pickled ``(numpy images, scan descriptions)``, ``b""`` on failure),
        ``error`` set when the study could not be read, and its read timings.
    """
    import numpy as np

    from radfm.answering.request import AnswerRequest, ScanInput

    row = dict(row)
    row["read_started"] = time.time()
    row["read_node"] = node_name()
    row["images"], row["read_wait_s"] = b"", float("nan")
    if not row["error"]:
        try:
            path = _reading_path(model_dir, limits, preprocess_options or {})
            files = json.loads(row["files"])
            if files:  # a series sharing its folder with others: its files, grouped by the request path
                request = AnswerRequest(None, [ScanInput(Path(f).name, path=Path(f)) for f in files],
                                        one_scan_per_input=False)
            else:
                request = AnswerRequest(None, [ScanInput(Path(s).name, path=Path(s))
                                               for s in json.loads(row["sources"])])
            result = path.run_blocking(request)
            scans = [(s.kind, s.names, s.series_uid) for s in result.scans]
            images = [np.ascontiguousarray(np.asarray(image, dtype=np.float32)) for image in result.images]
            row["images"] = pickle.dumps((images, scans), protocol=5)
            row["read_wait_s"] = float(result.timings.get("preprocess_wait", 0.0))
        except Exception as error:  # noqa: BLE001 - one study fails its row, never the job
            row["error"] = error_text(error)
    row["read_finished"] = time.time()
    row["read_s"] = row["read_finished"] - row["read_started"]
    return row


# ---------------------------------------------------------------- generate stage (actors) -----
class Generator:
    """A Ray Data actor: loads the model once, answers batches of read rows through the request path."""

    def __init__(self, *, model_dir: str, engine: str, device: str, dtype: str | None, max_new_tokens: int,
                 weights_sha256: str, threads: int = 1, generation_timeout_s: float = 1800.0) -> None:
        import torch

        from radfm.answering.limits import Limits
        from radfm.answering.request import RequestPath

        if device == "cpu":
            torch.set_num_threads(max(1, int(threads)))
        self.engine = engine
        self.answerer = make_answerer(engine, model_dir, device, dtype)
        identity = self.answerer.identity
        if identity.weights_sha256 != weights_sha256:  # the folder changed after the driver keyed the items
            raise RuntimeError(f"{model_dir}: weights hash {identity.weights_sha256[:12]} differs from the run's "
                               f"{weights_sha256[:12]} (the model folder changed during the run)")
        self.identity = identity
        self.options = {"max_new_tokens": int(max_new_tokens)}
        self.path = RequestPath(self.answerer, Limits(max_new_tokens=max(1024, int(max_new_tokens)),
                                                      generation_timeout_s=generation_timeout_s))
        self.node = node_name()

    def _request(self, row: dict[str, Any]):
        from radfm.answering.request import AnswerRequest, ScanInput
        from radfm.answering.scans import Scan

        images, scans = pickle.loads(row["images"])
        inputs = [ScanInput(names[0] if names else "scan", image=image,
                            scan=Scan(kind=kind, path=Path("."), names=list(names), series_uid=series_uid))
                  for image, (kind, names, series_uid) in zip(images, scans)]
        return AnswerRequest(row["prompt"], inputs, dict(self.options))

    async def _answer_all(self, rows: list[dict[str, Any]]) -> list[Any]:
        from radfm.answering.request import Batch

        batch = Batch(len(rows))  # one generate call for the batch (left padded), each row checked alone
        results = await asyncio.gather(*(self.path.run(self._request(r), batch=batch) for r in rows),
                                       return_exceptions=True)
        for i, result in enumerate(results):  # a failed batch: each study alone, so one bad study fails alone
            if isinstance(result, BaseException):
                try:
                    results[i] = await self.path.run(self._request(rows[i]))
                except Exception as error:  # noqa: BLE001
                    results[i] = error
        return results

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        columns = list(batch)
        rows = [dict(zip(columns, values)) for values in zip(*(batch[c] for c in columns))]
        ready = [r for r in rows if not r["error"]]
        started = time.time()
        results = asyncio.run(self._answer_all(ready)) if ready else []
        finished = time.time()
        for row, result in zip(ready, results):
            row["generate_started"], row["generate_finished"] = started, finished
            if isinstance(result, BaseException):
                row["error"] = error_text(result)
                row["generate_s"] = finished - started
            else:
                row["answer"] = result.text or ""
                row["generate_s"] = float(result.timings.get("generate", finished - started))
        for row in rows:
            row.pop("images", None)
            row.update(model_name=self.identity.name, model_version=self.identity.version,
                       weights_sha256=self.identity.weights_sha256, engine=self.engine, generate_node=self.node)
            row.setdefault("answer", "")
            for name in ("generate_started", "generate_finished", "generate_s"):
                row.setdefault(name, float("nan"))
        return {c: [r.get(c) for r in rows] for c in rows[0]} if rows else {}


# ---------------------------------------------------------------- SR stage (CPU tasks) -----
def write_sr_row(row: dict[str, Any], *, sr_folder: str) -> dict[str, Any]:
    """One DICOM Comprehensive SR per answered DICOM series (``radfm.dicom.sr.build_sr``), written atomically."""
    row = dict(row)
    row["sr_path"] = ""
    if row["error"] or not row["series_uid"]:
        return row
    try:
        from radfm.answering.identity import ModelIdentity
        from radfm.dicom.sr import build_sr, read_dicom_headers, write_dataset

        paths = json.loads(row["files"]) or json.loads(row["sources"])
        headers = [h for p in paths for h in read_dicom_headers(p)
                   if h.get("SeriesInstanceUID") == row["series_uid"]]
        identity = ModelIdentity(row["model_name"], row["model_version"], row["weights_sha256"])
        sr = build_sr(row["answer"], row["prompt"], headers, identity, parameters=[f"radfm_batch_key={row['key']}"])
        target = Path(sr_folder) / f"{row['series_uid']}-{row['key'][:12]}.dcm"
        row["sr_path"] = str(write_dataset(sr, target))
    except Exception as error:  # noqa: BLE001 - the row keeps its answer; --retry_failed makes the SR again
        from radfm.dicom.sr import SRExportError

        # our own SR errors name the file and field; another library's message may quote a header value
        # (a patient's name), so only its type goes into the output
        reason = str(error) if isinstance(error, SRExportError) else f"{type(error).__name__} while building the SR"
        row["error"] = f"SRExportError: {reason}"
    return row


# ---------------------------------------------------------------- the driver -----
def ensure_ray(address: str | None = None, num_cpus: int | None = None, object_store_mb: int = 200) -> bool:
    """Connect to Ray: the running session, a cluster at ``address``, or a small local one.

    Local: no dashboard, no usage statistics (offline), ``object_store_mb`` of object store. Returns
    whether this call started Ray (the caller then shuts it down).
    """
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # offline: never phone home
    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        # address="local": a Ray of this run's own, even where another one runs on the machine
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
                 object_store_memory=int(object_store_mb) * MiB, log_to_driver=False)
    return True


def _whole(name: str, value: Any, low: int) -> int:
    from radfm.utils.cli import UsageError

    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise UsageError(f"--{name}={value!r}: expected a whole number >= {low}")
    return value


def collect_items(*, manifest: str | None, folder: str | None, dicomweb: str | None, qido: Any, prompt: str | None,
                  rules: str | None, output: Path, split: str | None = None, max_instance_mb: int = 256,
                  dicomweb_timeout_s: float = 600.0) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The run's items from its one source (manifest, folder tree or DICOMweb query)."""
    from radfm.batch import archive_items as sources
    from radfm.utils.cli import UsageError

    given = [name for name, value in (("manifest", manifest), ("folder", folder), ("dicomweb", dicomweb)) if value]
    if len(given) != 1:
        raise UsageError("give exactly one input: --manifest FILE, --folder DIR or --dicomweb URL (with --qido)")
    series_rules = sources.load_rules(rules) if rules else None
    if manifest:
        if series_rules:
            raise UsageError("--rules select DICOM series; a manifest brings its own questions (or use --prompt)")
        return sources.manifest_items(manifest, prompt, split=split), {}
    if folder:
        return sources.folder_items(folder, prompt, series_rules)
    return sources.dicomweb_items(dicomweb, qido, output / "dicomweb", prompt, series_rules,
                                  timeout_s=dicomweb_timeout_s, max_instance_mb=max_instance_mb)


@locks_folder("output", "radfm batch")  # a second run on the same OUTPUT fails at once
def run_batch(output: str, *, manifest: str | None = None, folder: str | None = None, dicomweb: str | None = None,
              qido: Any = None, prompt: str | None = None, rules: str | None = None, model: str | None = None,
              engine: str = "transformers", device: str = "cpu", dtype: str | None = None, batch_size: int = 4,
              actors: int = 1, gpus_per_actor: float = 0, cpus_per_actor: float = 1, read_workers: int = 1,
              read_cpus: float = 1, max_new_tokens: int = 64, max_scan_mb: int = 2048, budget_mb: int = 2048,
              retry_failed: bool = False, sr_folder: str | None = None, split: str | None = None,
              address: str | None = None, num_cpus: int | None = None, object_store_mb: int = 200,
              progress: bool = True, limit: int | None = None) -> dict[str, Any]:
    """Run RadFM over an archive with Ray Data; results as Parquet parts in ``output`` (resumable).

    Args:
        output: the output folder: ``results/part-*.parquet``, ``summary.md`` (and ``dicomweb/``, the spool).
        manifest / folder / dicomweb: the one input (a JSONL manifest, a folder tree, a DICOMweb root).
        qido: QIDO-RS study filters for ``dicomweb`` (``ModalitiesInStudy=CT,StudyDate=...``).
        prompt: the question (or ``bank:TASK[:N]``, a prompt-bank entry); a manifest's default is its own.
        rules: a rules file in the node's format (the series rules pick DICOM series and their prompts).
        model: the model folder (default: the demo model).
        engine: ``transformers`` (``vllm``: not wired yet, refused).
        device / dtype: model placement in each actor (``cuda`` with ``gpus_per_actor`` >= 1).
        batch_size: studies per generate call (and per output part).
        actors / gpus_per_actor / cpus_per_actor: the generate actors and what each holds.
        read_workers / read_cpus: read tasks at once and the CPUs each takes.
        max_new_tokens: answer length limit.
        max_scan_mb: largest decoded scan (from its header); budget_mb: the reading budget of the whole run.
        retry_failed: answer again the studies whose rows hold an error.
        sr_folder: write one DICOM SR per answered series here.
        split: with a manifest, only this split.
        address: a Ray cluster (``auto`` or ``ray://HOST:10001``); default: a local Ray for this run.
        num_cpus / object_store_mb: the local Ray's CPUs and object store.
        progress: Ray Data's progress bars.
        limit: only the first LIMIT items (a quick look at a large archive).

    Returns:
        ``{"output", "answered", "failed", "skipped", "summary", "parts", "wall_s", ...counts}``.
    """
    from radfm.answering.identity import identity_of_model_dir
    from radfm.answering.limits import Limits
    from radfm.batch import archive_items as sources
    from radfm.batch import parquet_results as results
    from radfm.model.loading import resolve_model_dir
    from radfm.utils.cli import UsageError
    from radfm.utils.io import atomic_write_text

    started = time.time()
    for name, value, low in (("batch_size", batch_size, 1), ("actors", actors, 1), ("read_workers", read_workers, 1),
                             ("max_new_tokens", max_new_tokens, 1), ("budget_mb", budget_mb, 1),
                             ("max_scan_mb", max_scan_mb, 1), ("object_store_mb", object_store_mb, 80)):
        _whole(name, value, low)
    if limit is not None:
        _whole("limit", limit, 1)
    if gpus_per_actor and device == "cpu":
        raise UsageError("--gpus_per_actor needs --device cuda")
    check_engine(engine)
    output_dir = Path(output)
    model_dir = str(resolve_model_dir(model))
    identity = identity_of_model_dir(model_dir)
    items, counts = collect_items(manifest=manifest, folder=folder, dicomweb=dicomweb, qido=qido, prompt=prompt,
                                  rules=rules, output=output_dir, split=split)
    items = sources.with_keys(items, identity.weights_sha256)
    if limit:
        items = items[:limit]
    done = results.finished_keys(output_dir, retry_failed=retry_failed)
    todo = [item for item in items if item["key"] not in done]
    skipped = len(items) - len(todo)
    run_id = results.new_run_id()
    share = max(1, budget_mb * MiB // read_workers)
    try:
        reading = Limits.from_flags(max_scan_mb=max_scan_mb)
    except ValueError as error:
        raise UsageError(str(error)) from None
    # each read task's share of the one budget: the shares sum to budget_mb across every worker and node
    reading.prepare_budget_bytes, reading.parallel_preprocess = share, 1
    reading.max_scan_bytes = min(reading.max_scan_bytes, share)
    parts: list[str] = []
    if todo:
        parts = _run_pipeline(todo, output_dir, run_id, model_dir=model_dir, identity=identity, engine=engine,
                              device=device, dtype=dtype, batch_size=batch_size, actors=actors,
                              gpus_per_actor=gpus_per_actor, cpus_per_actor=cpus_per_actor,
                              read_workers=read_workers, read_cpus=read_cpus, max_new_tokens=max_new_tokens,
                              reading=reading.to_dict(), budget_bytes=budget_mb * MiB, sr_folder=sr_folder,
                              address=address, num_cpus=num_cpus, object_store_mb=object_store_mb, progress=progress)
    frame = results.read_results(output_dir)
    this_run = frame[frame["run_id"] == run_id] if len(frame) else frame
    wall_s = time.time() - started
    summary = results.summary_markdown(this_run, wall_s=wall_s, skipped=skipped, counts=counts)
    atomic_write_text(output_dir / results.SUMMARY_NAME, summary)
    answered = int(this_run["error"].isna().sum()) if len(this_run) else 0
    return {"output": str(output_dir), "answered": answered, "failed": len(this_run) - answered, "skipped": skipped,
            "summary": summary, "parts": parts, "wall_s": wall_s, "run_id": run_id, **counts}


def _run_pipeline(todo: list[dict[str, Any]], output_dir: Path, run_id: str, *, model_dir: str, identity, engine: str,
                  device: str, dtype: str | None, batch_size: int, actors: int, gpus_per_actor: float,
                  cpus_per_actor: float, read_workers: int, read_cpus: float, max_new_tokens: int,
                  reading: dict[str, Any], budget_bytes: int, sr_folder: str | None, address: str | None,
                  num_cpus: int | None, object_store_mb: int, progress: bool) -> list[str]:
    """Build and run the Ray Data pipeline; each finished block becomes a Parquet part. Returns the parts."""
    import ray
    import ray.data
    from ray.data import ActorPoolStrategy, DataContext, TaskPoolStrategy
    from ray.data._internal.execution.interfaces.execution_options import ExecutionResources

    from radfm.batch import parquet_results as results

    started_ray = ensure_ray(address, num_cpus, object_store_mb)
    try:
        context = DataContext.get_current()
        context.enable_progress_bars = bool(progress)
        # images queued for the actors count against the same budget: past it, no new read task starts
        context.execution_options.resource_limits = ExecutionResources.for_limits(object_store_memory=budget_bytes)
        rows = [{**item, "error": item["error"] or ""} for item in todo]  # "" = no error yet (one Arrow type)
        dataset = ray.data.from_items(rows, override_num_blocks=max(1, -(-len(rows) // batch_size)))
        # ray_remote_args_fn keeps Ray Data from fusing the read tasks into the model actors (it fuses a task
        # stage into the next actor stage when their resources match): reading must not hold the actor's GPU
        dataset = dataset.map(read_row, fn_kwargs={"model_dir": model_dir, "limits": reading},
                              compute=TaskPoolStrategy(size=read_workers),
                              ray_remote_args_fn=functools.partial(dict, num_cpus=read_cpus))
        dataset = dataset.map_batches(
            Generator, batch_size=batch_size, compute=ActorPoolStrategy(size=actors), num_cpus=cpus_per_actor,
            num_gpus=gpus_per_actor or None,
            fn_constructor_kwargs={"model_dir": model_dir, "engine": engine, "device": device, "dtype": dtype,
                                   "max_new_tokens": max_new_tokens, "weights_sha256": identity.weights_sha256,
                                   "threads": max(1, int(cpus_per_actor))})
        if sr_folder:
            Path(sr_folder).mkdir(parents=True, exist_ok=True)
            dataset = dataset.map(write_sr_row, fn_kwargs={"sr_folder": str(Path(sr_folder).resolve())},
                                  num_cpus=read_cpus, compute=TaskPoolStrategy(size=read_workers))
        parts = []
        for number, block in enumerate(dataset.iter_batches(batch_size=None, batch_format="pyarrow")):
            finished = time.time()
            part_rows = []
            for row in block.to_pylist():
                for name in ("error", "answer", "sr_path"):
                    row[name] = row.get(name) or None  # "" inside the pipeline = none
                part_rows.append({**row, "run_id": run_id, "finished_at": finished})
            parts.append(str(results.write_part(output_dir, run_id, number, results.as_table(part_rows))))
        return parts
    finally:
        if started_ray:
            ray.shutdown()
