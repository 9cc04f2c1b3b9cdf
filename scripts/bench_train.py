#!/usr/bin/env python
"""Training throughput and memory: samples/s, tokens/s and peak RSS per model size, ± gradient checkpointing.

Each configuration runs in its own subprocess (so peak RSS is its own): the RadFM trainer's
iteration (forward, weighted loss, backward, AdamW step) on synthetic batches of one 2D scan
([3, 512, 512, 4], the standard preprocessing) and a 128-token instruction per sample.

    python scripts/bench_train.py --output bench_train.md            # all four configurations
    python scripts/bench_train.py --configs tiny --steps 5

Sizes: ``tiny`` = the tiny preset; ``small`` = the published vision encoder and perceiver
(768 wide, 12 blocks; perceiver 6 layers) + a 4-layer 1024-wide LLaMA-style LLM (vocab 32000).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

SMALL_LLM = {
    "model_type": "llama", "vocab_size": 32000, "hidden_size": 1024, "intermediate_size": 2816,
    "num_hidden_layers": 4, "num_attention_heads": 16, "num_key_value_heads": 16, "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-6, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2, "tie_word_embeddings": False,
}


def build_model(size: str):
    from radfm.model.config import RadFMConfig
    from radfm.model.radfm import RadFM

    if size == "tiny":
        config = RadFMConfig.preset("tiny")
    elif size == "small":
        config = RadFMConfig(llm=dict(SMALL_LLM))  # published vision/perceiver defaults
    else:
        raise ValueError(f"unknown size {size!r}")
    return RadFM(config)


def worker(size: str, checkpointing: bool, steps: int, batch_size: int, text_tokens: int, threads: int) -> dict:
    """Time ``steps`` training iterations (after one warm-up) in this process."""
    import torch

    from radfm.engines.loss import weighted_next_token_loss
    from radfm.model.tokenizer import image_token_ids

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_model(size).train()
    if checkpointing:
        model.gradient_checkpointing_enable()
    vocab = model.config.base_vocab_size
    ids = torch.randint(4, vocab, (batch_size, text_tokens + 34))
    ids[:, 1:35] = torch.tensor(image_token_ids(vocab, 0))
    weights = torch.zeros_like(ids, dtype=torch.float32)
    weights[:, -text_tokens // 2 :] = 1.0
    images = [[torch.rand(3, 512, 512, 4)] for _ in range(batch_size)]
    mask = torch.ones_like(ids)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)

    def step() -> None:
        out = model(input_ids=ids, images=images, attention_mask=mask)
        weighted_next_token_loss(out.logits, ids, weights).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # warm-up (allocations, optimizer state)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = time.perf_counter() - start
    samples = steps * batch_size
    return {
        "size": size, "gradient_checkpointing": checkpointing,
        "parameters": sum(p.numel() for p in model.parameters()),
        "seconds_per_step": seconds / steps,
        "samples_per_s": samples / seconds,
        "tokens_per_s": samples * ids.shape[1] / seconds,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default="tiny,small")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--text-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", default="bench_train.md")
    parser.add_argument("--worker", nargs=2, metavar=("SIZE", "CHECKPOINTING"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        size, checkpointing = args.worker[0], args.worker[1] == "1"
        print(json.dumps(worker(size, checkpointing, args.steps, args.batch_size, args.text_tokens, args.threads)))
        return 0

    rows = []
    for size in args.configs.split(","):
        for checkpointing in (False, True):
            cmd = [sys.executable, __file__, "--worker", size, "1" if checkpointing else "0", "--steps", str(args.steps),
                   "--batch-size", str(args.batch_size), "--text-tokens", str(args.text_tokens),
                   "--threads", str(args.threads)]
            print(f"running {size} (gradient checkpointing {'on' if checkpointing else 'off'}) ...", flush=True)
            result = subprocess.run(cmd, capture_output=True, text=True)
            if result.returncode != 0:
                print(result.stderr[-2000:], file=sys.stderr)
                rows.append({"size": size, "gradient_checkpointing": checkpointing, "error": result.stderr[-300:]})
                continue
            rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
            print("  ", rows[-1], flush=True)

    lines = [
        "# Training benchmark (CPU)", "",
        f"Command: `python scripts/bench_train.py {' '.join(argv if argv is not None else sys.argv[1:])}`  ",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch threads {args.threads}; "
        f"batch {args.batch_size} samples, each one 2D scan [3, 512, 512, 4] + {args.text_tokens} text tokens "
        f"({args.text_tokens + 34} tokens); {args.steps} timed steps after one warm-up; fp32.", "",
        "| model | parameters | grad. checkpointing | s/step | samples/s | tokens/s | peak RSS (GiB) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['size']} | | {'on' if r['gradient_checkpointing'] else 'off'} | failed | | | |")
            continue
        lines.append(
            f"| {r['size']} | {r['parameters'] / 1e6:.1f} M | {'on' if r['gradient_checkpointing'] else 'off'} | "
            f"{r['seconds_per_step']:.2f} | {r['samples_per_s']:.2f} | {r['tokens_per_s']:.0f} | {r['peak_rss_gib']:.2f} |"
        )
    Path(args.output).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
