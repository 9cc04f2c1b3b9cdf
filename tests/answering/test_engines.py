"""Which engine answers (radfm/answering/engines.py, worker.start_engine): the request path takes the
answerer's own engine when it has one and the model thread otherwise, and never branches on it again."""

from __future__ import annotations

import asyncio

import pytest

from radfm.answering.answerer import AnswerStream
from radfm.answering.engines import ENGINE_VARIABLE, check_engine
from radfm.answering.identity import ModelIdentity
from radfm.answering.limits import Limits
from radfm.answering.request import AnswerRequest, RequestPath, ScanInput
from radfm.answering.worker import ModelThread


class RecordingEngine:
    """An engine of its own (as vLLM's): records what the request path hands it, streams two pieces."""

    streams = True

    def __init__(self, limits) -> None:
        self.limits, self.calls, self.closed = limits, [], False

    def check_queue(self) -> None:
        pass

    def counters(self) -> dict[str, int]:
        return {"waiting": 0, "running": 0, "served": len(self.calls)}

    async def answer(self, prompt, images, options, stream: AnswerStream | None):
        self.calls.append((prompt, len(images), options.max_new_tokens))
        for piece in ("batched ", "answer"):
            stream.push(piece)
        stream.completion_tokens = 2
        return stream.finish(stream.text.strip(), options.max_new_tokens), 0.0, 0.01

    async def answer_batch(self, prompts, images, options):
        raise NotImplementedError

    def close(self) -> None:
        self.closed = True


class OwnEngineAnswerer:
    identity = ModelIdentity(name="own-engine")
    max_images = 4

    def __init__(self) -> None:
        self.engine = None

    def prepare(self, paths):
        return [[0.0] for _ in paths]

    def start_engine(self, limits):
        self.engine = RecordingEngine(limits)
        return self.engine


class PlainAnswerer:
    identity = ModelIdentity(name="plain")
    max_images = 4

    def prepare(self, paths):
        return [[0.0] for _ in paths]

    def answer(self, prompt, images, options):
        return "plain answer"


def test_the_request_path_runs_on_the_answerers_own_engine(tmp_path):
    scan = tmp_path / "x.png"
    from PIL import Image

    Image.new("L", (8, 8)).save(scan)
    answerer = OwnEngineAnswerer()
    path = RequestPath(answerer, Limits())

    async def stream_all():
        return [event async for event in path.stream(AnswerRequest("Describe <image>.", [ScanInput("x.png", path=scan)],
                                                                   {"max_new_tokens": 5}))]

    events = asyncio.run(stream_all())
    path.close()
    assert path.engine is answerer.engine and answerer.engine.closed
    assert answerer.engine.calls == [("Describe <image>.", 1, 5)]
    assert [e for e in events if e[0] == "text"] == [("text", "batched "), ("text", "answer")]
    done = events[-1][1]
    assert done.text == "batched answer" and done.usage["completion_tokens"] == 2
    assert path.counters() == {"waiting": 0, "running": 0, "served": 1, "reading_bytes": 0}


def test_an_answerer_without_an_engine_gets_the_model_thread(tmp_path):
    path = RequestPath(PlainAnswerer(), Limits())
    try:
        assert isinstance(path.engine, ModelThread) and not path.engine.streams
    finally:
        path.close()


def test_the_engine_is_the_flag_then_the_variable_then_transformers(monkeypatch):
    monkeypatch.delenv(ENGINE_VARIABLE, raising=False)
    assert check_engine(None) == "transformers" and check_engine("vllm") == "vllm"
    monkeypatch.setenv(ENGINE_VARIABLE, "vllm")
    assert check_engine(None) == "vllm" and check_engine("transformers") == "transformers"
    monkeypatch.setenv(ENGINE_VARIABLE, "onnx")
    with pytest.raises(ValueError, match="RADFM_ENGINE='onnx': expected one of transformers, vllm"):
        check_engine(None)
    with pytest.raises(ValueError, match="--engine='tgi': expected one of transformers, vllm"):
        check_engine("tgi")


@pytest.mark.parametrize("command", [
    ["serve", "--engine", "tgi"],
    ["generate", "scan.nii.gz", "--prompt", "hi", "--engine", "tgi"],
])
def test_a_wrong_engine_is_a_usage_error_before_anything_loads(command, capsys, monkeypatch, tmp_path):
    import sys

    from radfm.cli import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exited:
        main(command)
    assert exited.value.code == 2
    assert "--engine='tgi': expected one of transformers, vllm" in capsys.readouterr().err
    assert "vllm" not in sys.modules  # refused before any engine is imported


def test_accelerate_placement_flags_are_refused_on_the_vllm_engine(capsys, tmp_path, monkeypatch):
    from radfm.cli import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exited:
        main(["generate", "scan.nii.gz", "--prompt", "hi", "--engine", "vllm", "--device_map", "auto"])
    assert exited.value.code == 2
    assert "--device_map: not used by --engine vllm" in capsys.readouterr().err
