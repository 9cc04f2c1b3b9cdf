#!/usr/bin/env python
"""Data-loading throughput vs. the tiny model's training step rate (3D phantoms).

Makes a phantom set, then measures
  1. loader: samples/s of 3D samples through the full pipeline (manifest -> NIfTI read ->
     preprocess_scan to [3, 256, 256, 16] -> weighted sequence -> collate), DataLoader with
     ``--workers`` worker processes and the paper's 3D batch size 1;
  2. model: steps/s of ``RadFMConfig.preset("tiny")`` forward + weighted-loss backward +
     optimizer step on batches taken from that loader (already in memory).
The loader is not the bottleneck when (1) >= (2) x batch size. Results are printed and
written as Markdown (``--output``).

Usage: python scripts/bench_data.py [--cases 120] [--batches 40] [--workers 2]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader


def weighted_loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Σ w·CE / Σ w with the usual one-token shift (paper eq. 2-4)."""
    logits, labels, weights = logits[:, :-1], labels[:, 1:], weights[:, 1:]
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1),
                                           ignore_index=-100, reduction="none")
    w = weights.reshape(-1)
    return (ce * w).sum() / w.sum().clamp(min=1e-6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=120, help="phantom cases to generate (about half are 3D)")
    parser.add_argument("--batches", type=int, default=40, help="timed loader batches and model steps")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--output", type=Path, default=Path("outputs/bench_data.md"))
    args = parser.parse_args()

    from radfm import RadFM, RadFMConfig
    from radfm.data.dataset import ManifestDataset
    from radfm.data.phantoms import make_phantoms
    from radfm.data.sampler import ModalityBatchSampler, collate_samples
    from radfm.data.sequences import SequenceBuilder
    from radfm.model.loading import tiny_tokenizer

    torch.manual_seed(0)
    tokenizer = tiny_tokenizer()
    base = tokenizer.convert_tokens_to_ids("<image>")
    with tempfile.TemporaryDirectory() as tmp:
        make_phantoms(Path(tmp) / "p", n=args.cases, seed=0, progress=False)
        builder = SequenceBuilder(tokenizer, base, max_length=512)
        full = ManifestDataset(Path(tmp) / "p" / "train.jsonl", builder)
        dims = full.dims
        ds = ManifestDataset([s for s, d in zip(full.samples, dims) if d == 3], builder)  # 3D only
        sampler = ModalityBatchSampler([3] * len(ds), seed=0, batch_size_3d=1)
        loader = DataLoader(ds, batch_sampler=sampler, collate_fn=collate_samples, num_workers=args.workers,
                            persistent_workers=args.workers > 0)
        it = iter(loader)
        warm = [next(it) for _ in range(2 * max(args.workers, 1))]  # worker start-up not timed
        start = time.perf_counter()
        batches, samples = [], 0
        for _ in range(args.batches):
            try:
                batch = next(it)
            except StopIteration:
                sampler.set_epoch(sampler.epoch + 1)
                it = iter(loader)
                batch = next(it)
            batches.append(batch)
            samples += len(batch["ids"])
        loader_time = time.perf_counter() - start
        del it, loader
    loader_rate = samples / loader_time

    model = RadFM(RadFMConfig.preset("tiny", vocab_size=base)).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    steps = (warm + batches)[: args.batches + 2]
    for i, batch in enumerate(steps):
        if i == 2:
            start = time.perf_counter()
        out = model(input_ids=batch["input_ids"], images=batch["images"], attention_mask=batch["attention_mask"])
        loss = weighted_loss(out.logits, batch["labels"], batch["loss_weights"])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    step_rate = (len(steps) - 2) / (time.perf_counter() - start)

    lines = [
        "# Data loading vs. tiny-model training (3D phantoms, batch size 1)",
        "",
        f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}",
        "",
        "| measure | rate |",
        "|---|---|",
        f"| loader, {args.workers} workers, full pipeline | {loader_rate:.2f} samples/s |",
        f"| tiny model forward+backward+step | {step_rate:.2f} steps/s ({step_rate:.2f} samples/s) |",
        f"| loader / model | {loader_rate / step_rate:.2f}x |",
        "",
        f"{samples} samples of shape [3, 256, 256, 16] timed over {loader_time:.1f} s; "
        f"{len(steps) - 2} model steps.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
