"""The "answerer": scans + prompt -> text, the model behind the request path (:mod:`radfm.answering.request`).

Split in two steps so that a service can read and preprocess uploads in parallel while the
model itself runs one request at a time:

* ``prepare(scan_paths) -> images``  (CPU work, thread safe, raises ``ScanReadError``)
* ``answer(prompt, images, options) -> text``  (model work, callers serialise it)

Anything with these two methods, an ``identity`` and ``max_images`` can be plugged into the
service (tests use a tiny random model).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from radfm.answering.identity import ModelIdentity, identity_of_model, identity_of_model_dir
from radfm.answering.options import GenerationOptions


class GenerationTimeout(RuntimeError):
    """Generation ran past its time limit and was stopped (the partial answer is discarded)."""


_deadline = threading.local()


@contextmanager
def generation_deadline(seconds: float | None) -> Iterator[None]:
    """Within the block, generation on this thread stops once ``seconds`` have passed (``None``: no limit).

    :class:`ModelAnswerer` stops decoding at the deadline (a stopping criterion checked every
    token) and raises :class:`GenerationTimeout`; other answerers poll :func:`check_deadline`.
    """
    previous = getattr(_deadline, "value", None)
    _deadline.value = None if seconds is None else (time.monotonic() + float(seconds), float(seconds))
    try:
        yield
    finally:
        _deadline.value = previous


def deadline_passed() -> bool:
    """Whether this thread's generation deadline (if any) has passed."""
    value = getattr(_deadline, "value", None)
    return value is not None and time.monotonic() >= value[0]


def deadline_remaining() -> float | None:
    """Seconds left of this thread's generation deadline (``None``: no deadline; may be <= 0)."""
    value = getattr(_deadline, "value", None)
    return None if value is None else value[0] - time.monotonic()


def check_deadline() -> None:
    """Raise :class:`GenerationTimeout` when this thread's generation deadline has passed."""
    if deadline_passed():
        raise GenerationTimeout(f"generation stopped: it ran past the time limit of {_deadline.value[1]:g} s")


def _deadline_stopping_criteria():
    """A transformers ``StoppingCriteriaList`` that ends generation at this thread's deadline, or ``None``."""
    if getattr(_deadline, "value", None) is None:
        return None
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class _Deadline(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), deadline_passed(), dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([_Deadline()])


class AnswerStream:
    """Receives an answer while it is generated, applies ``stop`` strings, and can cancel it.

    Pass one as ``stream=`` to :meth:`ModelAnswerer.answer`: ``on_text`` (called from the
    model's thread) gets each new piece of text as soon as it is decoded, never text at or
    after a stop string (a possible stop string's beginning is held back until it is ruled
    out). ``cancel()`` (any thread) ends generation after the current token. After the call,
    ``prompt_tokens``/``completion_tokens`` count the model's tokens and ``finish_reason`` is
    ``"stop"`` (end of text, stop string, cancelled) or ``"length"`` (``max_new_tokens`` hit).
    """

    def __init__(self, on_text: Callable[[str], None] | None = None, stop: Sequence[str] = ()) -> None:
        self.on_text = on_text
        self.stop_strings = [s for s in stop if s]
        self._cancelled = threading.Event()
        self.text = ""  # everything decoded so far
        self.sent = ""  # what was handed to ``on_text`` (a prefix of the answer)
        self.stopped_by_string = False
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.finish_reason: str | None = None

    def cancel(self) -> None:
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def should_stop(self) -> bool:
        return self.cancelled or self.stopped_by_string

    def _first_stop(self, text: str) -> int | None:
        hits = [i for i in (text.find(s) for s in self.stop_strings) if i >= 0]
        return min(hits) if hits else None

    def push(self, piece: str) -> None:
        """New decoded text from the model (called by the streamer)."""
        if self.stopped_by_string or not piece:
            return
        self.text += piece
        cut = self._first_stop(self.text)
        if cut is not None:
            self.stopped_by_string = True
            self._send(self.text[:cut])
            return
        hold = 0  # the longest tail of the text that could begin a stop string
        for stop in self.stop_strings:
            for size in range(min(len(stop) - 1, len(self.text)), 0, -1):
                if self.text.endswith(stop[:size]):
                    hold = max(hold, size)
                    break
        self._send(self.text[: len(self.text) - hold])

    def _send(self, ready: str) -> None:
        """Hand out the part of ``ready`` (the answer so far, left-stripped like the final answer) not yet sent."""
        ready = ready.lstrip()
        if len(ready) > len(self.sent) and ready.startswith(self.sent):
            piece, self.sent = ready[len(self.sent):], ready
            if self.on_text is not None:
                self.on_text(piece)

    def finish(self, final_text: str, max_new_tokens: int) -> str:
        """The answer with stop strings applied; hands out whatever was held back."""
        cut = self._first_stop(final_text)
        final = final_text if cut is None else final_text[:cut].rstrip()
        self._send(final)
        if cut is not None or self.stopped_by_string or self.cancelled:
            self.finish_reason = "stop"
        else:
            self.finish_reason = "length" if self.completion_tokens >= max_new_tokens else "stop"
        return final


def build_prompt(prompt: str, num_images: int) -> str:
    """The prompt with one ``<image>`` per scan (the processor's rule,
    :func:`radfm.model.processing.with_placeholders`), checked before any scan is read.

    Raises ``ValueError`` when the prompt is empty, or has placeholders but not one per scan.
    """
    from radfm.model.processing import with_placeholders

    if not prompt.strip():
        raise ValueError("the prompt is empty")
    return with_placeholders(prompt, num_images)


def readable_cause(error: BaseException) -> str | None:
    """The first ``ValueError`` message in an exception chain (MONAI wraps ``ScanReadError`` in a RuntimeError)."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, ValueError):
            return str(error)
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def prepare_scans(image_processor, scan_paths: Sequence[Path], preprocess_options: dict[str, Any]) -> list[Any]:
    """Each scan (file or DICOM folder) -> ``[3, H, W, D]`` float tensor at the processor's grid (every engine's reading).

    Args:
        image_processor: the model folder's :class:`radfm.model.processing.RadFMImageProcessor`.
        scan_paths: the scans, in prompt order.
        preprocess_options: per-scan options (window, series_uid).

    Returns:
        The prepared images.

    Raises:
        ValueError: the first readable cause of a reader's failure (it names the file).
    """
    images = []
    for path in scan_paths:
        try:
            images.append(image_processor.process_one(str(path), **preprocess_options))
        except Exception as error:
            reason = readable_cause(error)
            if reason is None:
                raise
            raise ValueError(reason) from error
    return images


class ModelAnswerer:
    """A RadFM model and its processor behind the answerer interface."""

    def __init__(
        self,
        model,
        processor,
        identity: ModelIdentity | None = None,
        preprocess_options: dict[str, Any] | None = None,
        generate_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.model = model.eval()
        self.processor = processor  # a RadFMProcessor: scans at the model's grid, prompt rules, decoding
        self.generate_kwargs = dict(generate_kwargs or {})  # e.g. synced_gpus=False under torchrun
        self.preprocess_options = dict(preprocess_options or {})  # per-scan options: window, series_uid
        self.identity = identity or identity_of_model(model)
        self.max_images = int(getattr(getattr(model, "config", None), "max_images", 10))

    @classmethod
    def from_model_dir(cls, model_dir: str | Path, preprocess_options: dict[str, Any] | None = None,
                       **load_options: Any) -> ModelAnswerer:
        """Load a saved model folder with :func:`radfm.load` (``load_options``: its device/dtype/placement)."""
        from radfm.model.loading import load

        model, processor = load(model_dir, **load_options)
        return cls(model, processor, identity=identity_of_model_dir(model_dir), preprocess_options=preprocess_options)

    def prepare(self, scan_paths: Sequence[Path]) -> list[Any]:
        """Each scan (file or DICOM folder) -> ``[3, H, W, D]`` float tensor at the model's grid (the processor's)."""
        return prepare_scans(self.processor.image_processor, scan_paths, self.preprocess_options)

    def answer(self, prompt: str, images: list[Any], options: GenerationOptions, stream: AnswerStream | None = None) -> str:
        """Generated text for ``prompt`` (with one ``<image>`` per image) about ``images``.

        With ``stream`` the text is also handed out token by token (see :class:`AnswerStream`),
        stop strings apply, the stream can cancel generation and it counts the tokens. The
        prompt is tokenised once and the output decoded once (by the streamer when streaming).
        """
        return self.answer_batch([prompt], [images], options, stream=stream)[0]

    def answer_batch(self, prompts: Sequence[str], images: Sequence[list[Any]], options: GenerationOptions,
                     stream: AnswerStream | None = None) -> list[str]:
        """Answers for several prompts in one ``generate`` call (left padded); ``stream`` only for one prompt."""
        import torch

        if stream is not None and len(prompts) != 1:
            raise ValueError("a stream follows one prompt")
        for scans in images:
            if len(scans) > self.max_images:
                raise ValueError(f"{len(scans)} images given; this model takes at most {self.max_images} per prompt")
        if options.seed is not None:
            torch.manual_seed(options.seed)
        images = [[torch.as_tensor(image).float() for image in scans] for scans in images]  # MetaTensor -> tensor
        from radfm.model.processing import generation_token_ids

        tokenizer = self.processor.tokenizer
        # the options become the one GenerationConfig of this call (on top of the folder's own)
        config = options.generation_config(getattr(self.model, "generation_config", None),
                                           **generation_token_ids(tokenizer))
        kwargs = {**self.generate_kwargs, "generation_config": config}
        stopping = list(_deadline_stopping_criteria() or [])
        # the prepared scans are at the processor's grid and pass through unchanged; the prompts get
        # their <image> blocks and are tokenised here, once, in one tokenizer call
        inputs = self.processor(text=list(prompts), images=images)
        if stream is not None:
            stream.prompt_tokens = int(inputs["input_ids"].shape[1])
            kwargs["streamer"] = _text_streamer(tokenizer, stream)
            stopping.append(_StreamStop(stream))
        if stopping:
            from transformers import StoppingCriteriaList

            kwargs["stopping_criteria"] = StoppingCriteriaList(stopping)
        check_deadline()
        with torch.inference_mode():
            new_tokens = self.model.generate(**inputs, **kwargs)
        check_deadline()  # stopped by the deadline: a cut-off answer is not an answer
        if stream is None:
            return self.processor.batch_decode(new_tokens)  # the one decoding of the answer
        return [stream.finish(stream.text.strip(), options.max_new_tokens)]


def _text_streamer(tokenizer, stream: AnswerStream):
    """A transformers ``TextStreamer`` that counts tokens and hands decoded text to ``stream``."""
    from transformers import TextStreamer

    class Adapter(TextStreamer):
        def put(self, value) -> None:
            if not (self.skip_prompt and self.next_tokens_are_prompt):  # the prompt is embeddings: no ids
                stream.completion_tokens += int(value.numel())
            super().put(value)

        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            stream.push(text)

    return Adapter(tokenizer, skip_prompt=True, skip_special_tokens=True)


class _StreamStop:
    """A stopping criterion: true once the stream saw a stop string or was cancelled."""

    def __init__(self, stream: AnswerStream) -> None:
        self.stream = stream

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        return torch.full((input_ids.shape[0],), self.stream.should_stop(), dtype=torch.bool, device=input_ids.device)
