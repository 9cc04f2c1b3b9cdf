"""What the chat page and the OpenAI-compatible API share: scans from bytes, turns -> prompt, streaming.

* :func:`save_scan_bytes` writes one uploaded file (or the members of a zip of a DICOM
  series) into a work folder with the same kind detection as ``POST /v1/answer``; zips are
  read member by member with bounded count and decompressed size, and member names never
  become paths (no traversal possible).
* :func:`conversation_prompt` turns a conversation into one RadFM prompt: previous turns are
  fed back as plain text before the last question (RadFM has no chat template; it was
  trained on "instruction -> answer"), and every scan keeps its ``<image>`` position.
* :func:`stream_answer` runs a prompt through the service's single model worker (the same
  queue, limits and worker path as ``/v1/answer``) and yields the answer piece by piece.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import zipfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from radfm.interop.answerer import AnswerStream, GenerationOptions
from radfm.interop.uploads import UploadError, detect_kind, safe_name

PLACEHOLDER = "<image>"
_ZIP_MAGIC = b"PK\x03\x04"
_SKIPPED_MEMBERS = re.compile(r"(^|/)(__MACOSX/|\.)|(^|/)(DICOMDIR|Thumbs\.db)$", re.IGNORECASE)


def is_zip(head: bytes) -> bool:
    return head.startswith(_ZIP_MAGIC)


def extract_zip_scans(
    archive: Path, workdir: Path, *, first_index: int, max_files: int, max_bytes: int, label: str
) -> list[tuple[str, Path, str]]:
    """Members of a zip (a DICOM series, or several scans) saved as ``(name, path, kind)``.

    Safe by construction: members are written under generated names (``safe_name``), never
    under their own paths; at most ``max_files`` members and ``max_bytes`` decompressed bytes
    (counted while inflating, not trusted from the header); encrypted members and nested
    archives are refused; hidden files, ``__MACOSX``, ``DICOMDIR`` and non-scan files are skipped.
    """
    try:
        bundle = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as error:
        raise UploadError(f"{label}: not a readable zip file ({error})") from None
    saved: list[tuple[str, Path, str]] = []
    total = 0
    with bundle:
        members = [m for m in bundle.infolist() if not m.is_dir() and not _SKIPPED_MEMBERS.search(m.filename)]
        if len(members) > max_files:
            raise UploadError(f"{label}: {len(members)} files in the zip; the limit is {max_files}", 413)
        for member in members:
            if member.flag_bits & 0x1:
                raise UploadError(f"{label}: member {member.filename!r} is encrypted")
            total += member.file_size
            if total > max_bytes:
                raise UploadError(f"{label}: more than {max_bytes} bytes when unpacked; the limit is {max_bytes}", 413)
            index = first_index + len(saved)
            path = workdir / safe_name(Path(member.filename).name, index)
            written = 0
            with bundle.open(member) as source, path.open("wb") as target:
                while chunk := source.read(1 << 20):
                    written += len(chunk)
                    if written > member.file_size:
                        raise UploadError(f"{label}: member {member.filename!r} inflates past its declared size", 413)
                    target.write(chunk)
            with path.open("rb") as handle:
                head = handle.read(352)
            if not head:
                path.unlink()
                continue
            if is_zip(head):
                raise UploadError(f"{label}: member {member.filename!r} is itself a zip; nested archives are not read")
            try:
                kind = detect_kind(member.filename, head)
            except UploadError:
                path.unlink()  # a README or a report next to the slices: not a scan
                continue
            saved.append((f"{label}/{member.filename}", path, kind))
    if not saved:
        raise UploadError(f"{label}: the zip holds no scan (DICOM, NIfTI, NRRD, PNG or JPEG)", 415)
    return saved


def save_scan_bytes(
    name: str, data: bytes, workdir: Path, *, first_index: int, max_files: int, max_bytes: int
) -> list[tuple[str, Path, str]]:
    """One uploaded scan file (or zip) written to ``workdir``: ``[(name, path, kind), ...]``."""
    if not data:
        raise UploadError(f"{name}: empty file")
    if is_zip(data[:4]):
        archive = workdir / f"{first_index:04d}_upload.zip"
        archive.write_bytes(data)
        try:
            return extract_zip_scans(archive, workdir, first_index=first_index, max_files=max_files,
                                     max_bytes=max_bytes, label=name)
        finally:
            archive.unlink(missing_ok=True)
    kind = detect_kind(name, data[:352])
    path = workdir / safe_name(name, first_index)
    path.write_bytes(data)
    return [(name, path, kind)]


@dataclass
class Turn:
    """One message: ``role`` is user, assistant or system; ``text`` holds one ``<image>`` per scan."""

    role: str
    text: str
    scans: list[Any] = field(default_factory=list)  # whatever stands for a scan (ids, saved files)


def conversation_prompt(turns: Sequence[Turn]) -> tuple[str, list[Any]]:
    """``(prompt, scans in <image> order)`` for a conversation ending with the user's question.

    One user turn alone gives exactly its text (so answers equal ``radfm generate``'s);
    earlier turns come first, each on its own line, questions and answers as written.
    """
    if not turns or turns[-1].role != "user":
        raise ValueError("the conversation must end with a user message")
    lines, scans = [], []
    for turn in turns:
        if turn.text.count(PLACEHOLDER) != len(turn.scans):
            raise ValueError(f"a {turn.role} message has {turn.text.count(PLACEHOLDER)} {PLACEHOLDER} "
                             f"placeholder(s) for {len(turn.scans)} scan(s)")
        if turn.text.strip():
            lines.append(turn.text.strip())
        scans.extend(turn.scans)
    prompt = "\n".join(lines)
    if not prompt.strip():
        raise ValueError("the conversation has no text")
    return prompt, scans


def supports_streaming(answerer) -> bool:
    """Whether ``answerer.answer`` takes ``stream=`` (the model answerer does; simple test doubles may not)."""
    try:
        return "stream" in inspect.signature(answerer.answer).parameters
    except (TypeError, ValueError):
        return False


async def stream_answer(
    service, prompt: str, images: list, options: GenerationOptions, stop: Sequence[str] = ()
) -> AsyncIterator[tuple[str, Any]]:
    """Yield ``("text", piece)`` while the model writes, then ``("done", (answer, stream))``.

    Runs on the service's single model worker (its queue and limits; a full queue raises
    ``UploadError`` 503). Closing the iterator early (client gone, stop button) cancels the
    generation after the current token.
    """
    loop = asyncio.get_running_loop()
    pieces: asyncio.Queue[str] = asyncio.Queue()
    stream = AnswerStream(on_text=lambda piece: loop.call_soon_threadsafe(pieces.put_nowait, piece), stop=stop)
    if supports_streaming(service.answerer):
        work = asyncio.ensure_future(service._queue_for_model(prompt, images, options, stream=stream))
    else:  # an answerer without streaming: the whole answer arrives as one piece
        async def whole():
            text, *timing = await service._queue_for_model(prompt, images, options)
            stream.push(text)
            return (stream.finish(text, options.max_new_tokens), *timing)

        work = asyncio.ensure_future(whole())
    try:
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
        text = work.result()[0]
        yield "done", (text, stream)
    finally:
        if not work.done():
            stream.cancel()  # the model stops after its current token; the worker is free again
