#!/usr/bin/env python
"""Training throughput and memory: samples/s, tokens/s and peak RSS per model size, ± gradient checkpointing.

Each configuration runs in its own subprocess (so peak RSS is its own): the RadFM trainer's
iteration (forward, weighted loss, backward, AdamW step) on synthetic batches of one 2D scan
([3, 512, 512, 4], the standard preprocessing) and a 128-token instruction per sample.

    python scripts/bench_train.py --output bench_train.md            # all four configurations
    python scripts/bench_train.py --configs tiny --steps 5
    python scripts/bench_train.py --compare-published --steps 2 --rounds 3 --batch-size 1 --text-tokens 64 \
        --threads 1 --output bench_train_vs_published.md

``--compare-published``: in ONE process, on the same weights and the same batch (one 3D scan
[3, 256, 256, 64] + text per sample, fp32, forward + backward + AdamW), our trainer's step
(``RadFMTrainer`` driven by Ignite, as ``bundles/radfm/configs/train.json`` builds it: fused AdamW
from ``make_optimizer``, logits only where the loss weight is non-zero) against the published
code's step as the spec describes it: image tokens embedded through a one-hot matrix over a
per-sample table ``[V+2+32S, hidden]`` (``RADFM_SPEC.md`` §1), full logits, the weighted loss,
torch's default AdamW, gradients zeroed after the step (HF ``Trainer``); plus ``ours, before``
(our trainer with torch's default AdamW and full logits: the step before those two changes). For each
``--modes`` entry: ``off``, ``full`` (both steps with the model's checkpointing) and ``selective``
(ours only). Dropout is off everywhere (``--attention-dropout`` keeps the ViT's attention
dropout, which sends CPU SDPA to its math path). Timing: alternating rounds, median CPU and
wall time per step. Memory: one round per phase in a second, fresh process started with glibc's mmap
threshold fixed, so the RSS follows the live tensors; the peak RSS (``VmHWM``, reset through
``/proc/self/clear_refs``) minus the RSS at the phase start. The CPU model is small
(``cpu-small``); say so when quoting the figures.

Sizes: ``RadFMConfig`` presets, ``tiny`` and ``cpu-small`` (the one small model of every benchmark:
ViT 192 wide x 4 blocks, perceiver 2 layers, LLaMA 512 wide x 4 layers, vocab 32000; 50.2 M parameters).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path


def build_model(size: str):
    from radfm.model.config import RadFMConfig
    from radfm.model.radfm import RadFMForConditionalGeneration

    if size not in ("tiny", "cpu-small"):
        raise ValueError(f"unknown size {size!r}; choose tiny or cpu-small")
    return RadFMForConditionalGeneration(RadFMConfig.preset(size))


def _rss_now() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_reset() -> int:
    """Release free heap to the OS and reset the peak RSS (Linux); returns the RSS now."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")
    return _rss_now()


def _fixed_mmap_threshold() -> None:
    """Make glibc serve every allocation over 64 KiB with its own mmap (and give it back on free).

    By default glibc raises its mmap threshold after large frees, so later tensors come from the
    heap and freed memory stays resident: the peak RSS of a phase then depends on the phases
    before it (±10% between runs). With a fixed threshold the RSS follows the live tensors.
    """
    import ctypes

    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD (fixing it also stops the dynamic adjustment)
    libc.mallopt(-1, 0)  # M_TRIM_THRESHOLD: return freed heap tops at once


def _peak_rss() -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def published_embedding(model, input_ids, images):
    """The published code's embedding: a one-hot ``[B, L, V+2+32S]`` matmul over a per-sample table."""
    import torch

    hidden = model.config.hidden_size
    rows = []
    for b in range(input_ids.shape[0]):
        visual = model.encode_images(images[b]).reshape(-1, hidden)  # [32S, hidden]
        table = torch.cat([model.language_model.get_input_embeddings().weight, model.figure_token_weight, visual])
        one_hot = torch.nn.functional.one_hot(input_ids[b], table.shape[0]).to(table.dtype)
        rows.append(one_hot @ table)
    return torch.stack(rows)


def compare_published(steps: int, batch_size: int, text_tokens: int, threads: int, scan: tuple[int, int, int],
                      rounds: int = 2, modes: tuple[str, ...] = ("off", "full", "selective"),
                      attention_dropout: bool = False, memory_only: bool = False) -> dict:
    """Our trainer's step vs the published step, same weights and batch, one process (see the module doc).

    Returns the timing rows; with ``memory_only``, ``{"peaks": [...]}``: one memory round per phase.
    """
    import copy

    import torch

    from radfm.engines.build import checkpointing_mode, make_optimizer
    from radfm.engines.loss import weighted_next_token_loss
    from radfm.engines.trainer import RadFMTrainer
    from radfm.model.config import RadFMConfig
    from radfm.model.processing import image_token_ids
    from radfm.model.radfm import RadFMForConditionalGeneration
    from radfm.model.vision import SelfAttention

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    config = RadFMConfig.preset("cpu-small")
    model = RadFMForConditionalGeneration(config).train()
    for module in model.modules():  # dropout off: both steps must compute the same function
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        if isinstance(module, SelfAttention) and not attention_dropout:
            module.dropout = 0.0  # the ViT's attention dropout (an SDPA argument, not an nn.Dropout)
    initial = copy.deepcopy(model.state_dict())
    vocab = config.base_vocab_size
    ids = torch.randint(4, vocab, (batch_size, text_tokens + 34))
    ids[:, 1:35] = torch.tensor(image_token_ids(vocab, 0))
    weights = torch.zeros_like(ids, dtype=torch.float32)
    weights[:, -text_tokens // 2:] = 1.0
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "loss_weights": weights,
             "images": [[torch.rand(3, *scan)] for _ in range(batch_size)]}

    def published(n: int) -> list[float]:
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)  # HF Trainer's AdamW: torch defaults
        times = []
        for _ in range(n):
            start = (time.perf_counter(), time.process_time())
            embeds = published_embedding(model, batch["input_ids"], batch["images"])
            out = model.language_model(inputs_embeds=embeds, attention_mask=batch["attention_mask"])
            weighted_next_token_loss(out.logits, batch["input_ids"], batch["loss_weights"]).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)  # HF Trainer: model.zero_grad() after the step
            times.append((time.perf_counter() - start[0], time.process_time() - start[1]))
        return times

    def run_trainer(n: int, optimizer: torch.optim.Optimizer, loss_logits_only: bool) -> list[float]:
        from ignite.engine import Events

        trainer = RadFMTrainer(device="cpu", max_epochs=1, train_data_loader=[batch] * n, network=model,
                               optimizer=optimizer, max_grad_norm=None, loss_logits_only=loss_logits_only)
        times, start = [], [(0.0, 0.0)]
        trainer.add_event_handler(Events.ITERATION_STARTED,
                                  lambda _: start.__setitem__(0, (time.perf_counter(), time.process_time())))
        trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda _: times.append(
            (time.perf_counter() - start[0][0], time.process_time() - start[0][1])))
        trainer.run()
        return times

    def ours(n: int) -> list[float]:
        # what bundles/radfm/configs/train.json builds: make_optimizer (fused AdamW) and the
        # trainer's default loss_logits_only=True
        return run_trainer(n, make_optimizer(model, lr=1e-5, fused=True), True)

    def ours_before(n: int) -> list[float]:
        # the trainer before this change: torch's default AdamW (per-tensor loop on CPU), full logits
        return run_trainer(n, torch.optim.AdamW(model.parameters(), lr=1e-5), False)

    all_phases = {"published": published, "ours": ours, "ours, before": ours_before}

    def set_mode(mode: str) -> list[str]:
        model.activation_checkpointing_disable()
        if checkpointing_mode(mode) is not None:
            model.activation_checkpointing_enable(mode=checkpointing_mode(mode))
        return ["ours"] if mode == "selective" else list(all_phases)  # the published code has no selective mode

    def fresh_phase(run) -> None:
        model.load_state_dict(initial)
        run(1)  # warm-up: allocator, kernels
        model.load_state_dict(initial)
        model.zero_grad(set_to_none=True)  # every phase starts without gradients

    if memory_only:  # this process was started with the mmap threshold fixed (see main)
        peaks = []
        for mode in modes:
            for name in set_mode(mode):
                fresh_phase(all_phases[name])
                start_rss = _peak_reset()
                all_phases[name](steps)
                peaks.append({"step": name, "gradient_checkpointing": mode,
                              "peak_gib": (_peak_rss() - start_rss) / 2**30})
        return {"peaks": peaks}

    times: dict = {}
    for mode in modes:
        phases = [(name, all_phases[name]) for name in set_mode(mode)]
        for round_ in range(rounds):  # phases alternate so that machine noise hits all of them
            for name, run in phases if round_ % 2 == 0 else phases[::-1]:
                fresh_phase(run)
                times.setdefault((name, mode), []).extend(run(steps))
    model.activation_checkpointing_disable()
    rows = [{"step": name, "gradient_checkpointing": mode, "s_per_step": statistics.median(t[0] for t in v),
             "cpu_s_per_step": statistics.median(t[1] for t in v)} for (name, mode), v in times.items()]
    return {"parameters": sum(p.numel() for p in model.parameters()), "scan": list(scan), "steps": steps,
            "rounds": rounds, "batch_size": batch_size, "text_tokens": text_tokens, "threads": threads,
            "attention_dropout": attention_dropout, "rows": rows}


def memory_in_subprocess(args: argparse.Namespace) -> dict[tuple[str, str], float]:
    """Peak memory per (step, mode), measured in a fresh process with glibc's mmap threshold fixed."""
    cmd = [sys.executable, __file__, "--compare-published", "--memory-only", "--steps", str(args.steps),
           "--batch-size", str(args.batch_size), "--text-tokens", str(args.text_tokens), "--threads",
           str(args.threads), "--scan", args.scan, "--modes", args.modes]
    if args.attention_dropout:
        cmd.append("--attention-dropout")
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"memory measurement failed:\n{result.stderr[-2000:]}")
    peaks = json.loads(result.stdout.strip().splitlines()[-1])["peaks"]
    return {(row["step"], row["gradient_checkpointing"]): row["peak_gib"] for row in peaks}


def published_report(result: dict, command: str) -> list[str]:
    rows = {(r["step"], r["gradient_checkpointing"]): r for r in result["rows"]}
    modes = list(dict.fromkeys(r["gradient_checkpointing"] for r in result["rows"]))
    lines = [
        "# Our training step vs the published step (same weights and batch, one process, CPU)", "",
        f"Command: `{command}`  ",
        f"Model: `cpu-small` ({result['parameters'] / 1e6:.1f} M parameters: vision 192 wide × 4 blocks, "
        f"LLaMA 512 wide × 4 layers, vocab 32000) — a small config for this CPU, not the 14B model. "
        f"Batch {result['batch_size']} × (one 3D scan {result['scan']} + {result['text_tokens']} text tokens), fp32, "
        f"AdamW, {result['rounds']} alternating rounds of {result['steps']} timed steps after one warm-up each "
        f"(median step time), torch threads {result['threads']}, "
        + ("dropout off except the ViT's attention dropout (0.1: SDPA's math path on CPU, which stores the "
           "attention matrices; in both steps). " if result["attention_dropout"] else "dropout off everywhere. ")
        + "`published` = the spec's step (one-hot embedding, full logits, torch's default AdamW); "
        "`ours` = `RadFMTrainer` as the bundle runs it (fused AdamW from `make_optimizer`, logits only where "
        "the loss weight is non-zero); `ours, before` = the same trainer with torch's default AdamW and full "
        "logits (the step before these two changes). Both steps run the same model, so `published` with "
        "checkpointing uses our checkpointing modes (banded patch embedding included). Peak = peak RSS during a phase's timed steps minus the RSS at its start (no gradients alive "
        "at the start), measured in a second process (same seed, weights and batch) that fixes glibc's mmap "
        "threshold at 64 KiB first, so that the RSS follows the live tensors. "
        "Ratios are against the published step with the same checkpointing (`selective`: against the "
        "published step without checkpointing).", "",
        "| gradient checkpointing | step | wall s/step | CPU s/step | CPU time vs published | peak (GiB) | memory vs published |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode in modes:
        pub = rows.get(("published", mode)) or rows[("published", "off")]
        for name in ("published", "ours", "ours, before"):
            row = rows.get((name, mode))
            if row is None:
                continue
            lines.append(f"| {mode} | {name} | {row['s_per_step']:.3f} | {row['cpu_s_per_step']:.3f} | "
                         f"{row['cpu_s_per_step'] / pub['cpu_s_per_step']:.2f}× | {row['peak_gib']:.3f} | "
                         f"{row['peak_gib'] / pub['peak_gib']:.2f}× |")
    lines.append("")
    base_pub, base_ours = rows[("published", "off")], rows[("ours", "off")]
    for mode in modes:
        if mode == "off":
            continue
        on = rows[("ours", mode)]
        lines.append(f"- our `{mode}` checkpointing vs the published step without checkpointing: "
                     f"{on['cpu_s_per_step'] / base_pub['cpu_s_per_step']:.2f}× CPU time, "
                     f"{on['peak_gib'] / base_pub['peak_gib']:.2f}× memory "
                     f"(vs our own step without it: {on['cpu_s_per_step'] / base_ours['cpu_s_per_step']:.2f}× CPU time, "
                     f"{on['peak_gib'] / base_ours['peak_gib']:.2f}× memory).")
    lines.append("")
    lines.append("CPU time (process time, 1 thread) is the ratio to read on a shared machine; wall time is noisy.")
    return lines


def worker(size: str, checkpointing: bool, steps: int, batch_size: int, text_tokens: int, threads: int) -> dict:
    """Time ``steps`` training iterations (after one warm-up) in this process."""
    import torch

    from radfm.engines.loss import weighted_next_token_loss
    from radfm.model.processing import image_token_ids

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_model(size).train()
    if checkpointing:
        model.activation_checkpointing_enable()
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
    parser.add_argument("--configs", default="tiny,cpu-small")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--text-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", default="bench_train.md")
    parser.add_argument("--compare-published", action="store_true",
                        help="our trainer step vs the published step, one process (see the module doc)")
    parser.add_argument("--scan", default="256,256,64", help="--compare-published: the 3D scan H,W,D")
    parser.add_argument("--rounds", type=int, default=2, help="--compare-published: alternating rounds")
    parser.add_argument("--attention-dropout", action="store_true",
                        help="--compare-published: keep the ViT's attention dropout (0.1) in both steps")
    parser.add_argument("--modes", default="off,full,selective",
                        help="--compare-published: gradient checkpointing modes (off, full, selective)")
    parser.add_argument("--memory-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker", nargs=2, metavar=("SIZE", "CHECKPOINTING"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        size, checkpointing = args.worker[0], args.worker[1] == "1"
        print(json.dumps(worker(size, checkpointing, args.steps, args.batch_size, args.text_tokens, args.threads)))
        return 0

    if args.compare_published:
        scan = tuple(int(n) for n in args.scan.split(","))
        modes = tuple(args.modes.split(","))
        if args.memory_only:
            _fixed_mmap_threshold()  # before anything is allocated
            print(json.dumps(compare_published(args.steps, args.batch_size, args.text_tokens, args.threads, scan,
                                               args.rounds, modes, args.attention_dropout, memory_only=True)))
            return 0
        result = compare_published(args.steps, args.batch_size, args.text_tokens, args.threads, scan, args.rounds, modes,
                                   args.attention_dropout)
        peaks = memory_in_subprocess(args)
        for row in result["rows"]:
            row["peak_gib"] = peaks[(row["step"], row["gradient_checkpointing"])]
        command = "python scripts/bench_train.py " + " ".join(argv if argv is not None else sys.argv[1:])
        lines = published_report(result, command)
        Path(args.output).write_text("\n".join(lines) + "\n", encoding="utf-8")
        print("\n".join(lines))
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
