"""Latency and throughput of `radfm serve` for N concurrent requests (default 20).

Starts the real service as a subprocess on a free loopback port (so the client does not share
the server's GIL), warms it up, times one request alone, then fires N requests at once from N
client threads. Writes a Markdown report.

    .venv/bin/python scripts/bench_service.py --output bench_service.md

Model: --model DIR, else the demo model bundles/radfm/models/demo/ if it exists, else a tiny
randomly initialised model (the report says which).
"""

from __future__ import annotations

import argparse
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

    model, tokenizer, _ = radfm.load("tiny")
    model.save_pretrained(folder / "tiny", tokenizer=tokenizer)
    return folder / "tiny"


def make_scan(folder: Path) -> Path:
    """A random 3D CT-like NIfTI volume, 96×96×32."""
    import nibabel as nib

    path = folder / "volume.nii.gz"
    volume = np.random.default_rng(0).normal(0, 300, (96, 96, 32)).astype(np.float32)
    nib.save(nib.Nifti1Image(volume, np.eye(4)), path)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--output", default="bench_service.md")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="radfm-bench-"))
    demo = ROOT / "bundles/radfm/models/demo"
    if args.model:
        model_dir, model_label = Path(args.model), f"model folder {args.model}"
    elif (demo / "config.json").is_file():
        model_dir, model_label = demo, "the demo model (bundles/radfm/models/demo)"
    else:
        model_dir, model_label = tiny_model(work), "a tiny RANDOM model (preset 'tiny'; the demo model did not exist)"
    scan = make_scan(work)
    import radfm

    model_input_shape = tuple(radfm.load(model_dir).preprocess(scan).shape)
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
                    raise SystemExit(f"service did not start: {server.stderr.read().decode()[-2000:]}")
                time.sleep(0.5)
        payload = scan.read_bytes()

        def ask(i: int) -> tuple[float, dict]:
            start = time.perf_counter()
            response = httpx.post(f"{url}/v1/answer", files=[("files", ("volume.nii.gz", payload))],
                                  data={"prompt": f"Case {i}: please caption this scan with findings.",
                                        "max_new_tokens": str(args.max_new_tokens)}, timeout=600)
            response.raise_for_status()
            return time.perf_counter() - start, response.json()

        ask(-1)  # warm-up: imports, first preprocessing
        single = [ask(-2 - k)[0] for k in range(3)]
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=args.requests) as pool:
            results = list(pool.map(ask, range(args.requests)))
        wall = time.perf_counter() - start
    finally:
        server.terminate()
        server.wait(timeout=30)

    latencies = sorted(r[0] for r in results)
    generate = [r[1]["timing_s"]["generate"] for r in results]
    preprocess = [r[1]["timing_s"]["preprocess"] for r in results]
    preprocess_wait = [r[1]["timing_s"]["preprocess_wait"] for r in results]
    queued = [r[1]["timing_s"]["queued"] for r in results]
    p95 = latencies[max(0, int(round(0.95 * len(latencies))) - 1)]
    cpu = os.cpu_count()
    report = f"""# `radfm serve` benchmark: {args.requests} concurrent requests

- Model: {model_label}; weights sha256 {health['model']['weights_sha256'][:16]}…
- Request: one 96×96×32 NIfTI volume (preprocessed to {'×'.join(map(str, model_input_shape))}, the model's grid) + prompt, max_new_tokens {args.max_new_tokens}, greedy
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
"""
    Path(args.output).write_text(report)
    print(report)


if __name__ == "__main__":
    main()
