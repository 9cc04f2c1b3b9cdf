"""Generation overhead of ``RadFMForConditionalGeneration.generate`` (one 3D scan) against the bare language model's own
``generate`` on a prompt of the same embedded length: same weights, same dtype, greedy, same
number of new tokens (EOS suppressed with ``min_new_tokens``), KV cache on both sides.

    .venv/bin/python scripts/bench_generate.py [--models demo,cpu-small] [--new-tokens 32] [--repeats 5]
                                               [--threads N] [--output bench_generate.md]

Per step times come from a logits processor that stamps the clock each time ``generate`` asks
for the next token's scores: the first stamp ends the prefill (for RadFM: image encoding, the
embedding splice and the LM's prompt forward), the gaps between later stamps are the per-token
decode times. The two sides run interleaved (ABBA), ``--repeats`` times each; medians are reported,
with the split of RadFM's prefill into image encoding, embedding splice and LM prompt forward
(each timed on its own).

Models: ``demo`` = bundles/radfm/models/demo (the shipped demo weights); ``cpu-small`` = the
``cpu-small`` preset of ``RadFMConfig`` (the one small model of every benchmark: LLaMA 512 wide x 4
layers, 32k vocabulary, ViT 192 wide x 4 blocks; 50.2 M parameters) with random weights, 256x256x16 scan.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
DEMO_DIR = REPO / "bundles" / "radfm" / "models" / "demo"
TEXT_TOKENS = 24  # text tokens of the prompt besides the 34-id image block


class StepClock:
    """Logits processor that records ``time.perf_counter()`` at every generation step."""

    def __init__(self) -> None:
        self.stamps: list[float] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self.stamps.append(time.perf_counter())
        return scores


def build_model(name: str):
    """(model, one scan [3, H, W, D]) for ``demo`` or ``cpu-small``."""
    from radfm.model.config import RadFMConfig
    from radfm.model.radfm import RadFMForConditionalGeneration

    if name == "demo":
        if not (DEMO_DIR / "config.json").is_file():
            raise FileNotFoundError(f"demo model not found at {DEMO_DIR}")
        model = RadFMForConditionalGeneration.from_pretrained(DEMO_DIR)
        scan_shape = (3, 128, 128, 8)
    elif name == "cpu-small":
        torch.manual_seed(0)
        model = RadFMForConditionalGeneration(RadFMConfig.preset("cpu-small"))
        scan_shape = (3, 256, 256, 16)
    else:
        raise ValueError(f"unknown model {name!r}; choose demo or cpu-small")
    generator = torch.Generator().manual_seed(0)
    return model.eval(), torch.rand(scan_shape, generator=generator)


def prompts(model, n_text: int = TEXT_TOKENS) -> tuple[torch.Tensor, torch.Tensor]:
    """(RadFM prompt ids with one image block, bare-LM prompt ids of the same length), both [1, L]."""
    from radfm.model.processing import image_token_ids

    vocab = model.config.base_vocab_size
    generator = torch.Generator().manual_seed(1)
    text = torch.randint(3, vocab, (n_text,), generator=generator).tolist()
    bos = model.language_model.config.bos_token_id or 1
    ours = [bos] + image_token_ids(vocab, 0) + text
    bare = [bos] + torch.randint(3, vocab, (len(ours) - 1,), generator=generator).tolist()
    return torch.tensor([ours]), torch.tensor([bare])


def run_once(generate, new_tokens: int) -> tuple[float, list[float], torch.Tensor]:
    """(prefill seconds, per-token decode seconds, new ids) of one greedy generate call."""
    from transformers import LogitsProcessorList

    clock = StepClock()
    start = time.perf_counter()
    output = generate(logits_processor=LogitsProcessorList([clock]), max_new_tokens=new_tokens,
                      min_new_tokens=new_tokens, do_sample=False)
    stamps = clock.stamps
    decode = [b - a for a, b in zip(stamps[:-1], stamps[1:])]  # each gap: one decode forward + token choice
    return stamps[0] - start, decode, output


def median_time(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench(name: str, new_tokens: int, repeats: int, dtype: torch.dtype) -> dict[str, float]:
    """Medians for one model: prefill and decode per token of both sides, plus RadFM's prefill split."""
    from radfm.model.embedding import embed_with_images

    model, scan = build_model(name)
    model.to(dtype)
    scan = scan.to(dtype)
    ours_ids, bare_ids = prompts(model)
    language_model = model.language_model

    def ours(**kwargs):
        return model.generate(ours_ids, images=[[scan]], attention_mask=torch.ones_like(ours_ids), **kwargs)

    def bare(**kwargs):
        return language_model.generate(input_ids=bare_ids, attention_mask=torch.ones_like(bare_ids),
                                       pad_token_id=language_model.config.pad_token_id, **kwargs)

    with torch.inference_mode():
        run_once(ours, 4)  # warm-up both paths
        run_once(bare, 4)
        samples: dict[str, list[float]] = {"ours_prefill": [], "bare_prefill": [], "ours_decode": [], "bare_decode": []}
        for repeat in range(repeats):
            order = (("ours", ours), ("bare", bare))
            for side, function in (order if repeat % 2 == 0 else order[::-1]):  # ABBA: no side always first
                prefill, decode, output = run_once(function, new_tokens)
                if output.shape[-1] < new_tokens:
                    raise RuntimeError(f"{name}/{side}: generated {output.shape[-1]} tokens, expected {new_tokens}")
                samples[f"{side}_prefill"].append(prefill)
                samples[f"{side}_decode"].append(statistics.median(decode))
        encode = median_time(lambda: model.encode_images([scan]), repeats)
        visual = model.encode_images([scan]).reshape(-1, model.config.hidden_size)
        splice = median_time(lambda: embed_with_images(ours_ids, language_model.get_input_embeddings(),
                                                       model.figure_token_weight, [visual],
                                                       model.config.base_vocab_size), repeats)
        embeds = model.embed(ours_ids, [[scan]])
        lm_prefill = median_time(lambda: language_model(inputs_embeds=embeds, use_cache=True), repeats)
    result = {key: statistics.median(values) for key, values in samples.items()}
    result.update(image_encoding=encode, embedding_splice=splice, lm_prompt_forward=lm_prefill,
                  prompt_length=ours_ids.shape[1],
                  parameters=sum(p.numel() for p in model.parameters()),
                  lm_parameters=sum(p.numel() for p in language_model.parameters()))
    return result


def table(results: dict[str, dict[str, float]], new_tokens: int, repeats: int, dtype: torch.dtype) -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [f"Greedy, {new_tokens} new tokens, {repeats} interleaved runs per side in ABBA order (medians over "
             f"runs; a run's decode time = median of its per-token gaps), {dtype}, {torch.get_num_threads()} threads, load average {load:.2f}", "",
             "| model | prompt tokens | ours prefill ms | bare prefill ms | prefill ratio | ours decode ms/token "
             "| bare decode ms/token | decode ratio | image encoding ms | embedding splice ms | LM prompt forward ms |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        lines.append(
            f"| {name} ({r['parameters'] / 1e6:.1f} M, LM {r['lm_parameters'] / 1e6:.1f} M) | {r['prompt_length']} "
            f"| {1e3 * r['ours_prefill']:.2f} | {1e3 * r['bare_prefill']:.2f} | {r['ours_prefill'] / r['bare_prefill']:.2f} "
            f"| {1e3 * r['ours_decode']:.3f} | {1e3 * r['bare_decode']:.3f} | {r['ours_decode'] / r['bare_decode']:.3f} "
            f"| {1e3 * r['image_encoding']:.2f} | {1e3 * r['embedding_splice']:.2f} | {1e3 * r['lm_prompt_forward']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="demo,cpu-small")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--threads", type=int, default=0, help="torch threads for both sides (0: torch's default)")
    parser.add_argument("--output", help="also write the Markdown table here")
    args = parser.parse_args()
    if args.new_tokens < 3:
        parser.error("--new-tokens must be >= 3 (decode time needs at least two gaps)")
    dtype = getattr(torch, args.dtype)
    if args.threads:
        torch.set_num_threads(args.threads)
    results = {}
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        results[name] = bench(name, args.new_tokens, args.repeats, dtype)
        print(f"{name}: done", flush=True)
    text = table(results, args.new_tokens, args.repeats, dtype)
    print(text)
    if args.output:
        from radfm.utils.io import atomic_write_text

        atomic_write_text(args.output, text)


if __name__ == "__main__":
    main()
