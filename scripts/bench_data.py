#!/usr/bin/env python
"""Data-loading throughput vs. the tiny model's training step rate (3D phantoms).

Makes a phantom set, then measures
  1. loader: samples/s of 3D samples through the full pipeline (manifest -> NIfTI read ->
     preprocess_scan to [3, 256, 256, 16] -> weighted sequence -> collate), DataLoader with
     ``--workers`` worker processes and the paper's 3D batch size 1;
  2. model: steps/s of ``RadFMConfig.preset("tiny")`` forward + weighted-loss backward +
     optimizer step on batches taken from that loader (already in memory).
The loader is not the bottleneck when (1) >= (2) x batch size.

``--persistent`` instead measures MONAI ``PersistentDataset`` (preprocessed scans cached on disk
between epochs and runs) as the bundles wire it: each phantom scan through a ``ScanStore`` whose
dataset is ``PersistentDataset`` and whose transform is
``radfm.transforms.preprocess_pipeline(keys=["image"])`` -- the ``Compose`` of our dictionary
transforms (``LoadScand -> DropAlphad -> OrientToRASd -> ScaleResizeToRadFMd -> ToThreeChannelsd``)
that a bundle's ``preprocessing`` wires -- over a fresh cache folder, epoch 1 (every scan read,
preprocessed and written to the cache) against epoch 2 (every scan loaded from the cache), each
the median of ``--repeats`` fresh caches, at 0 workers (the bundles' loaders) and ``--workers``.
Target (issue 12): epoch 2 >= 5x epoch 1 in scans/s.

Results are printed and written as Markdown (``--output``).

Usage: python scripts/bench_data.py [--cases 120] [--batches 40] [--workers 2]
       python scripts/bench_data.py --persistent [--cases 120] [--workers 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
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


class _CachedScans(torch.utils.data.Dataset):
    """Scan ``i`` as ``{"images": [tensor]}`` through a bundle-style :class:`radfm.data.loaders.ScanStore`."""

    def __init__(self, paths: list[str], store) -> None:
        self.paths, self.store = paths, store

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        return {"images": [self.store(self.paths[index])]}


def _epoch_rate(loader: DataLoader) -> tuple[float, int]:
    """(scans/s, scans) of one pass over ``loader``."""
    start = time.perf_counter()
    samples = 0
    for batch in loader:
        samples += sum(len(images) for images in batch["images"])
    return samples / (time.perf_counter() - start), samples


def persistent_epochs(cases: int, workers: int, repeats: int) -> str:
    """Epoch 1 vs epoch 2 through MONAI ``PersistentDataset``, wired the way the bundles wire it.

    Each unique phantom scan once per epoch through ``ScanStore(paths, preprocessing,
    partial(PersistentDataset, cache_dir=...))`` (train.json's ``scan_dataset``) and a DataLoader with
    the bundles' list collate (scans are never stacked), at 0 workers (the bundles' loaders) and at
    ``workers``.
    """
    import functools

    from monai.data import PersistentDataset
    from tqdm.auto import tqdm

    from radfm.data.loaders import ScanStore, collate_cases
    from radfm.data.phantoms import make_phantoms
    from radfm.transforms import preprocess_pipeline

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "p"
        make_phantoms(root, n=cases, seed=0, progress=False)
        paths = sorted({image["path"] if isinstance(image, dict) else image
                        for line in (root / "train.jsonl").read_text().splitlines()
                        for image in json.loads(line).get("images", [])})
        paths = [str(p if Path(p).is_absolute() else root / p) for p in paths]
        transform = preprocess_pipeline(keys=["image"])  # what a bundle's "preprocessing" holds
        runs = [(w, r) for w in sorted({0, workers}) for r in range(repeats)]
        for run, (n_workers, repeat) in enumerate(tqdm(runs, desc="persistent cache runs", unit="run")):
            cache = Path(tmp) / f"cache{run}"
            store = ScanStore(paths, transform, functools.partial(PersistentDataset, cache_dir=cache))
            loader = DataLoader(_CachedScans(paths, store), batch_size=1, num_workers=n_workers,
                                collate_fn=collate_cases,
                                persistent_workers=n_workers > 0)  # as a trainer keeps them: start-up not in epoch 2
            first, n = _epoch_rate(loader)
            second, _ = _epoch_rate(loader)
            cache_mb = sum(f.stat().st_size for f in cache.glob("*")) / 2 ** 20
            rows.append((n_workers, repeat, first, second, n, cache_mb))
            del loader
    lines = [
        "# PersistentDataset: epoch 2 (from the disk cache) vs epoch 1 (read + preprocess + cache)",
        "",
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}; {rows[0][4]} phantom scans (2D and 3D) -> [3, 512, 512, 4] / [3, 256, 256, D'] "
        f"through ScanStore + PersistentDataset (the bundles' scan_dataset), DataLoader batch 1 with the bundles' "
        f"list collate; median of {repeats} fresh caches per worker count",
        "",
        "| workers | run | epoch 1 scans/s | epoch 2 scans/s | epoch 2 / epoch 1 | cache MB |",
        "|---|---|---|---|---|---|",
    ]
    for n_workers, repeat, a, b, _n, mb in rows:
        lines.append(f"| {n_workers} | {repeat + 1} | {a:.1f} | {b:.1f} | {b / a:.1f}x | {mb:.0f} |")
    for n_workers in sorted({0, workers}):
        mine = [r for r in rows if r[0] == n_workers]
        first, second = statistics.median(r[2] for r in mine), statistics.median(r[3] for r in mine)
        label = "0 (the bundles' loaders)" if n_workers == 0 else f"{n_workers} (persistent workers)"
        lines.append(f"| **{label}** | **median** | **{first:.1f}** | **{second:.1f}** | **{second / first:.1f}x** | |")
    lines += ["", "Target (issue 12): epoch 2 >= 5x epoch 1. With workers, each cached scan is handed from a "
              "worker to the main process through shared memory, which can cost more than loading it."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=120, help="phantom cases to generate (about half are 3D)")
    parser.add_argument("--batches", type=int, default=40, help="timed loader batches and model steps")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--output", type=Path, default=None,
                        help="Markdown output (default outputs/bench_data.md, or outputs/bench_data_persistent.md)")
    parser.add_argument("--persistent", action="store_true",
                        help="measure PersistentDataset epoch 2 vs epoch 1 instead of loader vs model")
    parser.add_argument("--repeats", type=int, default=3, help="fresh caches measured with --persistent")
    args = parser.parse_args()
    if args.persistent:
        text = persistent_epochs(args.cases, args.workers, args.repeats)
        print(text)
        output = args.output or Path("outputs/bench_data_persistent.md")
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text, encoding="utf-8")
        return
    args.output = args.output or Path("outputs/bench_data.md")

    from radfm import RadFMConfig, RadFMForConditionalGeneration
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

    model = RadFMForConditionalGeneration(RadFMConfig.preset("tiny", vocab_size=base)).train()
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
