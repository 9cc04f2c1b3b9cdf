"""The request path: a request from its door to the model and back, owned by one object.

:meth:`RequestPath.run` is the one entry every door calls (``/v1/answer``, the chat page, the
OpenAI routes, the MLflow model, ``radfm generate``, ``radfm evaluate``)::

    AnswerRequest(prompt, scans by path / bytes / file / prepared image, raw options)
      1. options parsed and checked against the limits; prompt, scan count and placeholders checked
      2. one temp folder (Workspace) for the request, removed on success, error and cancellation
      3. in the reading pool, admitted by the memory budget: bytes written, zips unpacked, format
         detected (scans.detect_kind), DICOM series grouped, scans read and preprocessed
      4. the engine (answering/worker.py: the model thread; answering/vllm_engine.py: vLLM): its queue
         (503 when full), generation under the deadline (504), streamed and cancellable
      5. AnswerResult: text, prompt, scans, usage, timings (+ what ``request.after`` adds, e.g. SR)

Every refusal is a :class:`~radfm.answering.refusal.RequestError`; doors only change its shape.
"""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from radfm.answering.answerer import AnswerStream, build_prompt, readable_cause
from radfm.answering.limits import Limits
from radfm.answering.options import GenerationOptions, parse_options
from radfm.answering.refusal import RequestError
from radfm.answering.scans import Scan, claimed_bytes, group_scans, reference_scan, save_scan
from radfm.answering.worker import Worker, start_engine
from radfm.transforms import formats
from radfm.transforms.volumes import split_suffix

FOLDER_PREFIX = "radfm-request-"  # + pid + "-" + random: the service recognises its own folders


@dataclass
class ScanInput:
    """One scan as a door received it: exactly one of ``path``, ``data`` or ``image``.

    ``path``: a file, DICOM folder or zip by reference (CLI, MLflow, evaluate); ``data``: bytes
    or a readable binary file as sent (uploads); ``image``: an already prepared model input
    (the chat page's kept scans, with its ``scan``). ``field`` names the request field it came
    from, for error messages (``files``, ``messages[0].content[1]``).
    """

    name: str
    path: Path | None = None
    data: bytes | IO[bytes] | None = None
    image: Any = None
    scan: Scan | None = None
    field: str | None = None


@dataclass
class AnswerRequest:
    """What a door asks for. ``prompt=None`` only reads and prepares the scans (chat page upload)."""

    prompt: str | None
    scans: list[ScanInput]
    options: Mapping[str, Any] | GenerationOptions | None = None
    # True: each input is one scan (a file, folder or zip of one series); False: the files are grouped
    # into scans (DICOM slices uploaded one file each, /v1/answer and the chat page)
    one_scan_per_input: bool = True
    stop: Sequence[str] = ()
    after: Callable[[AnswerResult], dict] | None = None  # runs while the scans are still on disk (SR)
    keep_files: bool = False  # hand the temp folder to the caller (the chat page keeps uploads)


@dataclass
class AnswerResult:
    text: str | None
    prompt: str | None
    scans: list[Scan]
    images: list[Any]
    options: GenerationOptions
    timings: dict[str, float]
    usage: dict[str, int] | None = None
    finish_reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    workspace: Path | None = None  # only with keep_files: the caller removes it (Workspace.remove)

    def record(self, identity) -> dict[str, Any]:
        """The answer record ``/v1/answer`` returns and ``radfm generate --json`` prints."""
        body = {"answer": self.text, "prompt": self.prompt, "scans": [scan.describe() for scan in self.scans],
                "image_shapes": [[int(s) for s in getattr(image, "shape", ())] for image in self.images],
                "model": identity.to_dict(), "generation": self.options.to_dict(), "verification": "UNVERIFIED",
                "timing_s": {k: round(v, 4) for k, v in self.timings.items()}}
        if self.usage is not None:
            body["usage"] = self.usage
        body.update(self.extra)
        return body


class Workspace:
    """One request's temp folder, ``<tmp>/radfm-request-<pid>-<random>``; removed by :meth:`remove`."""

    def __init__(self, root: Path, live: set[Path], lock: threading.Lock) -> None:
        self._live, self._lock = live, lock
        try:
            self.path = Path(tempfile.mkdtemp(prefix=f"{FOLDER_PREFIX}{os.getpid()}-", dir=root))
        except OSError as error:
            raise disk_error(error) from None
        with lock:
            live.add(self.path)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        with self._lock:
            self._live.discard(self.path)


def disk_error(error: OSError) -> RequestError:
    """A full or failing temp disk as a 507 that names nothing of the host."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return RequestError("the server has no space left for this upload; retry later or send a smaller one", 507,
                            code="insufficient_storage")
    return RequestError(f"the server could not store the upload ({errno.errorcode.get(error.errno, 'I/O error')})", 507,
                        code="storage_error")


def remove_stale_folders(root: Path) -> int:
    """Remove request folders left by an earlier process of ours that no longer runs; returns how many."""
    removed = 0
    for folder in Path(root).glob(f"{FOLDER_PREFIX}*"):
        pid = folder.name[len(FOLDER_PREFIX):].split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid() or not folder.is_dir() or folder.is_symlink():
            continue
        try:
            os.kill(int(pid), 0)
            continue  # that process still runs: its folders are its own
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed += 1
    return removed


def _caused_by(error: BaseException | None, kind: type) -> bool:
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, kind):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


def _named(error: RequestError, item: ScanInput) -> RequestError:
    """The error with the request field of the input it is about (``messages[0].content[1]: ...``)."""
    if item.field is not None and error.field is None:
        error.field = item.field
        error.args = (f"{item.field}: {error}",)
    return error


def _as_sent(message: str, scans: list[Scan], workdir: Path) -> str:
    """A reader's message naming each uploaded file as sent (``x.nii.gz``), not as saved (``<workdir>/0000_x.nii.gz``)."""
    for scan in scans:
        file = Path(split_suffix(str(scan.path))[0])
        if scan.kind != "dicom" and len(scan.names) == 1 and file.is_relative_to(workdir):
            sent = split_suffix(scan.names[0])[0]
            message = message.replace(str(file), sent).replace(file.name, Path(sent).name)  # the path, then a hint's name
    return message


class Batch:
    """Requests whose generations run as one ``generate`` call: each :meth:`RequestPath.run` with
    this batch reads its scans alone, then waits until every member is ready (or has failed)."""

    def __init__(self, size: int) -> None:
        self.size = int(size)
        self._waiting: list[tuple[str, list, GenerationOptions, asyncio.Future]] = []
        self._left = 0
        self._started = False

    async def generate(self, path: RequestPath, prompt: str, images: list, options: GenerationOptions):
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((prompt, images, options, future))
        self._maybe_start(path)
        return await future

    def leave(self, path: RequestPath) -> None:
        """A member is done (answered or failed): one that failed before generating holds nobody up."""
        self._left += 1
        self._maybe_start(path)

    def _maybe_start(self, path: RequestPath) -> None:
        if self._started or not self._waiting or len(self._waiting) + self._left < self.size:
            return
        self._started = True
        members = list(self._waiting)
        asyncio.ensure_future(self._generate(path, members))

    async def _generate(self, path: RequestPath, members: list) -> None:
        prompts, images = [m[0] for m in members], [m[1] for m in members]
        options = members[0][2]
        try:
            if any(m[2] != options for m in members):
                raise RuntimeError("a batch needs the same options")
            texts, queued_s, generate_s = await path.engine.answer_batch(prompts, images, options)
        except BaseException as error:  # every member gets the failure (the caller retries them alone)
            for *_, future in members:
                if not future.done():
                    future.set_exception(error if isinstance(error, Exception) else RuntimeError(str(error)))
            return
        for (*_, future), text in zip(members, texts):
            if not future.done():
                future.set_result((text, queued_s, generate_s))


class RequestPath:
    """The answerer, the limits, the reading pool and the engine; :meth:`run` takes a request from start to end.

    The engine (:func:`radfm.answering.worker.start_engine`) is the answerer's own (vLLM's continuous
    batching) or the one model thread (transformers); nothing else here depends on which.
    """

    def __init__(self, answerer, limits: Limits | None = None, temp_root: str | Path | None = None) -> None:
        self.answerer = answerer
        self.limits = (limits or Limits()).check()
        if self.limits.max_images is None:
            self.limits.max_images = int(answerer.max_images)
        self.temp_root = Path(temp_root or tempfile.gettempdir())
        self.worker = Worker(self.limits)
        self.engine = start_engine(answerer, self.limits)
        self._live: set[Path] = set()
        self._lock = threading.Lock()
        self.stale_removed = remove_stale_folders(self.temp_root)

    # ---- the entry --------------------------------------------------------------------------
    async def run(self, request: AnswerRequest, stream: AnswerStream | None = None,
                  queued: asyncio.Event | None = None, batch: Batch | None = None) -> AnswerResult:
        """Answer ``request`` (see the module docstring); raises :class:`RequestError`.

        ``stream`` receives the text while it is generated; ``queued`` is set once the scans are
        ready and the request waits for the model (a streaming door starts its response then).
        ``batch``: requests run together with the same :class:`Batch` share one ``generate`` call
        (left padded, as ``radfm evaluate`` batches cases); each is still read and checked alone.
        """
        started = time.perf_counter()
        options = parse_options(request.options, self.limits)
        self._check_before_reading(request)
        workspace = Workspace(self.temp_root, self._live, self._lock)
        keep = False
        try:
            scans, images, wait_s, prepare_s = await self.worker.read(self._prepare, request, workspace.path)
            timings = {"preprocess_wait": wait_s, "preprocess": prepare_s}
            if request.prompt is None:
                result = AnswerResult(None, None, scans, images, options, timings,
                                      workspace=workspace.path if request.keep_files else None)
                if request.after is not None:
                    result.extra = await self.worker.read(request.after, result)
                timings["total"] = time.perf_counter() - started
                keep = request.keep_files
                return result
            try:
                prompt = build_prompt(request.prompt, len(images))
            except ValueError as error:
                names = [scan.names[0] if scan.names else "?" for scan in scans]
                raise RequestError(f"{error} (scans: {names}; a DICOM series counts once)", 422, field="prompt",
                                   code="invalid_prompt") from None
            if stream is None and self.engine.streams:
                stream = AnswerStream(stop=request.stop)  # counts the tokens (usage)
            if queued is not None:
                self.engine.check_queue()  # a streaming door still answers a full queue with 503
                queued.set()
            if batch is not None:
                text, queued_s, generate_s = await batch.generate(self, prompt, images, options)
            else:  # cancelled (client gone): the engine stops after the current token
                text, queued_s, generate_s = await self.engine.answer(prompt, images, options, stream)
            timings.update(queued=queued_s, generate=generate_s, total=time.perf_counter() - started)
            result = AnswerResult(text, prompt, scans, images, options, timings)
            if stream is not None:
                result.usage = {"prompt_tokens": stream.prompt_tokens, "completion_tokens": stream.completion_tokens,
                                "total_tokens": stream.prompt_tokens + stream.completion_tokens}
                result.finish_reason = "cancelled" if stream.cancelled else stream.finish_reason
            if request.after is not None:
                result.extra = await self.worker.read(request.after, result)
            return result
        except RequestError as error:
            error.args = (str(error).replace(f"{workspace.path}/", "").replace(str(workspace.path), "upload"),)
            raise
        except OSError as error:
            raise disk_error(error) from None
        finally:
            if batch is not None:
                batch.leave(self)  # a request that failed before generating no longer holds the others up
            if not keep:
                workspace.remove()

    def run_blocking(self, request: AnswerRequest) -> AnswerResult:
        """:meth:`run` for a caller without an event loop (CLI, MLflow, evaluate)."""
        return asyncio.run(self.run(request))

    async def stream(self, request: AnswerRequest) -> AsyncIterator[tuple[str, Any]]:
        """:meth:`run` as events: ``("queued", None)`` once it waits for the model, ``("text", piece)``
        while the model writes, then ``("done", AnswerResult)``.

        A door awaits the first event before it starts its response, so refusals (4xx, 503)
        still get their status. Closing the iterator early (client gone, stop button) cancels
        the generation after the current token and removes the request's folder.
        """
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[str] = asyncio.Queue()
        stream = AnswerStream(on_text=lambda piece: loop.call_soon_threadsafe(pieces.put_nowait, piece),
                              stop=request.stop)
        queued = asyncio.Event()
        streaming = self.engine.streams
        work = asyncio.ensure_future(self.run(request, stream=stream if streaming else None, queued=queued))
        try:
            waiter = asyncio.ensure_future(queued.wait())
            await asyncio.wait({waiter, work}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            if work.done() and work.exception() is not None:
                raise work.exception()
            yield "queued", None
            while True:
                getter = asyncio.ensure_future(pieces.get())
                done, _ = await asyncio.wait({getter, work}, return_when=asyncio.FIRST_COMPLETED)
                if getter in done:
                    yield "text", getter.result()
                    continue
                getter.cancel()
                while not pieces.empty():
                    yield "text", pieces.get_nowait()
                break
            result = work.result()
            if not streaming:  # an answerer without streaming: the whole answer arrives as one piece
                whole = AnswerStream(stop=request.stop)
                whole.push(result.text)
                result.text = whole.finish(result.text, result.options.max_new_tokens)
                result.finish_reason = whole.finish_reason
                if result.text:
                    yield "text", result.text
            yield "done", result
        finally:
            if not work.done():
                stream.cancel()
                work.cancel()

    # ---- the steps ----------------------------------------------------------------------------
    def _check_before_reading(self, request: AnswerRequest) -> None:
        """What can be refused before any file is written or read."""
        limits = self.limits
        if request.prompt is not None:
            if not isinstance(request.prompt, str) or not request.prompt.strip():
                raise RequestError("the prompt is empty: ask a question (optionally with <image> placeholders)", 422,
                                   field="prompt", code="missing_prompt")
            if len(request.prompt) > limits.max_prompt_chars:
                raise RequestError(f"prompt of {len(request.prompt)} characters exceeds the limit of "
                                   f"{limits.max_prompt_chars}", 413, field="prompt", code="prompt_too_long")
        if not request.scans and request.prompt is None:
            raise RequestError("no scans sent", 400, field="files", code="missing_scans")
        if request.one_scan_per_input:
            if len(request.scans) > limits.max_images:
                raise RequestError(f"{len(request.scans)} scans sent; the limit is {limits.max_images} per prompt",
                                   413, field="files", code="too_many_images")
            if request.prompt is not None:
                try:
                    build_prompt(request.prompt, len(request.scans))
                except ValueError as error:
                    raise RequestError(str(error), 422, field="prompt", code="invalid_prompt") from None
        elif len(request.scans) > limits.max_files:
            raise RequestError(f"{len(request.scans)} files sent; the limit is {limits.max_files}", 413, field="files",
                               code="too_many_files")

    def _materialise(self, request: AnswerRequest, workdir: Path) -> list[Any]:
        """Inputs on disk (bytes written, zips unpacked; streamed, little memory), in order.

        Each entry is a :class:`Scan` (by reference), a prepared :class:`ScanInput`, or
        ``(folder, saved files)`` still to be grouped into scans once admitted.
        """
        limits = self.limits
        entries: list[Any] = []
        count = 0
        for index, item in enumerate(request.scans):
            if item.image is not None:
                entries.append(item)
                continue
            try:
                if item.path is not None:
                    scan = reference_scan(Path(item.path), item.name)
                    if scan is not None:
                        entries.append(scan)
                        continue
                folder = workdir / f"input{index:03d}" if request.one_scan_per_input else workdir
                folder.mkdir(exist_ok=True)
                source = item.data if item.path is None else Path(item.path).open("rb")
                try:
                    files = save_scan(item.name, source, folder, first_index=count, max_files=limits.max_files - count,
                                      max_bytes=limits.max_request_bytes)
                finally:
                    if item.path is not None:
                        source.close()
            except RequestError as error:
                raise _named(error, item) from None
            count += len(files)
            if count > limits.max_files:
                raise RequestError(f"{count} files sent; the limit is {limits.max_files}", 413, code="too_many_files")
            if request.one_scan_per_input or not entries or not isinstance(entries[-1], tuple):
                entries.append((folder, files, item))
            else:
                entries[-1][1].extend(files)  # uploaded files are grouped together (slices of one series)
        return entries

    def _group(self, entries: list[Any], one_scan_per_input: bool) -> list[Any]:
        """Saved files -> scans (DICOM series grouped, deflated files bounded); run inside the budget."""
        grouped: list[Any] = []
        for entry in entries:
            if not isinstance(entry, tuple):
                grouped.append(entry)
                continue
            folder, files, item = entry
            try:
                scans = group_scans(files, folder, max_scan_bytes=self.limits.max_scan_bytes)
                if one_scan_per_input and len(scans) != 1:
                    raise RequestError(f"{item.name} holds {len(scans)} scans (series or files); send one scan here",
                                       422, code="invalid_scan")
            except RequestError as error:
                raise _named(error, item if one_scan_per_input else ScanInput(item.name)) from None
            grouped.extend(scans)
        return grouped

    def _claim(self, entries: list[Any]) -> int:
        """Bytes the entries' headers claim (files not yet grouped counted one by one)."""
        limit = self.limits.max_scan_bytes
        total = 0
        for entry in entries:
            if isinstance(entry, Scan):
                total += claimed_bytes(entry.path, entry.kind, limit)
            elif isinstance(entry, tuple):
                total += sum(claimed_bytes(path, kind, limit) for _, path, kind in entry[1])
        return total

    def _prepare(self, request: AnswerRequest, workdir: Path) -> tuple[list[Scan], list[Any], float, float]:
        """In the reading pool: ``(scans, images, seconds waiting for the budget, seconds reading)``.

        Files are written first (streamed); grouping (which parses DICOM headers, and inflates a
        deflated file whole) and reading run only once the headers' claim is admitted. Each header
        is parsed once: the claim inspects each file (``formats.inspected_scans``), and grouping and
        the readers behind the answerer reuse that parse.
        """
        with formats.inspected_scans():  # each header parsed once: the claim's parse is what the reader reads on from
            return self._prepare_inspected(request, workdir)

    def _prepare_inspected(self, request: AnswerRequest, workdir: Path) -> tuple[list[Scan], list[Any], float, float]:
        from radfm.transforms import scan_size_limit
        from radfm.transforms.errors import ScanTooLargeError

        entries = self._materialise(request, workdir)
        with self.worker.budget.hold(self._claim(entries)) as waited:
            started = time.perf_counter()
            entries = self._group(entries, request.one_scan_per_input)
            if len(entries) > self.limits.max_images:
                raise RequestError(f"{len(entries)} scans sent; the limit is {self.limits.max_images} per prompt "
                                   "(a DICOM series counts once)", 413, field="files", code="too_many_images")
            to_read = [entry for entry in entries if isinstance(entry, Scan)]
            try:
                with scan_size_limit(self.limits.max_scan_bytes):  # every reader behind the answerer gets it
                    read = iter(self.answerer.prepare([scan.path for scan in to_read]) if to_read else [])
            except ValueError as error:  # ScanReadError and friends name the file
                too_large = _caused_by(error, ScanTooLargeError)
                message = _as_sent(str(readable_cause(error) or error), to_read, workdir)
                raise RequestError(f"cannot read scan: {message}", 413 if too_large else 422,
                                   code="scan_too_large" if too_large else "invalid_scan") from None
            seconds = time.perf_counter() - started
        scans, images = [], []
        for entry in entries:
            if isinstance(entry, Scan):
                scans.append(entry)
                images.append(next(read))
            else:
                scans.append(entry.scan)
                images.append(entry.image)
        return scans, images, waited, seconds

    # ---- lifetime ----------------------------------------------------------------------------
    def live_folders(self) -> list[Path]:
        with self._lock:
            return sorted(self._live)

    def counters(self) -> dict[str, int]:
        """The engine's queue (``waiting``, ``running``, ``served``) and the bytes being read (``/health``)."""
        return {**self.engine.counters(), "reading_bytes": self.worker.budget.in_use}

    def release(self, folder: Path) -> None:
        """Remove a folder handed out with ``keep_files`` (the chat page drops a kept upload)."""
        shutil.rmtree(folder, ignore_errors=True)
        with self._lock:
            self._live.discard(Path(folder))

    def close(self) -> None:
        """Stop the workers and remove every folder this path still holds (shutdown, SIGTERM)."""
        self.worker.close()
        self.engine.close()
        for folder in self.live_folders():
            shutil.rmtree(folder, ignore_errors=True)
        with self._lock:
            self._live.clear()
