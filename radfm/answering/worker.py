"""Where a request's work runs: a bounded pool for reading scans, one thread for the model.

* **Reading pool** (``limits.parallel_preprocess`` threads): writing uploads, unzipping,
  grouping DICOM series, reading and preprocessing. A job is admitted by a memory budget:
  it first measures what its scans' headers claim (:func:`radfm.answering.scans.claimed_bytes`),
  then waits until that many bytes of ``limits.prepare_budget_bytes`` are free. A claim larger
  than the whole budget runs alone.
* **Model thread** (one): requests queue for it in FIFO order; at most ``limits.max_queue``
  wait (then 503). Each generation has a deadline (``limits.generation_timeout_s``, 504).
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Callable, Iterator, TypeVar

from radfm.answering.answerer import GenerationTimeout, generation_deadline
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


class Worker:
    """The reading pool, its memory budget and the single model thread with its queue counters."""

    def __init__(self, limits) -> None:
        self.limits = limits
        self.budget = MemoryBudget(limits.prepare_budget_bytes)
        self._pool = ThreadPoolExecutor(max_workers=limits.parallel_preprocess, thread_name_prefix="radfm-read")
        self._model = ThreadPoolExecutor(max_workers=1, thread_name_prefix="radfm-model")
        self._lock = threading.Lock()
        self.waiting = 0  # requests queued for the model (not yet running)
        self.running = 0
        self.served = 0

    def counters(self) -> dict[str, int]:
        return {"waiting": self.waiting, "running": self.running, "served": self.served,
                "reading_bytes": self.budget.in_use}

    async def read(self, job: Callable[..., T], *args: Any) -> T:
        """Run ``job(*args)`` in the reading pool (it admits itself with :attr:`budget`)."""
        return await asyncio.wrap_future(self._pool.submit(job, *args))

    def check_queue(self) -> None:
        """Raise 503 when the model queue is full (a door may call it before it starts a stream)."""
        if self.waiting >= self.limits.max_queue:
            raise RequestError(f"{self.waiting} requests already waiting (limit {self.limits.max_queue}); retry later",
                               503, code="queue_full")

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
            raise RequestError(f"{error}; ask for fewer max_new_tokens or num_beams", 504, code="timeout") from None

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
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._model.shutdown(wait=True, cancel_futures=True)
