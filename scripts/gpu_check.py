"""One-shot GPU check: measured speed and memory against the physical limits, as one Markdown table.

    python scripts/gpu_check.py [--device auto|cuda|cpu] [--sections decode,vision,memory,fsdp]
                                [--output gpu_check.md]
    .venv-vllm/bin/python scripts/gpu_check.py --sections engines   # the engines table (vLLM environment)

On one CUDA GPU (about 5-8 minutes on an 80 GB-class card):

* ``decode``: bf16 greedy decode tokens/s of a 13B-shaped LLaMA (RadFM's ``radfm-14b`` preset,
  random init: built on the meta device, materialised on the GPU, no download) with one
  256x256x64 scan, against the memory-bandwidth bound = measured copy bandwidth / bytes of
  weights read per token;
* ``vision``: vision encoder + perceiver (published size) on one 512x512x64 scan in bf16, achieved
  FLOP/s against the measured bf16 matmul peak;
* ``memory``: the 13B-shaped model saved with ``save_pretrained`` and loaded back through
  ``radfm.load`` in bf16, 8-bit and 4-bit (bitsandbytes; skipped with a note
  when not installed): ``torch.cuda.max_memory_allocated`` after loading and after one generate,
  against ``radfm info --plan``'s weights and peak (``radfm.model.memory_plan``);
* ``fsdp``: three FSDP training steps of the instruct bundle (``torchrun --nproc_per_node=1``,
  the bundle's FSDP mixin, the demo model, phantom data);
* ``batch`` (only when named, ``--sections batch``): ``radfm batch`` with the 13B-shaped model on the
  GPU (one actor, bf16) fed by CPU read workers, against ``radfm evaluate`` on the same 64 phantom
  studies (DICOM CT series and X-rays): studies per minute and peak RSS (docs/batch.md).
* ``engines`` (by name only; the vLLM environment): scripts/bench_engines.py's table for the
  13B-shaped model (random weights saved as a folder, one 256x256x64 scan per request, 64 new
  tokens): output tokens/s at 1/4/8/16 clients, TTFT and TPOT through ``radfm serve``, the
  transformers engine vs the vLLM engine, in bf16 and 8-bit (bitsandbytes / FP8).

Without CUDA (``--device cpu``, or no GPU) the same code runs at tiny sizes in seconds: a small
LLaMA, 64x64x8 scans, the tiny vision preset, fp32 FSDP over gloo; memory rows say "n/a (CPU)".
``tests/scripts/test_gpu_check.py`` runs it that way so the script cannot rot.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "radfm"
sys.path.insert(0, str(Path(__file__).resolve().parent))

# The instruct stage's bundle config files, relative to the bundle root, in merge order, with the
# FSDP mixin last. Keep it the only place the list is written.
INSTRUCT_FSDP_CONFIGS = ("configs/train.json", "configs/instruct.json", "configs/multi_gpu_fsdp.json")
SECTIONS = ("decode", "vision", "memory", "fsdp")  # the default run
OPTIONAL_SECTIONS = ("batch", "engines")  # run by name: batch writes the 14B to disk (~30 GB); engines needs the vLLM environment
GIB = 1024**3


@dataclass
class Sizes:
    """Problem sizes of one mode (full on CUDA, tiny on CPU)."""

    llm_preset: str
    llm_overrides: dict
    decode_scan: tuple[int, int, int]
    vision_full: bool
    vision_scan: tuple[int, int, int]
    new_tokens: int
    copy_bytes: int
    matmul_size: int
    fsdp_model: str

    @classmethod
    def for_device(cls, device: torch.device) -> Sizes:
        if device.type == "cuda":
            return cls("radfm-14b", {}, (256, 256, 64), True, (512, 512, 64), 64, 2 * GIB, 8192, "demo")
        tiny_llm = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=4, vocab_size=1000, max_position_embeddings=512)
        return cls("radfm-14b", tiny_llm, (64, 64, 8), False, (64, 64, 8), 8, 32 * 1024**2, 256, "tiny")


# ---- helpers ------------------------------------------------------------------------------------
def si(value: float, unit: str) -> str:
    """``value`` with a k/M/G/T prefix, e.g. si(3.2e12, "FLOP/s") -> "3.20 TFLOP/s"."""
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.2f} {prefix}{unit}"
    return f"{value:.2f} {unit}"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(function, device: torch.device, repeats: int = 5, warmup: int = 1) -> float:
    for _ in range(warmup):
        function()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def copy_bandwidth(device: torch.device, nbytes: int) -> float:
    """Bytes/s of a large device-to-device copy (read + write counted)."""
    source = torch.empty(nbytes // 2, dtype=torch.bfloat16, device=device).fill_(1.0)
    target = torch.empty_like(source)
    seconds = median_seconds(lambda: target.copy_(source), device)
    return 2 * nbytes / seconds


def matmul_peak(device: torch.device, size: int, dtype: torch.dtype = torch.bfloat16) -> float:
    """FLOP/s of a square matmul in ``dtype``: the practical peak."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    return 2 * size**3 / median_seconds(lambda: a @ b, device)


def materialise(model: torch.nn.Module, device: torch.device, dtype: torch.dtype, seed: int = 0) -> torch.nn.Module:
    """Give every meta parameter real, random storage on ``device`` (normal(0, 0.02); norms 1, biases 0)."""
    generator = torch.Generator(device=device).manual_seed(seed)
    for module in model.modules():
        for name, parameter in list(module._parameters.items()):
            if parameter is None:
                continue
            data = torch.empty(parameter.shape, device=device, dtype=dtype)
            if name == "bias":
                data.zero_()
            elif parameter.ndim >= 2 or "token_weight" in name:
                data.normal_(0.0, 0.02, generator=generator)
            else:
                data.fill_(1.0)
            module._parameters[name] = torch.nn.Parameter(data, requires_grad=False)
        for name, buffer in list(module._buffers.items()):
            if buffer is not None:
                module._buffers[name] = buffer.to(device)
    return model


def build_llm_model(sizes: Sizes, device: torch.device, dtype: torch.dtype):
    """RadFM with the 13B-shaped LLaMA (tiny on CPU), built on meta and materialised on ``device``."""
    from radfm.model.config import RadFMConfig
    from radfm.model.radfm import RadFMForConditionalGeneration

    config = RadFMConfig.preset(sizes.llm_preset, **sizes.llm_overrides)
    if not sizes.vision_full:
        config = RadFMConfig(text_config=config.text_config.to_dict(), vision_config=RadFMConfig.preset("tiny").vision_config,
                             perceiver_config=RadFMConfig.preset("tiny").perceiver_config)
    return materialise(RadFMForConditionalGeneration.empty(config), device, dtype).eval()


def prompt_ids(model) -> torch.Tensor:
    from radfm.model.processing import image_token_ids

    vocab = model.config.base_vocab_size
    text = torch.randint(3, vocab, (16,), generator=torch.Generator().manual_seed(0)).tolist()
    return torch.tensor([[1, *image_token_ids(vocab, 0), *text]])


def decode_rate(model, scan: torch.Tensor, new_tokens: int, device: torch.device) -> tuple[float, float]:
    """(decode tokens/s from the median per-token gap, prefill seconds) of one greedy generate."""
    from bench_generate import StepClock
    from transformers import LogitsProcessorList

    ids = prompt_ids(model)
    with torch.inference_mode():
        model.generate(ids, images=[[scan]], max_new_tokens=2, min_new_tokens=2)  # warm-up
        synchronize(device)
        clock = StepClock()
        start = time.perf_counter()
        model.generate(ids, images=[[scan]], max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                       logits_processor=LogitsProcessorList([clock]))
        synchronize(device)
    gaps = [b - a for a, b in zip(clock.stamps[:-1], clock.stamps[1:])]
    return 1.0 / statistics.median(gaps), clock.stamps[0] - start


def weight_bytes_per_token(model) -> int:
    """Bytes of the language model's weights read for one token (all but the embedding table: one row)."""
    llm = model.language_model
    embedding = llm.get_input_embeddings().weight
    total = sum(p.numel() * p.element_size() for p in llm.parameters())
    return total - embedding.numel() * embedding.element_size() + embedding.shape[1] * embedding.element_size()


# ---- sections -----------------------------------------------------------------------------------
def check_decode(sizes: Sizes, device: torch.device, state: dict) -> list[tuple[str, str, str, str]]:
    model = build_llm_model(sizes, device, torch.bfloat16)
    state["model"] = model
    scan = torch.rand((3, *sizes.decode_scan), generator=torch.Generator().manual_seed(0)).to(device, torch.bfloat16)
    rate, prefill = decode_rate(model, scan, sizes.new_tokens, device)
    bandwidth = copy_bandwidth(device, sizes.copy_bytes)
    per_token = weight_bytes_per_token(model)
    bound = bandwidth / per_token
    llm_params = sum(p.numel() for p in model.language_model.parameters())
    shape = "x".join(map(str, sizes.decode_scan))
    return [(f"bf16 decode, {si(llm_params, '')}-parameter LLaMA + one {shape} scan",
             f"{rate:.2f} tokens/s (prefill {1e3 * prefill:.0f} ms)",
             f"{bound:.2f} tokens/s = {si(bandwidth, 'B/s')} copy / {si(per_token, 'B')} per token",
             f"{rate / bound:.2f}")]


def check_vision(sizes: Sizes, device: torch.device, state: dict) -> list[tuple[str, str, str, str]]:
    from bench_model import vision_flops

    from radfm.model.config import PerceiverConfig, RadFMConfig, VisionConfig
    from radfm.model.perceiver import PerceiverResampler
    from radfm.model.vision import VisionEncoder3D

    vision, perceiver = (VisionConfig(), PerceiverConfig()) if sizes.vision_full else (
        RadFMConfig.preset("tiny").vision_config, RadFMConfig.preset("tiny").perceiver_config)
    torch.manual_seed(0)
    encoder = VisionEncoder3D(vision).to(device, torch.bfloat16).eval()
    resampler = PerceiverResampler(vision.dim, perceiver).to(device, torch.bfloat16).eval()
    scan = torch.rand((1, 3, *sizes.vision_scan), device=device).to(torch.bfloat16)
    with torch.inference_mode():
        seconds = median_seconds(lambda: resampler(encoder(scan)), device, repeats=3)
    flops = vision_flops(sizes.vision_scan, vision, perceiver)
    peak = matmul_peak(device, sizes.matmul_size)
    shape = "x".join(map(str, sizes.vision_scan))
    return [(f"bf16 vision encode + perceiver, one {shape} scan ({'published' if sizes.vision_full else 'tiny'} size)",
             f"{1e3 * seconds:.1f} ms = {si(flops / seconds, 'FLOP/s')}",
             f"{si(peak, 'FLOP/s')} bf16 matmul ({sizes.matmul_size}^3)", f"{flops / seconds / peak:.2f}")]


def plan_numbers() -> dict[str, tuple[float, float]]:
    """(weights GiB, peak GiB) on GPU 0 from ``radfm info --plan`` for bf16 / 8-bit / 4-bit on one GPU."""
    from radfm.model.memory_plan import count_parameters, default_modes, default_spec_path, plan

    counts = count_parameters(default_spec_path())
    wanted = {"bf16": "bf16/fp16, 1×80 GiB GPU", "8bit": "int8 (bitsandbytes), 1×24 GiB GPU",
              "4bit": "nf4 4-bit (bitsandbytes), 1×16 GiB GPU"}
    modes = {mode.name: mode for mode in default_modes()}
    numbers = {}
    for key, name in wanted.items():
        result = plan(counts, modes[name])
        numbers[key] = (result.gpu_weights[0], result.gpu_peak[0])
    return numbers


def check_memory(sizes: Sizes, device: torch.device, state: dict) -> list[tuple[str, str, str, str]]:
    from radfm.model.loading import load, tiny_tokenizer

    planned = plan_numbers()
    model = state.pop("model", None) or build_llm_model(sizes, device, torch.bfloat16)
    rows = []
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as folder:
        model.save_pretrained(folder, tokenizer=tiny_tokenizer(base_vocab_size=model.config.base_vocab_size))
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
        scan = torch.rand((3, *sizes.decode_scan), generator=torch.Generator().manual_seed(0))
        try:
            import bitsandbytes  # noqa: F401
            quantized_note = None
        except ImportError:
            quantized_note = "skipped: bitsandbytes not installed"
        for mode in ("bf16", "8bit", "4bit"):
            weights_plan, peak_plan = planned[mode]
            label = f"GPU memory, {mode} loading (radfm.load) + one generate"
            reference = f"plan: weights {weights_plan:.1f} GiB, peak {peak_plan:.1f} GiB"
            if device.type != "cuda":
                if mode == "bf16":  # the load path still runs, so it cannot rot
                    loaded, _ = load(folder, dtype="bfloat16", device="cpu")
                    with torch.inference_mode():
                        loaded.generate(prompt_ids(loaded), images=[[scan.to(torch.bfloat16)]], max_new_tokens=2)
                    del loaded
                rows.append((label, "n/a (CPU: no torch.cuda.max_memory_allocated)", reference, "-"))
                continue
            if mode != "bf16" and quantized_note:
                rows.append((label, quantized_note, reference, "-"))
                continue
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            loaded, _ = load(folder, dtype="bfloat16", device=str(device),
                                quantization=None if mode == "bf16" else mode)
            after_load = torch.cuda.max_memory_allocated(device) / GIB
            with torch.inference_mode():
                loaded.generate(prompt_ids(loaded), images=[[scan.to(device, torch.bfloat16)]], max_new_tokens=8)
            peak = torch.cuda.max_memory_allocated(device) / GIB
            del loaded
            rows.append((label, f"after load {after_load:.1f} GiB, peak {peak:.1f} GiB", reference,
                         f"{after_load / weights_plan:.2f} (weights), {peak / peak_plan:.2f} (peak)"))
    return rows


def phantom_manifests(root: Path, steps: int) -> tuple[Path, Path]:
    """Train manifest with ``steps`` samples (one per step at batch size 1) and a one-sample val manifest."""
    from radfm.data.phantoms import make_phantoms

    make_phantoms(root / "phantoms", n=4, seed=0, progress=False)
    lines = (root / "phantoms" / "train.jsonl").read_text().splitlines()
    short = [line for line in lines if json.loads(line)["task"] not in ("report", "rationale")]
    if len(short) < steps:
        raise RuntimeError(f"phantom data has {len(short)} short samples, need {steps}")
    closed = [json.loads(line) for line in lines if json.loads(line)["task"] in ("modality_inductive", "diagnosis_inductive")]
    train, val = root / "phantoms" / "check_train.jsonl", root / "phantoms" / "check_val.jsonl"  # paths are relative
    train.write_text("\n".join(short[:steps]) + "\n")
    val.write_text(json.dumps({**closed[0], "split": "val"}) + "\n")
    return train, val


def check_fsdp(sizes: Sizes, device: torch.device, state: dict, steps: int = 3) -> list[tuple[str, str, str, str]]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="gpu_check_fsdp_") as folder:
        root = Path(folder)
        train, val = phantom_manifests(root, steps)
        configs = [str(BUNDLE / name) for name in INSTRUCT_FSDP_CONFIGS]
        overrides = dict(bundle_root=str(root), run_name="check", train_manifest=str(train), val_manifest=str(val),
                         epochs=1, batching="mixed", batch_size=1, accumulation_steps=1, warmup_steps=1,
                         val_interval=0, checkpoint_every=0, max_length=256)
        if sizes.fsdp_model == "tiny":
            overrides.update(model="tiny", image_grid={"size_2d": [64, 64], "size_3d": [64, 64], "max_depth": 8})
        else:
            overrides.update(model=str(BUNDLE / "models" / "demo"))
        args = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=1", f"--master_port={port}",
                "-m", "monai.bundle", "run", "--config_file", str(configs),
                "--meta_file", str(BUNDLE / "configs" / "metadata.json")]
        if device.type != "cuda":
            args += ["--fsdp_param_dtype", "$torch.float32"]
        for key, value in overrides.items():
            args += [f"--{key}", json.dumps(value) if isinstance(value, (dict, bool)) else str(value)]
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", "0")}
        if device.type != "cuda":
            env["CUDA_VISIBLE_DEVICES"] = ""
        for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
            env.pop(name, None)
        start = time.perf_counter()
        done = subprocess.run(args, capture_output=True, text=True, timeout=600, env=env, cwd=str(REPO))
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            errors = [line for line in done.stderr.splitlines() if "Error" in line and "Traceback" not in line]
            raise RuntimeError(f"FSDP run failed (exit {done.returncode}): {errors[:3]}\n{done.stderr[-3000:]}")
        final = root / "runs" / "check" / "model" / "model.safetensors"
        if not final.is_file():
            raise RuntimeError(f"FSDP run finished but wrote no {final}")
    files = "+".join(Path(c).name for c in INSTRUCT_FSDP_CONFIGS)
    return [(f"FSDP training, {steps} steps of the instruct bundle ({files}, model {sizes.fsdp_model}), 1 "
             f"{'GPU' if device.type == 'cuda' else 'CPU process'}",
             f"passed in {seconds:.1f} s wall (incl. process start and data loading)", "final model written", "-")]


def check_batch(sizes: Sizes, device: torch.device, state: dict, studies: int = 64) -> list[tuple[str, str, str, str]]:
    """``radfm batch`` with the 13B-shaped model on one GPU fed by CPU read workers, against ``radfm evaluate``.

    The model (random init) is saved once to a temp folder; the studies are phantom DICOM CT series and
    X-rays (scripts/bench_batch.py); each command runs as its own process (load and Ray start-up included).
    """
    import bench_batch

    from radfm.model.loading import tiny_tokenizer

    cuda = device.type == "cuda"
    workers = max(1, min(12, (os.cpu_count() or 2) - 2)) if cuda else 1
    count = studies if cuda else 8
    rows = []
    with tempfile.TemporaryDirectory(prefix="gpu_check_batch_") as folder:
        root = Path(folder)
        model = state.pop("model", None) or build_llm_model(sizes, device, torch.bfloat16)
        model.save_pretrained(root / "model", tokenizer=tiny_tokenizer(base_vocab_size=model.config.base_vocab_size))
        del model
        if cuda:
            torch.cuda.empty_cache()  # the subprocesses need the GPU
        manifest = bench_batch.make_studies(root, count)
        radfm = [sys.executable, "-m", "radfm.cli"]
        common = ["--manifest", str(manifest), "--model", str(root / "model"), "--batch_size", "8",
                  "--max_new_tokens", "32", "--dtype", "bfloat16" if cuda else "float32",
                  "--device", "cuda" if cuda else "cpu"]
        runs = [("radfm evaluate", [*radfm, "evaluate", *common, "--bertscore", "False", "--n_resamples", "1"]),
                (f"radfm batch, {workers} CPU workers, 1 actor", [
                    *radfm, "batch", *common, "--read_workers", str(workers), "--actors", "1", "--num_cpus",
                    str(workers + 1), "--progress", "False", "--object_store_mb", "4096" if cuda else "200",
                    *(["--gpus_per_actor", "1"] if cuda else [])])]
        rates = {}
        for label, command in runs:
            output = root / label.split(",")[0].replace(" ", "_")
            wall, memory, code = bench_batch.run([*command, "--output", str(output)], root / f"{output.name}.log")
            if code != 0:
                raise RuntimeError(f"{label} failed (exit {code}): {(root / f'{output.name}.log').read_text()[-2000:]}")
            rates[label] = count / wall * 60
            busy = bench_batch.busy_rate(output) if "batch" in label else None
            rows.append((f"{label}: {count} studies (phantom CT series + X-rays), model {sizes.llm_preset}"
                         f"{'' if cuda else ' (tiny LLM)'}, 1 {'GPU' if cuda else 'CPU'}",
                         f"{rates[label]:.1f} studies/min (wall){'' if busy is None else f', {busy:.1f} once the model is up'}",
                         f"driver {memory['driver_mb']:.0f} MiB, workers {memory['workers_total_mb']:.0f} MiB",
                         "-" if len(rates) == 1 else f"{rates[label] / rates['radfm evaluate']:.2f}x evaluate"))
    return rows


def check_engines(sizes: Sizes, device: torch.device, state: dict) -> list[tuple[str, str, str, str]]:
    """scripts/bench_engines.py's table for the 14B-shaped model on one GPU: the transformers engine vs
    the vLLM engine through ``radfm serve``, bf16 and 8-bit (bitsandbytes on transformers, FP8 on vLLM).

    Not in the default sections: run it in the vLLM environment (``.venv-vllm/bin/python
    scripts/gpu_check.py --sections engines``; on a GPU machine that environment has the CUDA ``vllm``).
    """
    import argparse as _argparse

    import bench_engines

    from radfm.model.loading import tiny_tokenizer
    from radfm.model.processing import RadFMImageProcessor

    depth = sizes.decode_scan[2]
    model = state.pop("model", None) or build_llm_model(sizes, device, torch.bfloat16)
    rows = []
    with tempfile.TemporaryDirectory(prefix="gpu_check_engines_") as folder:
        folder = Path(folder)
        model.save_pretrained(folder / "model", tokenizer=tiny_tokenizer(base_vocab_size=model.config.base_vocab_size))
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()  # each engine runs in its own `radfm serve` process with the whole GPU
        grid = RadFMImageProcessor.from_model_dir(folder / "model").grid
        RadFMImageProcessor(**{**grid, "size_3d": sizes.decode_scan[:2], "max_depth": depth}).save_grid(folder / "model")
        scan = bench_engines.write_phantom(folder / "phantom.nii.gz", depth, size=sizes.decode_scan[:2]).read_bytes()
        args = _argparse.Namespace(clients=[1, 4, 8, 16], rounds=1, new_tokens=sizes.new_tokens, single_repeats=3)
        dtype = "bfloat16" if device.type == "cuda" else "float32"
        for mode, quantize in ((dtype.replace("bfloat16", "bf16"), None), ("8-bit", "8bit")):
            if device.type != "cuda" and quantize:
                continue  # 8-bit needs a GPU on both engines (bitsandbytes' CUDA kernels, FP8)
            by_engine = {}
            for engine in ("transformers", "vllm"):
                (folder / engine).mkdir(exist_ok=True)
                try:
                    by_engine[engine] = bench_engines.bench_engine(engine, folder / "model", scan, args, folder / engine,
                                                                   dtype=dtype, quantize=quantize, device=device.type)
                except (Exception, SystemExit) as error:  # one engine failing must not hide the other's row
                    rows.append((f"{engine} engine, {mode}", f"FAILED: {type(error).__name__}: {error}", "-", "-"))
                    continue
                r = by_engine[engine]
                rates = ", ".join(f"{t['tokens_per_s']:.0f}" for t in r["throughput"])
                rows.append((f"{engine} engine, {mode}: output tokens/s at 1/4/8/16 clients (radfm serve)", rates,
                             f"TTFT {r['ttft_s'] * 1000:.0f} ms, TPOT {r['tpot_s'] * 1000:.1f} ms", "-"))
            if len(by_engine) == 2:
                t, v = by_engine["transformers"], by_engine["vllm"]
                at8 = next(x["tokens_per_s"] for x in t["throughput"] if x["clients"] == 8)
                av8 = next(x["tokens_per_s"] for x in v["throughput"] if x["clients"] == 8)
                rows.append((f"vLLM / transformers, {mode}", f"8 clients {av8 / at8:.2f}x; TPOT "
                             f"{v['tpot_s'] / t['tpot_s']:.2f}x; TTFT {v['ttft_s'] / t['ttft_s']:.2f}x",
                             "targets: >= 4x, <= 1.2x, <= 1.1x", "-"))
    return rows


CHECKS = {"decode": check_decode, "vision": check_vision, "memory": check_memory, "fsdp": check_fsdp,
          "batch": check_batch, "engines": check_engines}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"))
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated subset of {SECTIONS + OPTIONAL_SECTIONS}")
    parser.add_argument("--output", help="also write the Markdown table here")
    args = parser.parse_args(argv)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(sections) - set(SECTIONS) - set(OPTIONAL_SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {unknown}; choose from {SECTIONS + OPTIONAL_SECTIONS}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch sees no CUDA GPU")
    use_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda", 0) if use_cuda else torch.device("cpu")
    sizes = Sizes.for_device(device)
    name = torch.cuda.get_device_name(device) if use_cuda else f"CPU ({torch.get_num_threads()} threads)"
    rows: list[tuple[str, str, str, str]] = []
    failures = 0
    state: dict = {}
    started = time.perf_counter()
    for section in sections:
        section_start = time.perf_counter()
        try:
            rows.extend(CHECKS[section](sizes, device, state))
        except Exception as error:  # one failed check must not hide the others
            failures += 1
            rows.append((section, f"FAILED: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}", "-", "-"))
            print(f"{section} failed:\n{error}", file=sys.stderr)
        print(f"{section}: {time.perf_counter() - section_start:.1f} s", file=sys.stderr, flush=True)
    lines = [f"# gpu_check on {name}, torch {torch.__version__}, {'full' if use_cuda else 'tiny (CPU)'} sizes, "
             f"{time.perf_counter() - started:.0f} s", "",
             "| check | measured | limit / reference | ratio |", "|---|---|---|---|"]
    lines += [f"| {' | '.join(row)} |" for row in rows]
    table = "\n".join(lines) + "\n"
    print(table)
    if args.output:
        from radfm.utils.io import atomic_write_text

        atomic_write_text(args.output, table)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
