"""Latency and throughput of `radfm serve` for N concurrent requests (default 20).

Starts the real service as a subprocess on a free loopback port (so the client does not share
the server's GIL), warms it up, times one request alone, then fires N requests at once from N
client threads: first N multipart `POST /v1/answer` requests, then (same run, same service,
same scan and prompt) N streaming `POST /v1/chat/completions` requests, for which the time to
the first token is measured too. Writes a Markdown report.

    .venv/bin/python scripts/bench_service.py --output bench_service.md

Model: --model DIR, else the demo model bundles/radfm/models/demo/ if it exists (and
--random-tiny is not given), else a tiny randomly initialised model (the report says which).
The demo model's answers are a few tokens long; the random model writes max_new_tokens tokens
every time, which shows the time to the first token against the time to the end.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def tiny_model(folder: Path) -> Path:
    """Save a tiny random RadFM (the "tiny" preset) with its small tokenizer."""
    import radfm

    model, processor = radfm.load("tiny")
    model.save_pretrained(folder / "tiny", processor=processor)
    return folder / "tiny"


def make_scan(folder: Path) -> Path:
    """A random 3D CT-like NIfTI volume, 96×96×32."""
    import nibabel as nib

    path = folder / "volume.nii.gz"
    volume = np.random.default_rng(0).normal(0, 300, (96, 96, 32)).astype(np.float32)
    nib.save(nib.Nifti1Image(volume, np.eye(4)), path)
    return path


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of sorted ``values``."""
    return values[max(0, int(round(fraction * len(values))) - 1)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--random-tiny", action="store_true",
                        help="use a tiny random model even when the demo model exists (it writes max_new_tokens every time)")
    parser.add_argument("--prompt", default="please caption this scan with findings.")
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--output", default="bench_service.md")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="radfm-bench-"))
    demo = ROOT / "bundles/radfm/models/demo"
    if args.model:
        model_dir, model_label = Path(args.model), f"model folder {args.model}"
    elif (demo / "config.json").is_file() and not args.random_tiny:
        model_dir, model_label = demo, "the demo model (bundles/radfm/models/demo)"
    else:
        model_dir, model_label = tiny_model(work), ("a tiny RANDOM model (preset 'tiny'" +
                                                    ("; --random-tiny)" if args.random_tiny else "; the demo model did not exist)"))
    scan = make_scan(work)
    import radfm

    _, processor = radfm.load(model_dir)
    model_input_shape = tuple(processor.image_processor.process_one(scan).shape)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "radfm.cli", "serve", "--model", str(model_dir), "--port", str(port),
               "--device", args.device, "--max_queue", str(args.requests + 5)]
    server = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                health = httpx.get(f"{url}/health", timeout=2).json()
                break
            except httpx.HTTPError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"service did not start: {server.stderr.read().decode()[-2000:]}") from None
                time.sleep(0.5)
        payload = scan.read_bytes()

        def ask(i: int) -> tuple[float, dict]:
            start = time.perf_counter()
            response = httpx.post(f"{url}/v1/answer", files=[("files", ("volume.nii.gz", payload))],
                                  data={"prompt": f"Case {i}: {args.prompt}",
                                        "max_new_tokens": str(args.max_new_tokens)}, timeout=600)
            response.raise_for_status()
            return time.perf_counter() - start, response.json()

        ask(-1)  # warm-up: imports, first preprocessing
        single = [ask(-2 - k)[0] for k in range(3)]
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=args.requests) as pool:
            results = list(pool.map(ask, range(args.requests)))
        wall = time.perf_counter() - start

        model_name = httpx.get(f"{url}/v1/models", timeout=10).json()["data"][0]["id"]
        file_part = {"type": "file", "file": {"filename": "volume.nii.gz", "file_data": base64.b64encode(payload).decode()}}

        def chat(i: int) -> tuple[float, float, int, int]:
            """(seconds to the first token, seconds to the end, content chunks, tokens) of one streaming request."""
            body = {"model": model_name, "max_tokens": args.max_new_tokens, "stream": True,
                    "stream_options": {"include_usage": True}, "messages": [
                {"role": "user", "content": [file_part, {"type": "text", "text": f"Case {i}: {args.prompt}"}]}]}
            start = time.perf_counter()
            first, chunks, tokens = None, 0, 0
            with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=600) as response:
                response.raise_for_status()
                for line in response.iter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    event = json.loads(line[6:])
                    if "error" in event:
                        raise RuntimeError(event["error"])
                    if event.get("usage"):
                        tokens = event["usage"]["completion_tokens"]
                    if event["choices"] and event["choices"][0]["delta"].get("content"):
                        chunks += 1
                        first = first if first is not None else time.perf_counter() - start
            total = time.perf_counter() - start
            return (first if first is not None else total), total, chunks, tokens

        chat(-1)  # warm-up of the JSON/base64 path
        chat_alone = [chat(-2 - k) for k in range(3)]
        chat_single = [r[1] for r in chat_alone]
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=args.requests) as pool:
            chat_results = list(pool.map(chat, range(args.requests)))
        chat_wall = time.perf_counter() - start
    finally:
        server.terminate()
        server.wait(timeout=30)

    latencies = sorted(r[0] for r in results)
    generate = [r[1]["timing_s"]["generate"] for r in results]
    preprocess = [r[1]["timing_s"]["preprocess"] for r in results]
    preprocess_wait = [r[1]["timing_s"]["preprocess_wait"] for r in results]
    queued = [r[1]["timing_s"]["queued"] for r in results]
    p95 = percentile(latencies, 0.95)
    ttft = sorted(r[0] for r in chat_results)
    chat_latencies = sorted(r[1] for r in chat_results)
    chunks = [r[2] for r in chat_results]
    tokens = [r[3] for r in chat_results]
    cpu = os.cpu_count()
    report = f"""# `radfm serve` benchmark: {args.requests} concurrent requests

- Model: {model_label}; weights sha256 {health['model']['weights_sha256'][:16]}…
- Request: one 96×96×32 NIfTI volume (preprocessed to {'×'.join(map(str, model_input_shape))}, the model's grid) + prompt "Case i: {args.prompt}", max_new_tokens {args.max_new_tokens}, greedy
- Machine: {cpu} CPU cores visible, device `{args.device}`; service started with `{' '.join(command[2:4])} …` as a subprocess
- Command: `{' '.join([Path(sys.executable).name, *sys.argv])}`

| measure | value |
|---|---|
| single request latency (median of 3, idle service) | {statistics.median(single):.3f} s |
| {args.requests} concurrent: wall time | {wall:.3f} s |
| {args.requests} concurrent: throughput | {args.requests / wall:.2f} requests/s |
| {args.requests} concurrent: latency p50 / p95 / max | {statistics.median(latencies):.3f} / {p95:.3f} / {latencies[-1]:.3f} s |
| model time per request (mean; one at a time) | {statistics.mean(generate):.3f} s |
| waiting for the model (mean) | {statistics.mean(queued):.3f} s |
| preprocessing per request (mean; 2 at a time) | {statistics.mean(preprocess):.3f} s |
| waiting for a preprocessing slot (mean) | {statistics.mean(preprocess_wait):.3f} s |
| throughput ratio concurrent / sequential single | {(args.requests / wall) * statistics.median(single):.2f}× |

## Side by side: `/v1/answer` and streaming `/v1/chat/completions` ({args.requests} concurrent each, same run)

Same scan, prompt and `max_new_tokens`; the chat request carries the scan as a base64 `file` part
and streams with `stream: true`. For `/v1/answer` the first byte of the answer is the whole answer.

| measure | `/v1/answer` (multipart) | `/v1/chat/completions` (stream) |
|---|---|---|
| single request, idle service (median of 3) | {statistics.median(single):.3f} s | {statistics.median(chat_single):.3f} s (first token {statistics.median(r[0] for r in chat_alone):.3f} s) |
| time to first token p50 / p95 | {statistics.median(latencies):.3f} / {p95:.3f} s (whole answer) | {statistics.median(ttft):.3f} / {percentile(ttft, 0.95):.3f} s |
| latency to the end p50 / p95 / max | {statistics.median(latencies):.3f} / {p95:.3f} / {latencies[-1]:.3f} s | {statistics.median(chat_latencies):.3f} / {percentile(chat_latencies, 0.95):.3f} / {chat_latencies[-1]:.3f} s |
| wall time for all {args.requests} | {wall:.3f} s | {chat_wall:.3f} s |
| total throughput | {args.requests / wall:.2f} requests/s | {args.requests / chat_wall:.2f} requests/s |
| streamed content chunks per answer (median) | — | {statistics.median(chunks):.0f} |
| generated tokens per answer (median) | — | {statistics.median(tokens):.0f} |
| chat ÷ answer throughput | | {(args.requests / chat_wall) / (args.requests / wall):.2f}× |
"""
    Path(args.output).write_text(report)
    print(report)


if __name__ == "__main__":
    main()
