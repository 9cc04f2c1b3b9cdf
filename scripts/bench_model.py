"""Benchmarks for the RadFM network (issue: the RadFM network). Prints Markdown; --output writes it.

Sections (all measured side by side in one run):
  vision    vision encoder + perceiver at the published size (768 wide, 12 layers) for
            256×256×64, 512×512×4 and 512×512×64: time, achieved GFLOP/s and the ratio to
            this machine's matmul peak measured in the same run (fp32, and bf16).
  generate  8 prompts generated as one left-padded batch vs one by one (small config).
  load      a generated official-format checkpoint (≥ 2 GB): peak RSS / size of loaded weights
            for RadFMForConditionalGeneration.from_official vs naive torch.load + load_state_dict, each in a subprocess.
  folder    the same weights saved as a model folder (safetensors) and loaded back the way
            ``radfm.load`` does on the CPU, fp32 and bf16, every weight touched once after loading
            (memory-mapped weights count once used), in a subprocess: peak RSS / checkpoint size. ``--code DIR`` runs the child on another copy of the
            package (e.g. ``git archive`` of an older commit) to compare before/after.

    python scripts/bench_model.py [--sections vision,generate,load,folder] [--output bench_model.md]
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
from pathlib import Path

import torch

from radfm.model.config import PerceiverConfig, RadFMConfig, VisionConfig
from radfm.utils.io import atomic_write_text


# ---- timing helpers -------------------------------------------------------------------------
def timed(fn, repeats: int, warmup: int = 1) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_peak_gflops(dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> float:
    """Best GFLOP/s of a square matmul: the machine's practical peak for this dtype."""
    a = torch.randn(size, size, dtype=dtype)
    b = torch.randn(size, size, dtype=dtype)
    a @ b
    best = min(timed(lambda: a @ b, 1, warmup=0) for _ in range(repeats))
    return 2 * size**3 / best / 1e9


# ---- vision -----------------------------------------------------------------------------------
def vision_flops(shape: tuple[int, int, int], v: VisionConfig, p: PerceiverConfig) -> float:
    """Multiply-add FLOPs (×2) of the matmuls in ViT + perceiver for one ``[3, H, W, D]`` image."""
    h, w, d = shape
    n = (h // v.patch_size) * (w // v.patch_size) * (d // v.frame_patch_size)
    inner = v.heads * v.dim_head
    flops = 2 * n * v.patch_dim * v.dim  # patch projection
    per_block = 2 * n * v.dim * 3 * inner + 2 * 2 * n * n * inner + 2 * n * inner * v.dim + 2 * 2 * n * v.dim * v.mlp_dim
    flops += v.depth * per_block
    lat = p.num_latents
    p_inner = p.heads * p.dim_head
    per_layer = (
        2 * lat * v.dim * p_inner  # q
        + 2 * (n + lat) * v.dim * 2 * p_inner  # k, v
        + 2 * 2 * lat * (n + lat) * p_inner  # attention
        + 2 * lat * p_inner * v.dim  # out
        + 2 * 2 * lat * v.dim * v.dim * p.ff_mult  # feed-forward
    )
    return flops + p.depth * per_layer


def bench_vision(repeats: int) -> list[str]:
    from radfm.model.perceiver import PerceiverResampler
    from radfm.model.vision import VisionEncoder3D

    v, p = VisionConfig(), PerceiverConfig()
    torch.manual_seed(0)
    encoder, perceiver = VisionEncoder3D(v).eval(), PerceiverResampler(v.dim, p).eval()
    peaks = {torch.float32: matmul_peak_gflops(torch.float32), torch.bfloat16: matmul_peak_gflops(torch.bfloat16)}
    lines = [
        f"threads: {torch.get_num_threads()}; matmul peak (2048², best of 5): fp32 {peaks[torch.float32]:.1f} GFLOP/s, "
        f"bf16 {peaks[torch.bfloat16]:.1f} GFLOP/s",
        "",
        "| image | dtype | tokens | GFLOP | time (s) | GFLOP/s | % of matmul peak |",
        "|---|---|---|---|---|---|---|",
    ]
    for dtype in (torch.float32, torch.bfloat16):
        encoder.to(dtype)
        perceiver.to(dtype)
        for shape in ((256, 256, 64), (512, 512, 4), (512, 512, 64)):
            image = torch.rand(1, 3, *shape, dtype=dtype)
            with torch.inference_mode():
                seconds = timed(lambda image=image: perceiver(encoder(image)), repeats)
            gflop = vision_flops(shape, v, p) / 1e9
            tokens = (shape[0] // 32) * (shape[1] // 32) * (shape[2] // 4)
            rate = gflop / seconds
            lines.append(
                f"| {shape[0]}×{shape[1]}×{shape[2]} | {str(dtype).removeprefix('torch.')} | {tokens} | {gflop:.1f} | "
                f"{seconds:.3f} | {rate:.1f} | {100 * rate / peaks[dtype]:.0f}% |"
            )
            print(lines[-1], flush=True)
    return lines


# ---- generation -------------------------------------------------------------------------------
def bench_generate(repeats: int, new_tokens: int = 32) -> list[str]:
    from radfm.model.processing import encode_prompts
    from radfm.model.radfm import RadFMForConditionalGeneration
    from radfm.model.tokenizer import train_tokenizer

    corpus = ["Findings: a bright lesion in the left upper lung. Impression: pneumothorax. Is this CT or MRI?"] * 20
    tokenizer = train_tokenizer(corpus, vocab_size=300)
    vocab = tokenizer.convert_tokens_to_ids("<image>")
    config = RadFMConfig.preset(
        "tiny", vocab_size=vocab, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
        num_attention_heads=8, num_key_value_heads=8,
    )
    torch.manual_seed(0)
    model = RadFMForConditionalGeneration(config).eval()
    shapes = [(512, 512, 4), (64, 64, 16), (512, 512, 4), (64, 64, 32)]
    prompts, images = [], []
    for i in range(8):
        n = 1 + i % 3
        prompts.append("<image> " * n + "Please caption this scan with findings." + " Is it CT?" * (i % 4))
        images.append([torch.rand(3, *shapes[(i + j) % 4]) for j in range(n)])
    kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens)  # same work whatever the tokens

    def run(batch_prompts, batch_images):
        ids, mask = encode_prompts(tokenizer, batch_prompts, [len(i) for i in batch_images], base_vocab_size=vocab)
        return model.generate(input_ids=ids, images=batch_images, attention_mask=mask, **kwargs)

    batched = timed(lambda: run(prompts, images), repeats)
    single = timed(lambda: [run([p], [im]) for p, im in zip(prompts, images)], repeats)
    total = 8 * new_tokens
    lines = [
        f"config: tiny vision, LLaMA 256 wide × 4 layers, 8 prompts with 1–3 images (2D and 3D), {new_tokens} new tokens each",
        "",
        "| mode | time (s) | new tokens/s |",
        "|---|---|---|",
        f"| batch of 8 | {batched:.2f} | {total / batched:.0f} |",
        f"| one by one | {single:.2f} | {total / single:.0f} |",
        f"| **speed-up** | | **{single / batched:.1f}×** |",
    ]
    print("\n".join(lines[-3:]), flush=True)
    return lines


# ---- loading ----------------------------------------------------------------------------------
def _load_config(hidden: int, layers: int) -> RadFMConfig:
    return RadFMConfig.preset(
        "radfm-14b", hidden_size=hidden, intermediate_size=int(hidden * 2.6875), num_hidden_layers=layers,
        num_attention_heads=hidden // 128, num_key_value_heads=hidden // 128,
    )


def write_official_checkpoint(path: Path, hidden: int, layers: int) -> None:
    """A random checkpoint in the published layout (incl. leftovers the loader must drop)."""
    from radfm.model.official import official_key_to_ours
    from radfm.model.radfm import RadFMForConditionalGeneration

    model = RadFMForConditionalGeneration(_load_config(hidden, layers))
    official: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        published = [c for c in _published_names(name) if official_key_to_ours(c) == name]
        if len(published) != 1:
            raise RuntimeError(f"no unique published name for {name}: {published}")
        official[published[0]] = tensor
    official["lang_model.model.embed_tokens.weight"] = official["embedding_layer.weight"]  # shared, as published
    for layer in range(layers):
        official[f"lang_model.model.layers.{layer}.self_attn.rotary_emb.inv_freq"] = torch.rand(64)
    official["embedding_layer.bert_projection_fc.weight"] = torch.rand(768, 768)
    official["embedding_layer.cls_head.weight"] = torch.rand(1, 96)
    torch.save(official, path)


def _published_names(ours: str) -> list[str]:
    """Published-layout candidates for one of our names (inverse of the converter's rules)."""
    import re

    rules = [
        (r"^language_model\.model\.embed_tokens\.weight$", "embedding_layer.weight"),
        (r"^language_model\.(.*)$", r"lang_model.\1"),
        (r"^figure_token_weight$", "embedding_layer.figure_token_weight"),
        (r"^projection\.(.*)$", r"embedding_layer.fc.\1"),
        (r"^vision_encoder\.patch_embedding\.input_norm\.(.*)$", r"embedding_layer.vision_encoder.to_patch_embedding.1.\1"),
        (r"^vision_encoder\.patch_embedding\.projection\.(.*)$", r"embedding_layer.vision_encoder.to_patch_embedding.2.\1"),
        (r"^vision_encoder\.patch_embedding\.output_norm\.(.*)$", r"embedding_layer.vision_encoder.to_patch_embedding.3.\1"),
        (r"^vision_encoder\.position_embedding\.(row|col)\.(.*)$", r"embedding_layer.vision_encoder.pos_embedding.\1_embed.\2"),
        (r"^vision_encoder\.position_embedding\.depth\.(.*)$", r"embedding_layer.vision_encoder.pos_embedding.dep_embed.\1"),
        (r"^vision_encoder\.blocks\.(\d+)\.attention_norm\.(.*)$", r"embedding_layer.vision_encoder.transformer.layers.\1.0.norm.\2"),
        (r"^vision_encoder\.blocks\.(\d+)\.attention\.qkv\.(.*)$", r"embedding_layer.vision_encoder.transformer.layers.\1.0.fn.to_qkv.\2"),
        (r"^vision_encoder\.blocks\.(\d+)\.attention\.out\.(.*)$", r"embedding_layer.vision_encoder.transformer.layers.\1.0.fn.to_out.0.\2"),
        (r"^vision_encoder\.blocks\.(\d+)\.mlp_norm\.(.*)$", r"embedding_layer.vision_encoder.transformer.layers.\1.1.norm.\2"),
        (r"^vision_encoder\.blocks\.(\d+)\.mlp\.fc1\.(.*)$", r"embedding_layer.vision_encoder.transformer.layers.\1.1.fn.net.0.\2"),
        (r"^vision_encoder\.blocks\.(\d+)\.mlp\.fc2\.(.*)$", r"embedding_layer.vision_encoder.transformer.layers.\1.1.fn.net.3.\2"),
        (r"^perceiver\.latents$", "embedding_layer.perceiver.latents"),
        (r"^perceiver\.layers\.(\d+)\.attention\.(.*)$", r"embedding_layer.perceiver.layers.\1.0.\2"),
        (r"^perceiver\.layers\.(\d+)\.feed_forward\.norm\.(.*)$", r"embedding_layer.perceiver.layers.\1.1.0.\2"),
        (r"^perceiver\.layers\.(\d+)\.feed_forward\.fc1\.(.*)$", r"embedding_layer.perceiver.layers.\1.1.1.\2"),
        (r"^perceiver\.layers\.(\d+)\.feed_forward\.fc2\.(.*)$", r"embedding_layer.perceiver.layers.\1.1.3.\2"),
        (r"^perceiver\.norm\.(.*)$", r"embedding_layer.perceiver.norm.\1"),
    ]
    return [re.sub(p, r, ours) for p, r in rules if re.match(p, ours)]


_LOAD_CHILD = r"""
import json, resource, sys, torch
mode, path, llm_json, dtype = sys.argv[1:5]
from radfm.model.config import RadFMConfig
from radfm.model.radfm import RadFMForConditionalGeneration
from radfm.model.official import infer_official_sizes, map_official_keys
llm = json.loads(llm_json)
import transformers.models.llama.modeling_llama  # library code counts as startup, not as loading
baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
if mode == "ours":
    model = RadFMForConditionalGeneration.from_official(path, llm_config=llm, dtype=None if dtype == "none" else dtype, progress=False)
else:  # the usual path: build the model for real, torch.load the whole file, load_state_dict
    state = torch.load(path, map_location="cpu", weights_only=True)
    vision, perceiver = infer_official_sizes(state)
    model = RadFMForConditionalGeneration(RadFMConfig(text_config=llm, vision_config=vision, perceiver_config=perceiver))
    mapping, _, _ = map_official_keys(state)
    model.load_state_dict({ours: state[key] for key, ours in mapping.items()}, strict=True)
    del state
weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"peak": peak, "baseline": baseline, "weights": weights}))
"""


def bench_load(size_gb: float, keep: Path | None) -> list[str]:
    # LLaMA-shaped LLM sized so that the whole fp32 file is about size_gb
    hidden, layers = 2048, max(1, round((size_gb * 1e9 / 4 - 2 * 32000 * 2048 - 100e6) / (4 * 2048**2 + 3 * 2048 * 5504)))
    workdir = keep or Path(tempfile.mkdtemp(prefix="radfm-bench-"))
    path = workdir / "pytorch_model.bin"
    llm = _load_config(hidden, layers).llm
    if not path.exists():
        print(f"writing a {layers}-layer, {hidden}-wide official-format checkpoint to {path} …", flush=True)
        subprocess.run(
            [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
             f"import bench_model as b; from pathlib import Path; b.write_official_checkpoint(Path({str(path)!r}), {hidden}, {layers})"],
            check=True,
        )
    file_gb = path.stat().st_size / 1e9
    lines = [
        f"file: {file_gb:.2f} GB fp32 official layout (LLaMA {hidden} wide × {layers} layers + published vision/perceiver)",
        "",
        "| loader | dtype | loaded weights (GB) | peak RSS (GB) | peak / weights | (peak − startup) / weights |",
        "|---|---|---|---|---|---|",
    ]
    for mode, dtype in (("ours", "none"), ("ours", "bfloat16"), ("naive", "none")):
        out = subprocess.run(
            [sys.executable, "-c", _LOAD_CHILD, mode, str(path), json.dumps(llm), dtype],
            capture_output=True, text=True,
        )
        if out.returncode != 0:
            raise RuntimeError(f"load subprocess ({mode}, {dtype}) failed:\n{out.stderr[-3000:]}")
        result = json.loads(out.stdout.strip().splitlines()[-1])
        name = "RadFMForConditionalGeneration.from_official (meta + mmap + per-tensor copy)" if mode == "ours" else "naive torch.load + load_state_dict"
        lines.append(
            f"| {name} | {'float32' if dtype == 'none' else dtype} | {result['weights'] / 1e9:.2f} | {result['peak'] / 1e9:.2f} | "
            f"{result['peak'] / result['weights']:.2f}× | {(result['peak'] - result['baseline']) / result['weights']:.2f}× |"
        )
        print(lines[-1], flush=True)
    if keep is None:
        path.unlink()
        workdir.rmdir()
    return lines


_FOLDER_CHILD = r"""
import json, resource, sys, torch
folder, dtype = sys.argv[1:3]
import radfm
from radfm.model.radfm import RadFMForConditionalGeneration
try:
    from radfm.model.loading import _load_weights  # radfm.load's weight loading (dtype cast included)
except ImportError:
    _load_weights = None
import transformers.models.llama.modeling_llama  # library code counts as startup, not as loading
baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
dtype = "float32" if dtype == "none" else dtype
if _load_weights is not None:  # transformers' from_pretrained, as radfm.load calls it
    from pathlib import Path
    model = _load_weights(Path(folder), device="cpu", dtype=dtype, device_map=None, max_memory=None,
                          offload_folder=None, quantization=None)
else:  # the hand-written loader before
    model = RadFMForConditionalGeneration.from_pretrained(folder, dtype=getattr(torch, dtype), device="cpu")
# touch every weight once: memory-mapped weights count in RSS once they are used
touched = sum(float(t.sum()) for t in model.state_dict().values() if t.is_floating_point())
weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"peak": peak, "baseline": baseline, "weights": weights, "code": radfm.__file__}))
"""


def bench_folder(size_gb: float, keep: Path | None, code: Path | None) -> list[str]:
    """Peak RSS of loading a saved model folder, relative to the checkpoint's size on disk."""
    hidden, layers = 2048, max(1, round((size_gb * 1e9 / 4 - 2 * 32000 * 2048 - 100e6) / (4 * 2048**2 + 3 * 2048 * 5504)))
    workdir = keep or Path(tempfile.mkdtemp(prefix="radfm-bench-"))
    env = dict(os.environ)
    if code is not None:
        env["PYTHONPATH"] = f"{code}{os.pathsep}{env.get('PYTHONPATH', '')}"
    folder = workdir / ("folder" if code is None else "folder-" + code.name)
    if not folder.exists():
        print(f"writing a {layers}-layer, {hidden}-wide model folder to {folder} …", flush=True)
        subprocess.run(
            [sys.executable, "-c", "import sys, torch; from radfm.model.radfm import RadFMForConditionalGeneration; "
             f"sys.path.insert(0, {str(Path(__file__).parent)!r}); import bench_model as b; torch.manual_seed(0); "
             f"RadFMForConditionalGeneration(b._load_config({hidden}, {layers})).save_pretrained({str(folder)!r}, max_shard_size='1GB')"],
            check=True, env=env,
        )
    file_gb = sum(p.stat().st_size for p in folder.glob("*.safetensors")) / 1e9
    lines = [
        f"folder: {file_gb:.2f} GB of fp32 safetensors (LLaMA {hidden} wide × {layers} layers + published vision/perceiver)"
        + (f"; code: {code}" if code else ""),
        "",
        "| loader | dtype | loaded weights (GB) | peak RSS (GB) | peak / checkpoint | (peak − startup) / checkpoint |",
        "|---|---|---|---|---|---|",
    ]
    for dtype in ("none", "bfloat16"):
        out = subprocess.run([sys.executable, "-c", _FOLDER_CHILD, str(folder), dtype], capture_output=True,
                             text=True, env=env)
        if out.returncode != 0:
            raise RuntimeError(f"folder load subprocess ({dtype}) failed:\n{out.stderr[-3000:]}")
        result = json.loads(out.stdout.strip().splitlines()[-1])
        size = file_gb * 1e9
        lines.append(
            f"| radfm.load weights ({result['code']}) | {'float32' if dtype == 'none' else dtype} | "
            f"{result['weights'] / 1e9:.2f} | {result['peak'] / 1e9:.2f} | {result['peak'] / size:.2f}× | "
            f"{(result['peak'] - result['baseline']) / size:.2f}× |"
        )
        print(lines[-1], flush=True)
    if keep is None:
        import shutil

        shutil.rmtree(workdir)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", default="vision,generate,load")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--load-size-gb", type=float, default=2.2)
    parser.add_argument("--keep-checkpoint", type=Path, default=None, help="folder to keep/reuse the generated checkpoint")
    parser.add_argument("--output", type=Path, default=None, help="write the Markdown report here")
    parser.add_argument("--code", type=Path, default=None,
                        help="folder section: run the child on this copy of the package (PYTHONPATH), for before/after")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sections = args.sections.split(",")
    report = [f"# RadFM model benchmark\n\ntorch {torch.__version__}, {os.cpu_count()} CPUs visible, "
              f"{torch.get_num_threads()} threads; shared machine: expect noise.\n"]
    if "vision" in sections:
        report += ["## Vision encoder + perceiver (published size, batch 1, inference)", ""] + bench_vision(args.repeats) + [""]
    if "generate" in sections:
        report += ["## Batched vs one-by-one generation", ""] + bench_generate(args.repeats) + [""]
    if "load" in sections:
        report += ["## Loading an official-format checkpoint", ""] + bench_load(args.load_size_gb, args.keep_checkpoint) + [""]
    if "folder" in sections:
        report += ["## Loading a saved model folder", ""] + bench_folder(args.load_size_gb, args.keep_checkpoint,
                                                                          args.code) + [""]
    text = "\n".join(report)
    print("\n" + text)
    if args.output:
        atomic_write_text(args.output, text)


if __name__ == "__main__":
    main()
