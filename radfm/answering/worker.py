"""Where a request's work runs: a bounded pool for reading scans, and the generation engine.

* **Reading pool** (``limits.parallel_preprocess`` threads): writing uploads, unzipping,
  grouping DICOM series, reading and preprocessing. A job is admitted by a memory budget:
  it first measures what its scans' headers claim (:func:`radfm.answering.scans.claimed_bytes`),
  then waits until that many bytes of ``limits.prepare_budget_bytes`` are free. A claim larger
  than the whole budget runs alone.
* **Engine** (:class:`Engine`): where prepared scans and a prompt become text. The default,
  :class:`ModelThread` (``--engine transformers``), is one thread for the model: requests queue
  for it in FIFO order; at most ``limits.max_queue`` wait (then 503). Each generation has a
  deadline (``limits.generation_timeout_s``, 504). The vLLM engine
  (:class:`radfm.answering.vllm_engine.VLLMEngine`, ``--engine vllm``) keeps the same interface,
  queue limit, deadline, stream and cancellation, and batches requests continuously.
  :func:`start_engine` is the one place that picks it (the answerer's own, else the thread).
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar

from radfm.answering.answerer import AnswerStream, GenerationTimeout, generation_deadline
from radfm.answering.options import GenerationOptions
from radfm.answering.refusal import RequestError

T = TypeVar("T")


class MemoryBudget:
    """Bytes of image data being read at once, at most ``capacity`` (one oversized claim may run alone)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = int(capacity)
        self.in_use = 0
        self.peak = 0
        self._changed = threading.Condition()

    @contextmanager
    def hold(self, claim: int) -> Iterator[float]:
        """Wait for ``claim`` bytes (capped at the capacity); yields the seconds waited."""
        claim = max(0, min(int(claim), self.capacity))
        started = time.perf_counter()
        with self._changed:
            self._changed.wait_for(lambda: self.in_use == 0 or self.in_use + claim <= self.capacity)
            self.in_use += claim
            self.peak = max(self.peak, self.in_use)
        try:
            yield time.perf_counter() - started
        finally:
            with self._changed:
                self.in_use -= claim
                self._changed.notify_all()


class Engine(Protocol):
    """Generation behind the request path: the model thread here, vLLM in :mod:`radfm.answering.vllm_engine`.

    Every method raises :class:`RequestError` the same way on every engine: 503 ``queue_full``,
    504 ``timeout``, 422 ``invalid_prompt`` (the answerer's ``ValueError``). Cancelling the
    awaiting task (client gone) stops the generation after its current token.
    """

    streams: bool  # whether answer() hands out pieces and counts tokens through its stream

    def check_queue(self) -> None: ...

    def counters(self) -> dict[str, int]: ...

    async def answer(self, prompt: str, images: list[Any], options: GenerationOptions,
                     stream: AnswerStream | None) -> tuple[str, float, float]: ...

    async def answer_batch(self, prompts: Sequence[str], images: Sequence[list[Any]],
                           options: GenerationOptions) -> tuple[list[str], float, float]: ...

    def close(self) -> None: ...


def start_engine(answerer, limits) -> Engine:
    """The engine for ``answerer``: its own (``answerer.start_engine(limits)``, e.g. vLLM's), else :class:`ModelThread`.

    Args:
        answerer: what prepares scans (``prepare``) and answers; a test double with ``answer`` only is fine.
        limits: the request path's :class:`radfm.answering.limits.Limits` (queue length, deadline).

    Returns:
        An :class:`Engine` for one request path (closed with it).
    """
    starter = getattr(answerer, "start_engine", None)
    return starter(limits) if callable(starter) else ModelThread(answerer, limits)


def supports_streaming(answerer) -> bool:
    """Whether ``answerer.answer`` takes ``stream=`` (the model answerer does; simple test doubles may not)."""
    answer = getattr(answerer, "answer", None)  # a reading-only answerer (radfm batch's read tasks) has none
    if answer is None:
        return False
    try:
        return "stream" in inspect.signature(answer).parameters
    except (TypeError, ValueError):
        return False


def timeout_error(error: BaseException) -> RequestError:
    """A generation past its deadline as the 504 every engine answers."""
    return RequestError(f"{error}; ask for fewer max_new_tokens or num_beams", 504, code="timeout")


class Worker:
    """The reading pool and its memory budget."""

    def __init__(self, limits) -> None:
        self.limits = limits
        self.budget = MemoryBudget(limits.prepare_budget_bytes)
        self._pool = ThreadPoolExecutor(max_workers=limits.parallel_preprocess, thread_name_prefix="radfm-read")

    async def read(self, job: Callable[..., T], *args: Any) -> T:
        """Run ``job(*args)`` in the reading pool (it admits itself with :attr:`budget`)."""
        return await asyncio.wrap_future(self._pool.submit(job, *args))

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class ModelThread:
    """The transformers engine: the answerer's ``answer`` on one model thread, FIFO, with its queue counters."""

    def __init__(self, answerer, limits) -> None:
        self.answerer = answerer
        self.limits = limits
        self.streams = supports_streaming(answerer)  # whether answer() takes stream= (test doubles may not)
        self._model = ThreadPoolExecutor(max_workers=1, thread_name_prefix="radfm-model")
        self._lock = threading.Lock()
        self.waiting = 0  # requests queued for the model (not yet running)
        self.running = 0
        self.served = 0

    def counters(self) -> dict[str, int]:
        return {"waiting": self.waiting, "running": self.running, "served": self.served}

    def check_queue(self) -> None:
        """Raise 503 when the model queue is full (a door may call it before it starts a stream)."""
        if self.waiting >= self.limits.max_queue:
            raise queue_full(self.waiting, self.limits.max_queue)

    async def answer(self, prompt: str, images: list[Any], options: GenerationOptions,
                     stream: AnswerStream | None) -> tuple[str, float, float]:
        """``(text, seconds queued, seconds generating)``; ``stream`` gets the pieces (when the answerer streams)."""
        def call() -> str:
            try:
                if stream is not None and self.streams:
                    return self.answerer.answer(prompt, images, options, stream=stream)
                return self.answerer.answer(prompt, images, options)
            except ValueError as error:
                raise RequestError(str(error), 422, code="invalid_prompt") from None

        try:
            return await self.generate(call)
        except asyncio.CancelledError:
            if stream is not None:
                stream.cancel()  # the model stops after its current token; the thread is free again
            raise

    async def answer_batch(self, prompts: Sequence[str], images: Sequence[list[Any]],
                           options: GenerationOptions) -> tuple[list[str], float, float]:
        """Answers for several prompts in one ``answer_batch`` call of the answerer (left padded)."""
        if not hasattr(self.answerer, "answer_batch"):
            raise RuntimeError("a batch needs an answerer with answer_batch")
        return await self.generate(lambda: self.answerer.answer_batch(prompts, images, options))

    async def generate(self, call: Callable[[], T]) -> tuple[T, float, float]:
        """``(call(), seconds queued, seconds generating)`` on the model thread, under the deadline."""
        with self._lock:
            self.check_queue()
            self.waiting += 1
        queued_at = time.perf_counter()
        future = self._model.submit(self._run, call, queued_at)
        try:
            return await asyncio.wrap_future(future)
        except GenerationTimeout as error:
            raise timeout_error(error) from None
    def _run(self, call: Callable[[], T], queued_at: float) -> tuple[T, float, float]:
        with self._lock:
            self.waiting -= 1
            self.running += 1
        started = time.perf_counter()
        limit = self.limits.generation_timeout_s
        try:
            with generation_deadline(limit):
                result = call()
            if limit is not None and time.perf_counter() - started > limit:  # an answerer that ignored the deadline
                raise GenerationTimeout(f"generation took longer than the time limit of {limit:g} s")
        finally:
            with self._lock:
                self.running -= 1
                self.served += 1
        return result, started - queued_at, time.perf_counter() - started

    def close(self) -> None:
        self._model.shutdown(wait=True, cancel_futures=True)


def queue_full(waiting: int, limit: int) -> RequestError:
    """The 503 every engine answers when ``limit`` requests already wait."""
    return RequestError(f"{waiting} requests already waiting (limit {limit}); retry later", 503, code="queue_full")
