"""Peak GPU/CPU memory of the 14B RadFM under each loading mode, from parameter counts alone.

Counts come from the published checkpoint's key list (``official_state_dict_keys.tsv.gz``, shipped
next to this module so the plan works from an installed wheel: key and shape per tensor), after dropping the leftovers our loader drops (BERT, decoder,
heads). Devices are filled in module order (vision parts and token embeddings first, then
decoder layers, final norm, LM head), the way accelerate's ``infer_auto_device_map`` does.

Per-GPU figure = weights placed there + KV cache of its layers + a workspace term:

* KV cache: ``2 × layers_on_gpu × hidden × bytes(kv dtype) × context tokens`` (batch 1).
* workspace: the largest transient activations of a 2048-token prefill, about
  ``3 × context × intermediate × 2 B`` for the MLP plus ``context × vocab × 4 B`` logits
  (an upper bound; generate keeps only the last position's logits), plus the vision
  encoder on 10 3D scans (small), plus ``cuda_context_gib`` for the CUDA context/allocator.

Quantized modes (bitsandbytes) quantize the decoder's Linear weights; embeddings, norms,
the LM head and the vision parts stay in fp16. int8 = 1 byte/weight (+ fp32 row scales);
nf4 = 0.5 byte/weight + double-quantized block constants (blocksize 64).
"""

from __future__ import annotations

import gzip
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

GIB = 1024**3
DROPPED_PREFIXES = (
    "embedding_layer.bert_model.", "embedding_layer.bert_projection_fc", "embedding_layer.transformer_decoder",
    "embedding_layer.cls_head", "embedding_layer.output_upscaling",
)
SHARED_KEYS = ("embedding_layer.weight",)  # = lang_model.model.embed_tokens.weight
# the published checkpoint's key list (key<TAB>shape per tensor), package data (see setup.py)
PACKAGED_SPEC = Path(__file__).with_name("official_state_dict_keys.tsv.gz")


@dataclass
class ParameterCounts:
    """Parameter counts of the published 14B checkpoint, per part of the network."""

    vision: int = 0
    perceiver: int = 0
    projection: int = 0
    figure_tokens: int = 0
    embed_tokens: int = 0
    lm_head: int = 0
    final_norm: int = 0
    layers: dict[int, dict[str, int]] = field(default_factory=dict)  # layer -> {"linear": n, "norm": n}
    dropped: int = 0

    @property
    def vision_side(self) -> int:
        """Everything that lives next to the token embeddings: ViT, perceiver, projection, figure rows."""
        return self.vision + self.perceiver + self.projection + self.figure_tokens

    @property
    def llm(self) -> int:
        return self.embed_tokens + self.lm_head + self.final_norm + sum(sum(v.values()) for v in self.layers.values())

    @property
    def total(self) -> int:
        return self.vision_side + self.llm


def default_spec_path(extra: str | Path | None = None) -> Path:
    """The key list: ``extra`` if given (a ``.tsv`` or ``.tsv.gz``), else the copy shipped in the package."""
    path = Path(extra) if extra else PACKAGED_SPEC
    if not path.is_file():
        what = "the key list given" if extra else "the key list shipped with the package (reinstall radfm-toolkit)"
        raise FileNotFoundError(f"{path}: not found ({what}); expected 'key<TAB>shape' lines, optionally gzipped")
    return path


def _read_text(path: Path) -> str:
    """A text file, gunzipped when its name ends in ``.gz``."""
    if path.suffix == ".gz":
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            return handle.read()
    return path.read_text(encoding="utf-8")


def count_parameters(spec_path: str | Path) -> ParameterCounts:
    """Read ``key<TAB>shape`` lines (shape like ``32000x5120``; plain or gzipped) into :class:`ParameterCounts`."""
    counts = ParameterCounts()
    layer_re = re.compile(r"^lang_model\.model\.layers\.(\d+)\.(.+)$")
    for line_number, line in enumerate(_read_text(Path(spec_path)).splitlines(), 1):
        if not line.strip() or line.startswith("key\t"):
            continue
        try:
            key, shape = line.split("\t")[:2]
            numel = math.prod(int(n) for n in shape.split("x")) if shape.strip() else 1
        except ValueError as error:
            raise ValueError(f"{spec_path}:{line_number}: expected 'key<TAB>AxB', got {line!r}") from error
        if key.endswith("rotary_emb.inv_freq") or key in SHARED_KEYS:
            continue
        if key.startswith(DROPPED_PREFIXES):
            counts.dropped += numel
        elif (match := layer_re.match(key)) is not None:
            kind = "norm" if "norm" in match.group(2) else "linear"
            counts.layers.setdefault(int(match.group(1)), {"linear": 0, "norm": 0})[kind] += numel
        elif key.startswith("lang_model.model.embed_tokens"):
            counts.embed_tokens += numel
        elif key.startswith("lang_model.lm_head"):
            counts.lm_head += numel
        elif key.startswith("lang_model.model.norm"):
            counts.final_norm += numel
        elif key.startswith("embedding_layer.vision_encoder."):
            counts.vision += numel
        elif key.startswith("embedding_layer.perceiver."):
            counts.perceiver += numel
        elif key.startswith("embedding_layer.fc."):
            counts.projection += numel
        elif key == "embedding_layer.figure_token_weight":
            counts.figure_tokens += numel
        else:
            raise ValueError(f"{spec_path}:{line_number}: unexpected key {key!r}")
    return counts


@dataclass
class LLMShape:
    """Sizes that drive the KV cache and activations (MedLLaMA-13B by default)."""

    hidden: int = 5120
    intermediate: int = 13824
    vocab: int = 32000
    context: int = 2048


@dataclass
class LoadingMode:
    """How the weights are stored and where they may go (capacities in GiB; None = unbounded)."""

    name: str
    weight_bytes: float  # bytes per non-quantized weight
    gpus: list[float]  # capacity per GPU, GiB
    cpu: float | None = 0.0  # CPU RAM allowed for offloaded weights
    disk: bool = False
    linear_bytes: float | None = None  # bytes per decoder Linear weight when quantized
    note: str = ""


def _bytes_quantized(counts: ParameterCounts, layer: dict[str, int], mode: LoadingMode) -> float:
    linear_bytes = mode.linear_bytes if mode.linear_bytes is not None else mode.weight_bytes
    return layer["linear"] * linear_bytes + layer["norm"] * mode.weight_bytes


CPU_BF16_ROW = "CPU only, bf16 (only on CPUs with native bf16: AVX512-BF16, AMX or ARM bf16)"


def cpu_bf16_note(support=None) -> str:
    """One line about this machine's CPU for the plan: whether the bf16 CPU row applies here."""
    from radfm.model.cpu_bf16 import cpu_bf16_support

    support = support or cpu_bf16_support()
    if support.native is False:
        return (f"This machine's CPU: {support.describe()}. The \"CPU only, bf16\" row does not apply here: "
                "bf16 would run many times slower than fp32; plan with the \"CPU only, fp32\" row.")
    if support.native is None:
        return (f"This machine's CPU: {support.describe()}. Without native bf16 the \"CPU only, bf16\" row runs "
                "many times slower than fp32.")
    return f"This machine's CPU: {support.describe()}."


def default_modes() -> list[LoadingMode]:
    """The loading modes reported in docs/interop.md."""
    nf4 = 0.5 + 1 / 64 + 4 / (64 * 256)  # 4-bit + 8-bit absmax per 64 + fp32 per 256 blocks
    int8 = 1.0 + 4 / 5120  # int8 weights + one fp32 scale per output row (hidden 5120)
    return [
        LoadingMode("fp32, 1×80 GiB GPU", 4, [80]),
        LoadingMode("bf16/fp16, 1×80 GiB GPU", 2, [80]),
        LoadingMode("bf16, device_map=auto, 2×24 GiB GPUs", 2, [24, 24]),
        LoadingMode("bf16, 1×24 GiB GPU + CPU offload", 2, [24], cpu=None),
        LoadingMode("bf16, 1×16 GiB GPU + 8 GiB CPU + disk offload", 2, [16], cpu=8, disk=True),
        LoadingMode("int8 (bitsandbytes), 1×24 GiB GPU", 2, [24], linear_bytes=int8),
        LoadingMode("nf4 4-bit (bitsandbytes), 1×16 GiB GPU", 2, [16], linear_bytes=nf4),
        LoadingMode(CPU_BF16_ROW, 2, [], cpu=None),
        LoadingMode("CPU only, fp32", 4, [], cpu=None),
    ]


@dataclass
class Plan:
    mode: LoadingMode
    gpu_weights: list[float]
    gpu_runtime: list[float]  # KV cache + workspace on each GPU
    cpu_weights: float
    disk_weights: float
    cpu_runtime: float
    fits: bool

    @property
    def gpu_peak(self) -> list[float]:
        return [w + r for w, r in zip(self.gpu_weights, self.gpu_runtime)]


def plan(
    counts: ParameterCounts,
    mode: LoadingMode,
    shape: LLMShape = LLMShape(),  # noqa: B008 (read, never changed)
    cuda_context_gib: float = 0.6,
    shard_gib: float = 2.0,
) -> Plan:
    """Fill devices in module order and add KV cache / workspace where the layers run.

    Offloaded (CPU/disk) layers execute on GPU 0 (accelerate streams their weights in), so
    GPU 0 also holds their KV cache and one streamed layer at a time. Loading keeps at most
    one ``shard_gib`` safetensors shard in CPU RAM besides the CPU-resident weights.
    """
    kv_per_layer = 2 * shape.hidden * 2 * shape.context  # bf16/fp16 K and V for the whole context
    workspace = 3 * shape.context * shape.intermediate * 2 + shape.context * shape.vocab * 4
    fixed = workspace + cuda_context_gib * GIB
    front = (counts.vision_side + counts.embed_tokens) * mode.weight_bytes
    layer_sizes = [_bytes_quantized(counts, counts.layers[i], mode) for i in sorted(counts.layers)]
    modules: list[tuple[float, int]] = [(front, 0), *[(size, 1) for size in layer_sizes]]
    modules.append(((counts.final_norm + counts.lm_head) * mode.weight_bytes, 0))

    offloading = bool(mode.gpus) and (mode.cpu != 0 or mode.disk)
    # room GPU 0 keeps for offloaded layers: their KV cache (bounded by all layers) + one streamed layer
    offload_reserve = (len(layer_sizes) * kv_per_layer + max(layer_sizes)) if offloading else 0.0
    capacities = [c * GIB for c in mode.gpus]
    gpu_weights = [0.0] * len(capacities)
    gpu_layers = [0] * len(capacities)
    cpu_weights = disk_weights = 0.0
    device = 0
    for size, layers in modules:
        while device < len(capacities):
            kv = (gpu_layers[device] + layers) * kv_per_layer
            reserve = offload_reserve if device == 0 else 0.0
            if gpu_weights[device] + size + max(kv, reserve) + fixed <= capacities[device]:
                break
            device += 1
        if device < len(capacities):
            gpu_weights[device] += size
            gpu_layers[device] += layers
        elif mode.cpu is None or cpu_weights + size <= mode.cpu * GIB:
            cpu_weights += size
        elif mode.disk:
            disk_weights += size
        else:
            return Plan(mode, [w / GIB for w in gpu_weights], [0.0] * len(capacities), cpu_weights / GIB, 0.0, 0.0, False)
    offloaded_layers = len(layer_sizes) - sum(gpu_layers)
    gpu_runtime = []
    for i in range(len(capacities)):
        if gpu_weights[i] == 0:
            gpu_runtime.append(0.0)
            continue
        extra = offloaded_layers * kv_per_layer + max(layer_sizes) if (i == 0 and offloaded_layers) else 0.0
        gpu_runtime.append((gpu_layers[i] * kv_per_layer + extra + fixed) / GIB)
    # with no GPU everything (KV cache, workspace) lives in RAM
    cpu_runtime = 0.0 if capacities else (len(layer_sizes) * kv_per_layer + workspace) / GIB
    cpu_runtime += shard_gib  # one shard being read while loading
    return Plan(mode, [w / GIB for w in gpu_weights], gpu_runtime, cpu_weights / GIB, disk_weights / GIB, cpu_runtime, True)


def markdown_table(counts: ParameterCounts, plans: list[Plan]) -> str:
    """The plans as a Markdown table (GiB), preceded by the parameter counts."""
    lines = [
        f"Parameters (published checkpoint, leftovers dropped): total {counts.total / 1e9:.3f} B = "
        f"LLM {counts.llm / 1e9:.3f} B (embeddings {counts.embed_tokens / 1e6:.1f} M, LM head "
        f"{counts.lm_head / 1e6:.1f} M, {len(counts.layers)} decoder layers) + vision side "
        f"{counts.vision_side / 1e6:.1f} M (ViT {counts.vision / 1e6:.1f} M, perceiver {counts.perceiver / 1e6:.1f} M, "
        f"projection {counts.projection / 1e6:.2f} M); dropped leftovers {counts.dropped / 1e6:.1f} M.",
        "",
        "| loading mode | fits | GPU peak per device (GiB) | of which weights | CPU RAM peak (GiB) | of which weights | disk (GiB) |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in plans:
        gpu_peak = " + ".join(f"{g:.1f}" for g in p.gpu_peak) or "—"
        gpu_weights = " + ".join(f"{g:.1f}" for g in p.gpu_weights) or "—"
        lines.append(
            f"| {p.mode.name} | {'yes' if p.fits else 'no'} | {gpu_peak} | {gpu_weights} | "
            f"{p.cpu_weights + p.cpu_runtime:.1f} | {p.cpu_weights:.1f} | "
            f"{p.disk_weights:.1f} |"
        )
    return "\n".join(lines)


def memory_plan(spec: str | None = None, context: int = 2048, output: str | None = None, cpu_support=None) -> str:
    """Print (and optionally write) the 14B memory plan as Markdown. ``spec``: key list TSV path.

    ``cpu_support``: a :class:`radfm.model.cpu_bf16.CpuBf16Support` (default: this machine's) for the
    line saying whether the CPU bf16 row applies here.
    """
    counts = count_parameters(default_spec_path(spec))
    table = markdown_table(counts, [plan(counts, mode, LLMShape(context=context)) for mode in default_modes()])
    header = (
        f"# RadFM-14B memory plan (computed, batch 1, {context}-token context)\n\n"
        "GPU peak = weights + KV cache of the layers it runs + prefill workspace + 0.6 GiB CUDA context "
        "(GPU 0 also runs offloaded layers: their KV cache and one streamed layer). CPU RAM peak = "
        "CPU-resident weights + one 2 GiB shard while loading (+ KV cache and workspace when CPU only). "
        "Computed from parameter counts, not measured.\n\n"
    )
    text = header + table + "\n\n" + cpu_bf16_note(cpu_support) + "\n"
    if output is not None:
        from radfm.utils.io import atomic_write_text

        atomic_write_text(output, text)
    return text
