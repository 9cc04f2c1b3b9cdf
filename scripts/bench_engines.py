"""The transformers engine vs the vLLM engine through ``radfm serve``, side by side in one run.

    .venv-vllm/bin/python scripts/bench_engines.py [--engines transformers,vllm] [--clients 1,4,8,16]
        [--new-tokens 64] [--depth 64] [--single-repeats 3] [--node-studies 20] [--output bench_engines.md]

The model is the ``cpu-small`` preset of ``RadFMConfig`` (the one small model of every benchmark)
with random weights (the LM-head rows of the tokenizer's filler ids zeroed, so answers are text), saved
as a model folder (its tokenizer puts ``<image>`` at id 32000) with a 3D
grid of 256x256 and depth ``--depth``; every request carries one generated 3D phantom
(256x256x``--depth`` NIfTI) and asks for a fixed answer length: ``max_new_tokens`` = ``--new-tokens``
with ``min_new_tokens`` and ``ignore_eos`` where the service accepts them (the options of issue 29; else the
random weights' own length, reported as counted). Both engines run in the same interpreter (the
vLLM environment also runs the transformers engine), one after the other, on the same folder.

Figures (each from the service's own usage counts, never assumed):

* aggregate output tokens/s with 1, 4, 8, 16 concurrent clients (each sends one request per
  round, ``--rounds`` rounds) on ``POST /v1/answer``;
* single stream (one client alone): time to first token = the latency of a 1-token request, time per
  output token = the extra latency of ``--new-tokens`` tokens over 1, per token (medians of
  ``--single-repeats``; wall times, as the transformers streamer hands out text only at word boundaries);
* ``--node-studies N``: the DICOM node's studies per minute (scripts/bench_node.py with ``--engine``
  and ``--model``; needs Orthanc), both engines.

vLLM's KV cache on a CPU is ``VLLM_CPU_KVCACHE_SPACE`` GiB (default here 2).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from service_process import running_service  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PROMPT = "Look at the scan <image> and describe the findings."


def build_model(folder: Path, depth: int) -> Path:
    """The cpu-small preset with random weights (seed 0), its tokenizer and a 256x256 x ``depth`` 3D grid."""
    import torch

    from radfm.model.config import RadFMConfig
    from radfm.model.loading import tiny_tokenizer
    from radfm.model.processing import RadFMImageProcessor
    from radfm.model.radfm import RadFMForConditionalGeneration

    if (folder / "config.json").is_file():
        return folder
    torch.manual_seed(0)
    config = RadFMConfig.preset("cpu-small")
    model = RadFMForConditionalGeneration(config).eval()
    tokenizer = tiny_tokenizer(base_vocab_size=config.text_config.vocab_size)
    # ids between the tokenizer's trained vocabulary and 32000 are fillers that decode to nothing: with
    # their LM-head rows zero the random model's greedy tokens are text, so a stream has pieces to time
    # (same shapes and work per token)
    trained = tiny_tokenizer().convert_tokens_to_ids("<image>")
    with torch.no_grad():
        model.get_output_embeddings().weight[trained:config.text_config.vocab_size] = 0
    model.save_pretrained(folder, tokenizer=tokenizer)
    grid = RadFMImageProcessor.from_model_dir(folder).grid
    RadFMImageProcessor(**{**grid, "size_3d": (256, 256), "max_depth": depth}).save_grid(folder)
    return folder


def write_phantom(path: Path, depth: int, size: tuple[int, int] = (256, 256)) -> Path:
    """A ``size`` x ``depth`` CT-like phantom NIfTI: body ellipse, a bright sphere, noise (seed 0)."""
    import nibabel as nib
    import numpy as np

    rng = np.random.default_rng(0)
    x, y, z = np.meshgrid(np.linspace(-1, 1, size[0]), np.linspace(-1, 1, size[1]), np.linspace(-1, 1, depth),
                          indexing="ij")
    volume = np.where(x**2 / 0.8 + y**2 / 0.6 < 1, 40.0, -1000.0)
    volume[(x - 0.3) ** 2 + (y + 0.2) ** 2 + z**2 < 0.05] = 300.0
    volume += rng.normal(0, 10, volume.shape)
    nib.save(nib.Nifti1Image(volume.astype(np.float32), np.diag([1.0, 1.0, 2.5, 1.0])), path)
    return path


def fixed_length(url: str, scan: bytes, new_tokens: int) -> dict[str, str]:
    """``min_new_tokens``/``ignore_eos`` form fields when the service takes them, else ``{}`` (said in the output)."""
    fields = {"min_new_tokens": str(new_tokens), "ignore_eos": "true"}
    reply = httpx.post(f"{url}/v1/answer", data={"prompt": PROMPT, "max_new_tokens": "2", **fields},
                       files=[("files", ("scan.nii.gz", scan))], timeout=600)
    return fields if reply.status_code == 200 else {}


def answer(url: str, scan: bytes, new_tokens: int, extra: dict[str, str]) -> int:
    """One ``/v1/answer`` request; returns the completion tokens the service counted."""
    reply = httpx.post(f"{url}/v1/answer", data={"prompt": PROMPT, "max_new_tokens": str(new_tokens), **extra},
                       files=[("files", ("scan.nii.gz", scan))], timeout=1800)
    reply.raise_for_status()
    return int(reply.json()["usage"]["completion_tokens"])


def throughput(url: str, scan: bytes, clients: int, rounds: int, new_tokens: int, extra: dict[str, str]) -> dict:
    """Aggregate output tokens/s of ``clients`` concurrent clients, each sending ``rounds`` requests in turn."""
    def client(_: int) -> int:
        return sum(answer(url, scan, new_tokens, extra) for _ in range(rounds))

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        tokens = sum(pool.map(client, range(clients)))
    seconds = time.perf_counter() - started
    return {"clients": clients, "requests": clients * rounds, "tokens": tokens, "seconds": round(seconds, 2),
            "tokens_per_s": round(tokens / seconds, 1)}


def timed_answer(url: str, scan: bytes, new_tokens: int, extra: dict[str, str]) -> tuple[float, int]:
    """``(wall seconds, completion tokens)`` of one ``/v1/answer`` request."""
    started = time.perf_counter()
    tokens = answer(url, scan, new_tokens, extra)
    return time.perf_counter() - started, tokens


def single_stream(url: str, scan: bytes, new_tokens: int, extra: dict[str, str], repeats: int) -> dict:
    """One client alone: time to first token = a 1-token request's latency (upload, reading, image
    encoding, prefill, one token); time per output token = the extra time of ``new_tokens`` over 1 token,
    per extra token (medians of ``repeats``). From wall times, not from streamed text: the transformers
    streamer hands out text at word boundaries only, so chunk times would not be token times."""
    first = [timed_answer(url, scan, 1, extra) for _ in range(repeats)]
    full = [timed_answer(url, scan, new_tokens, extra) for _ in range(repeats)]
    ttft = statistics.median(seconds for seconds, _ in first)
    tokens = statistics.median(count for _, count in full)
    tpot = (statistics.median(seconds for seconds, _ in full) - ttft) / max(tokens - 1, 1)
    return {"ttft_s": ttft, "tpot_s": tpot, "tokens": [count for _, count in full]}


def bench_engine(engine: str, model_dir: Path, scan: bytes, args, workdir: Path, *, dtype: str = "float32",
                 quantize: str | None = None, device: str = "cpu") -> dict:
    """Every service figure for one engine (one ``radfm serve`` process).

    Args:
        engine: transformers | vllm.
        model_dir: the model folder.
        scan: the NIfTI each request uploads.
        args: ``clients``, ``rounds``, ``new_tokens``, ``single_repeats``.
        workdir: the service's temp folder.
        dtype / quantize / device: ``radfm serve`` flags (scripts/gpu_check.py: bfloat16, 8bit, cuda).

    Returns:
        Start-up seconds, TTFT, TPOT and one throughput row per client count.
    """
    flags = ["--model", str(model_dir), "--engine", engine, "--dtype", dtype, "--max_queue", "64",
             "--max_new_tokens_limit", str(max(args.new_tokens, 16)), "--generation_timeout_s", "3600"]
    if quantize:
        flags += ["--quantize", quantize]
    started = time.perf_counter()
    with running_service(flags, workdir, device=device, start_timeout_s=1800.0) as (_, url):
        startup = time.perf_counter() - started
        extra = fixed_length(url, scan, args.new_tokens)
        answer(url, scan, args.new_tokens, extra)  # warm-up: first request pays lazy initialisation
        single = single_stream(url, scan, args.new_tokens, extra, args.single_repeats)
        rows = [throughput(url, scan, clients, args.rounds, args.new_tokens, extra) for clients in args.clients]
    return {"engine": engine, "startup_s": round(startup, 1), "fixed_length": bool(extra),
            "ttft_s": round(single["ttft_s"], 4), "tpot_s": round(single["tpot_s"], 5),
            "single_tokens": single["tokens"], "throughput": rows}


def bench_node(engine: str, model_dir: Path, studies: int, new_tokens: int) -> dict:
    """scripts/bench_node.py for one engine (the node answers up to 8 studies at once)."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        done = subprocess.run([sys.executable, str(REPO / "scripts" / "bench_node.py"), "--studies", str(studies),
                               "--engine", engine, "--model", str(model_dir), "--max_studies_in_memory", "8",
                               "--max_new_tokens", str(new_tokens), "--json", out.name],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if done.returncode != 0:  # the service figures above still count
            return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
        return json.loads(Path(out.name).read_text())


def table(results: list[dict], node: dict[str, dict], args) -> str:
    lines = [f"model: cpu-small (random weights), one 3D scan 256x256x{args.depth} per request, "
             f"{args.new_tokens} new tokens", "",
             "| engine | start s | fixed length | TTFT s | TPOT ms | " + " | ".join(f"tok/s @{c}" for c in args.clients)
             + " |", "|---|---|---|---|---|" + "---|" * len(args.clients)]
    for r in results:
        lines.append(f"| {r['engine']} | {r['startup_s']} | {'yes' if r['fixed_length'] else 'no'} | {r['ttft_s']} | "
                     f"{r['tpot_s'] * 1000:.1f} | " + " | ".join(str(t["tokens_per_s"]) for t in r["throughput"]) + " |")
    by = {r["engine"]: r for r in results}
    if {"transformers", "vllm"} <= set(by):
        t, v = by["transformers"], by["vllm"]
        at = {row["clients"]: row["tokens_per_s"] for row in t["throughput"]}
        av = {row["clients"]: row["tokens_per_s"] for row in v["throughput"]}
        lines.append("")
        if 8 in at and 8 in av:
            lines.append(f"vLLM@8 / transformers@8 = {av[8] / at[8]:.2f}x (target >= 4)")
        if t["tpot_s"] and t["ttft_s"]:
            lines.append(f"TPOT vLLM / transformers = {v['tpot_s'] / t['tpot_s']:.2f}x (target <= 1.2); "
                         f"TTFT vLLM / transformers = {v['ttft_s'] / t['ttft_s']:.2f}x (target <= 1.1)")
    for engine, figures in node.items():
        if "error" in figures:
            lines.append(f"node, {engine}: failed: {figures['error']}")
            continue
        lines.append(f"node, {engine}: {figures.get('studies_per_minute')} studies/min "
                     f"({figures.get('done')}/{figures.get('studies')} done, {figures.get('elapsed_s')} s)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", default="transformers,vllm")
    parser.add_argument("--clients", default="1,4,8,16")
    parser.add_argument("--rounds", type=int, default=1, help="requests each client sends, one after another")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--depth", type=int, default=64)
    parser.add_argument("--single-repeats", type=int, default=3)
    parser.add_argument("--node-studies", type=int, default=0, help="also run the node benchmark (needs Orthanc)")
    parser.add_argument("--model-dir", default=None, help="reuse this cpu-small folder (built when missing)")
    parser.add_argument("--output", default=None, help="also write the table (markdown) here")
    args = parser.parse_args()
    args.clients = [int(c) for c in args.clients.split(",")]
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    work = Path(tempfile.mkdtemp(prefix="radfm-bench-engines-"))
    model_dir = build_model(Path(args.model_dir) if args.model_dir else work / "cpu-small", args.depth)
    scan = write_phantom(work / "phantom.nii.gz", args.depth).read_bytes()
    results, node = [], {}
    for engine in args.engines.split(","):
        (work / engine).mkdir(exist_ok=True)
        results.append(bench_engine(engine, model_dir, scan, args, work / engine))
        print(json.dumps(results[-1]), flush=True)
        if args.node_studies:
            node[engine] = bench_node(engine, model_dir, args.node_studies, args.new_tokens)
            print(json.dumps({"node": engine, **node[engine]}), flush=True)
    text = table(results, node, args)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")


if __name__ == "__main__":
    main()
