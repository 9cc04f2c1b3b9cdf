"""The vLLM engine behind the request path (``--engine vllm``): continuous batching, same doors.

Reading, guards and preprocessing stay in the request path's reading pool (steps 1-3 of
:mod:`radfm.answering.request`); this module only replaces step 4, the one model thread
(:class:`radfm.answering.worker.ModelThread`), with vLLM's ``AsyncLLM`` (the V1 engine). Requests
from different clients join the running batch as they arrive and leave it when they finish.

* **Input**: the prompt's token ids with one id ``V`` per scan, built by the processor's own rule
  (:func:`radfm.model.processing.placeholder_prompt_ids`: the same ids ``RadFMProcessor`` gives the
  transformers engine, before the image blocks are expanded) and
  ``multi_modal_data={"image": [tensor [3, H, W, D], ...]}``, the prepared scans, as the RadFM vLLM
  model (:mod:`radfm.model.vllm_radfm`, registered through the ``vllm.general_plugins`` entry point)
  takes them; its prompt update expands each ``V`` into the scan's 34 embedding positions.
* **Options**: :func:`sampling_params` maps the parsed :class:`GenerationOptions` to vLLM's
  ``SamplingParams`` (greedy unless ``do_sample``; the tokenizer's EOS stops as in transformers;
  ``min_new_tokens`` -> ``min_tokens``, ``ignore_eos``). ``num_beams > 1``
  is refused (422).
* **Behaviour kept from the model thread**: the queue limit (503 ``queue_full``: more than
  ``limits.max_queue`` requests beyond the ``max_num_seqs`` vLLM runs at once), the deadline
  (504 ``timeout``: ``limits.generation_timeout_s`` from the moment the request enters vLLM),
  streaming (:class:`AnswerStream` gets each piece; stop strings end the request), cancellation
  (the awaiting task cancelled, e.g. client gone, or the stream cancelled: the vLLM request is
  aborted), token counts and finish reason, and the one decoding of a whole answer
  (:func:`radfm.model.processing.decode_answers`).
* **One engine per process and model**: :meth:`VLLMAnswerer.shared` keeps one ``AsyncLLM`` per
  model folder and settings (start-up takes tens of seconds on a CPU); every request path built on
  it (the service, ``radfm generate``, the MLflow model, a test session) gets its own queue view.
  ``AsyncLLM`` lives on its own event loop in one thread, so callers on any loop (uvicorn's, or
  ``asyncio.run`` per call in the CLI) can use it.

vLLM is imported only when an engine starts; ``radfm --help`` never loads it.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import itertools
import json
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from radfm.answering.answerer import AnswerStream, GenerationTimeout, check_deadline, deadline_remaining, prepare_scans
from radfm.answering.identity import identity_of_model_dir
from radfm.answering.options import GenerationOptions
from radfm.answering.refusal import RequestError
from radfm.answering.worker import queue_full, timeout_error

DEFAULT_MAX_NUM_SEQS = 32  # sequences vLLM decodes at once; more wait in the request path's queue


def resolved_dtype(dtype: str | None) -> str:
    """Our ``--dtype`` (auto | float32 | bfloat16 | float16) as vLLM's; ``auto`` is float32 on a CPU-only vLLM
    (as the transformers engine), vLLM's own choice on a GPU. One name per dtype: engines are shared by settings.

    Args:
        dtype: the door's dtype flag.

    Returns:
        The dtype name vLLM takes.
    """
    if dtype not in (None, "auto"):
        return str(dtype)
    from vllm.platforms import current_platform

    return "float32" if current_platform.is_cpu() else "auto"


def sampling_params(options: GenerationOptions, eos_token_id: int | None):
    """The vLLM ``SamplingParams`` for parsed request options (the same decoding as ``model.generate``).

    Args:
        options: the request's parsed options (validated against the limits).
        eos_token_id: the tokenizer's EOS; generation stops there unless ``ignore_eos``.

    Returns:
        ``SamplingParams`` streaming deltas (``output_kind=DELTA``).

    Raises:
        ValueError: options vLLM cannot honour (beam search), named.
    """
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    if options.num_beams != 1:
        raise ValueError(f"generation option num_beams={options.num_beams}: the vllm engine decodes one beam "
                         "(use --engine transformers for beam search)")
    ignore_eos = bool(options.ignore_eos)
    sampled = bool(options.do_sample)
    return SamplingParams(
        max_tokens=int(options.max_new_tokens),
        min_tokens=int(options.min_new_tokens or 0),
        ignore_eos=ignore_eos,
        temperature=float(options.temperature) if sampled else 0.0,  # 0: greedy, as do_sample=False
        top_p=float(options.top_p) if sampled else 1.0,
        top_k=int(options.top_k) if sampled and options.top_k > 0 else 0,  # 0: off (transformers: top_k=0 is off)
        repetition_penalty=float(options.repetition_penalty),
        seed=options.seed,
        stop_token_ids=[] if ignore_eos or eos_token_id is None else [int(eos_token_id)],
        skip_special_tokens=True,
        output_kind=RequestOutputKind.DELTA,
    )


class EngineLoop:
    """One ``AsyncLLM`` on its own event loop in one thread; :meth:`submit` runs a coroutine there."""

    _ids = itertools.count()

    def __init__(self, engine_args: dict[str, Any]) -> None:
        self.engine_args = dict(engine_args)
        self.max_num_seqs = int(engine_args.get("max_num_seqs") or DEFAULT_MAX_NUM_SEQS)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="radfm-vllm", daemon=True)
        self.thread.start()
        try:
            self.llm = self.submit(self._start()).result()  # the weights load here (tens of seconds)
        except BaseException:
            self._stop_loop()
            raise
        self.closed = False

    async def _start(self):
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.platforms import current_platform
        from vllm.v1.engine.async_llm import AsyncLLM

        args = dict(self.engine_args)
        if current_platform.is_cpu():
            args.setdefault("enforce_eager", True)  # no graph capture or compile on a CPU: start-up in seconds
        return AsyncLLM.from_engine_args(AsyncEngineArgs(**args))

    def submit(self, coroutine) -> concurrent.futures.Future:
        """Run ``coroutine`` on the engine's loop; cancelling the returned future cancels it (and aborts its request)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    async def generate(self, prompt_ids: list[int], images: list[Any], params, stream: AnswerStream | None,
                       limit: float | None) -> tuple[list[int], str, int]:
        """On the engine loop: ``(new token ids, streamed text, prompt tokens)`` for one request.

        Stops (and aborts the vLLM request) when ``stream`` is cancelled or saw a stop string, and
        raises :class:`GenerationTimeout` once ``limit`` seconds have passed.
        """
        request_id = f"radfm-{os.getpid()}-{next(self._ids)}"
        inputs: dict[str, Any] = {"prompt_token_ids": list(prompt_ids)}
        if images:
            inputs["multi_modal_data"] = {"image": list(images)}
        tokens: list[int] = []
        text = ""
        prompt_tokens = 0
        timeout = asyncio.timeout(limit) if limit is not None else contextlib.nullcontext()
        try:
            async with timeout:
                # aclosing: leaving the loop early (stop string, cancel) closes the generator, which aborts the request
                async with contextlib.aclosing(self.llm.generate(inputs, params, request_id)) as outputs:
                    async for output in outputs:
                        prompt_tokens = len(output.prompt_token_ids or ())
                        completion = output.outputs[0]
                        tokens.extend(completion.token_ids)
                        text += completion.text
                        if stream is not None:
                            stream.prompt_tokens = prompt_tokens
                            stream.completion_tokens = len(tokens)
                            stream.push(completion.text)
                            if stream.should_stop():
                                break
        except TimeoutError:
            raise GenerationTimeout(f"generation stopped: it ran past the time limit of {limit:g} s") from None
        return tokens, text, prompt_tokens

    def _stop_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)

    def close(self) -> None:
        """Shut the engine core down and stop the loop (idempotent)."""
        if getattr(self, "closed", True):
            return
        self.closed = True
        try:
            self.submit(self._quiet()).result(timeout=10)
            self.llm.shutdown()
            self.llm = None  # its __del__ (a second shutdown) runs now, not at interpreter exit
            self.submit(self._cancel_rest()).result(timeout=10)  # no task left pending when the loop stops
        finally:
            self._stop_loop()

    @staticmethod
    async def _cancel_rest() -> None:
        tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _quiet(self) -> None:
        """Stop reading the engine core's outputs first: its shutdown is then no 'engine dead' error."""
        handler = getattr(self.llm, "output_handler", None)
        if handler is not None:
            handler.cancel()


class VLLMEngine:
    """One request path's view of a shared :class:`EngineLoop`: its queue limit, deadline and counters."""

    streams = True

    def __init__(self, answerer: VLLMAnswerer, limits, max_running: int | None = None) -> None:
        """``max_running``: requests counted as running before more count as waiting (default: vLLM's max_num_seqs)."""
        self.answerer = answerer
        self.limits = limits
        self.max_running = max_running
        self._lock = threading.Lock()
        self.in_flight = 0  # requests handed to vLLM and not yet finished
        self.served = 0

    @property
    def capacity(self) -> int:
        return self.max_running or self.answerer.loop.max_num_seqs

    def counters(self) -> dict[str, int]:
        running = min(self.in_flight, self.capacity)
        return {"waiting": self.in_flight - running, "running": running, "served": self.served}

    def check_queue(self) -> None:
        """503 when ``limits.max_queue`` requests already wait beyond what vLLM decodes at once."""
        waiting = self.counters()["waiting"]
        if waiting >= self.limits.max_queue:
            raise queue_full(waiting, self.limits.max_queue)

    async def answer(self, prompt: str, images: list[Any], options: GenerationOptions,
                     stream: AnswerStream | None) -> tuple[str, float, float]:
        """``(text, seconds queued, seconds generating)``; vLLM schedules its own queue, so queued is 0."""
        (text,), queued_s, generate_s = await self._run([prompt], [images], options, [stream])
        return text, queued_s, generate_s

    async def answer_batch(self, prompts: Sequence[str], images: Sequence[list[Any]],
                           options: GenerationOptions) -> tuple[list[str], float, float]:
        """Each prompt as its own vLLM request (they batch continuously); answers in order."""
        return await self._run(list(prompts), list(images), options, [None] * len(prompts))

    async def _run(self, prompts: list[str], images: list[list[Any]], options: GenerationOptions,
                   streams: list[AnswerStream | None]) -> tuple[list[str], float, float]:
        try:
            params = sampling_params(options, self.answerer.eos_token_id)
            self.answerer.check_images(images)
            prompt_ids = [self.answerer.prompt_ids(prompt, len(scans)) for prompt, scans in zip(prompts, images)]
        except ValueError as error:
            raise RequestError(str(error), 422, code="invalid_prompt") from None
        with self._lock:
            self.check_queue()
            self.in_flight += len(prompts)
        started = time.perf_counter()
        futures = [self.answerer.loop.submit(self.answerer.loop.generate(
            ids, self.answerer.as_inputs(scans), params, stream, self.limits.generation_timeout_s))
            for ids, scans, stream in zip(prompt_ids, images, streams)]
        try:
            results = await asyncio.gather(*(asyncio.wrap_future(f) for f in futures))
        except asyncio.CancelledError:
            for future, stream in zip(futures, streams):
                future.cancel()  # the engine loop's task is cancelled: AsyncLLM aborts the request
                if stream is not None:
                    stream.cancel()
            raise
        except GenerationTimeout as error:
            for future in futures:
                future.cancel()
            raise timeout_error(error) from None
        except ValueError as error:  # vLLM's refusal of an input (too long a prompt for the model)
            for future in futures:
                future.cancel()
            raise RequestError(str(error), 422, code="invalid_prompt") from None
        finally:
            with self._lock:
                self.in_flight -= len(prompts)
                self.served += len(prompts)
        texts = []
        for (tokens, _, _), stream in zip(results, streams):
            answer = self.answerer.decode(tokens)  # the one decoding of a whole answer, as the transformers engine
            if stream is not None:  # stop strings cut it; what the pieces held back (a split character) goes out
                answer = stream.finish(answer, options.max_new_tokens)
            texts.append(answer)
        return texts, 0.0, time.perf_counter() - started

    def close(self) -> None:
        """Nothing of its own to stop: the shared engine outlives a request path (see :meth:`VLLMAnswerer.close`)."""


class VLLMAnswerer:
    """A RadFM model folder served by vLLM: preparing scans as :class:`ModelAnswerer` does, answering through vLLM.

    Build one with :meth:`shared` (one engine per process, model and settings). As an answerer it
    has ``prepare``, ``identity``, ``max_images`` and a blocking ``answer`` (so wrappers and tests
    that call it directly work); :meth:`start_engine` gives a request path the batching engine.
    """

    _shared: dict[tuple, VLLMAnswerer] = {}
    _shared_lock = threading.Lock()

    def __init__(self, model_dir: str | Path, preprocess_options: dict[str, Any] | None = None,
                 **engine_args: Any) -> None:
        from radfm.model.processing import RadFMProcessor

        self.model_dir = Path(model_dir)
        self.processor = RadFMProcessor.from_pretrained(str(self.model_dir))
        self.preprocess_options = dict(preprocess_options or {})
        self.identity = identity_of_model_dir(self.model_dir)
        config = json.loads((self.model_dir / "config.json").read_text())
        self.max_images = int(config.get("max_images", 10))
        self.eos_token_id = self.processor.tokenizer.eos_token_id
        args = {"model": str(self.model_dir), "tokenizer": str(self.model_dir), "max_num_seqs": DEFAULT_MAX_NUM_SEQS,
                "limit_mm_per_prompt": {"image": self.max_images}, "disable_log_stats": True, **engine_args}
        self.loop = EngineLoop(args)

    @classmethod
    def shared(cls, model_dir: str | Path, preprocess_options: dict[str, Any] | None = None, *,
               dtype: str | None = "auto", tensor_parallel_size: int = 1, quantization: str | None = None,
               max_num_seqs: int = DEFAULT_MAX_NUM_SEQS, max_model_len: int | None = None) -> VLLMAnswerer:
        """The process's engine for ``model_dir`` with these settings (started on first use, shut down at exit).

        Args:
            model_dir: a saved RadFM model folder (safetensors, config, tokenizer, processor).
            preprocess_options: per-scan options (window, series_uid), as :class:`ModelAnswerer` takes.
            dtype: auto | float32 | bfloat16 | float16.
            tensor_parallel_size: GPUs the language model is split over (the 14B on 2+ GPUs).
            quantization: a vLLM quantization method (e.g. ``fp8``, ``bitsandbytes``), or ``None``.
            max_num_seqs: requests decoded at once (the running batch).
            max_model_len: longest prompt + answer in tokens (default: the model's).

        Returns:
            The shared answerer (its preprocessing options are this call's).
        """
        engine_args: dict[str, Any] = {"dtype": resolved_dtype(dtype), "tensor_parallel_size": int(tensor_parallel_size),
                                       "max_num_seqs": int(max_num_seqs)}
        if quantization:
            engine_args["quantization"] = str(quantization)
        if max_model_len:
            engine_args["max_model_len"] = int(max_model_len)
        key = (str(Path(model_dir).resolve()), tuple(sorted(engine_args.items())))
        with cls._shared_lock:
            answerer = cls._shared.get(key)
            if answerer is None or answerer.loop.closed:
                answerer = cls._shared[key] = cls(model_dir, **engine_args)
                atexit.register(answerer.close)
        if preprocess_options is None or dict(preprocess_options) == answerer.preprocess_options:
            return answerer
        return answerer.with_preprocess_options(preprocess_options)

    def with_preprocess_options(self, preprocess_options: dict[str, Any]) -> VLLMAnswerer:
        """The same engine with other per-scan options (``radfm generate --window``)."""
        view = object.__new__(VLLMAnswerer)
        view.__dict__.update(self.__dict__)
        view.preprocess_options = dict(preprocess_options)
        return view

    def start_engine(self, limits) -> VLLMEngine:
        """A request path's engine on this answerer's shared vLLM engine."""
        return VLLMEngine(self, limits)

    def prepare(self, scan_paths: Sequence[Path]) -> list[Any]:
        """Each scan -> ``[3, H, W, D]`` at the model's grid (the processor's, as the transformers engine)."""
        return prepare_scans(self.processor.image_processor, scan_paths, self.preprocess_options)

    def check_images(self, images: Sequence[list[Any]]) -> None:
        for scans in images:
            if len(scans) > self.max_images:
                raise ValueError(f"{len(scans)} images given; this model takes at most {self.max_images} per prompt")

    def prompt_ids(self, prompt: str, num_images: int) -> list[int]:
        """The prompt's ids with one ``V`` per scan (the processor's rule; vLLM expands each to the scan's block)."""
        from radfm.model.processing import placeholder_prompt_ids

        return placeholder_prompt_ids(self.processor.tokenizer, prompt, num_images,
                                      base_vocab_size=self.processor.base_vocab_size)

    @staticmethod
    def as_inputs(scans: list[Any]) -> list[Any]:
        import torch

        return [torch.as_tensor(image).float() for image in scans]  # MetaTensor -> tensor, as ModelAnswerer

    def decode(self, tokens: list[int]) -> str:
        from radfm.model.processing import decode_answers

        return decode_answers(self.processor.tokenizer, [tokens])[0] if tokens else ""

    def answer(self, prompt: str, images: list[Any], options: GenerationOptions, stream: AnswerStream | None = None) -> str:
        """Blocking: one answer through the shared engine (for callers outside a request path, e.g. behind the
        model thread), under this thread's :func:`~radfm.answering.answerer.generation_deadline` as ModelAnswerer."""
        return self._blocking(lambda engine: engine.answer(prompt, images, options, stream))[0]

    def answer_batch(self, prompts: Sequence[str], images: Sequence[list[Any]], options: GenerationOptions,
                     stream: AnswerStream | None = None) -> list[str]:
        """Blocking: answers for several prompts (batched continuously by vLLM), under this thread's deadline."""
        if stream is not None:
            raise ValueError("a stream follows one prompt")
        return self._blocking(lambda engine: engine.answer_batch(prompts, images, options))[0]

    def _blocking(self, call):
        check_deadline()  # already past: GenerationTimeout, nothing sent to vLLM
        engine = VLLMEngine(self, _NoLimits(deadline_remaining()))
        try:
            return asyncio.run(call(engine))
        except RequestError as error:
            if error.code == "timeout":  # the blocking answerer's contract: GenerationTimeout, as ModelAnswerer
                raise GenerationTimeout(str(error).split("; ask for")[0]) from None
            if error.code == "invalid_prompt":
                raise ValueError(str(error)) from None
            raise

    def close(self) -> None:
        """Shut the shared engine down (at exit, or when the last user is done)."""
        self.loop.close()

    @classmethod
    def close_shared(cls) -> None:
        """Shut every shared engine of this process down (a test session's end, before its log streams close)."""
        with cls._shared_lock:
            answerers = list(cls._shared.values())
            cls._shared.clear()
        for answerer in answerers:
            answerer.close()


class _NoLimits:
    """Limits for the blocking :meth:`VLLMAnswerer.answer`: no queue cap; the calling thread's deadline."""

    max_queue = 1 << 30

    def __init__(self, generation_timeout_s: float | None = None) -> None:
        self.generation_timeout_s = generation_timeout_s
