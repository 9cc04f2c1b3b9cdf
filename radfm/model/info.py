"""``radfm info``: parameter counts per part, dtypes, devices, and the 14B memory plan."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

_SAFETENSORS_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64", "I8": "int8", "U8": "uint8"}
PARTS = ("vision_encoder", "perceiver", "projection", "figure_token_weight", "language_model")


def part_of(name: str) -> str:
    """Which part of RadFM a parameter name belongs to."""
    return next((part for part in PARTS if name == part or name.startswith(part + ".")), "other")


def describe_model(model) -> dict[str, Any]:
    """``{part: {"parameters", "dtypes", "devices"}}`` for a built model (meta, loaded or dispatched).

    Offloaded weights show as device "meta"; ``hf_device_map`` (when dispatched) gives where they run.
    """
    counts: dict[str, int] = defaultdict(int)
    dtypes: dict[str, Counter] = defaultdict(Counter)
    devices: dict[str, Counter] = defaultdict(Counter)
    for name, param in model.named_parameters():
        part = part_of(name)
        counts[part] += param.numel()
        dtypes[part][str(param.dtype).removeprefix("torch.")] += param.numel()
        devices[part][str(param.device)] += param.numel()
    device_map = getattr(model, "hf_device_map", None)
    if device_map:
        devices = defaultdict(Counter)
        for name, param in model.named_parameters():
            devices[part_of(name)][str(_mapped_device(device_map, name))] += param.numel()
    parts = {
        part: {"parameters": counts[part], "dtypes": sorted(dtypes[part]), "devices": sorted(devices[part])}
        for part in (*PARTS, "other") if counts.get(part)
    }
    llm = model.language_model
    return {
        "parts": parts,
        "total_parameters": sum(counts.values()),
        "language_model": {"type": type(llm).__name__, "layers": getattr(llm.config, "num_hidden_layers", None),
                           "hidden": getattr(llm.config, "hidden_size", None), "vocab": model.config.base_vocab_size},
        "max_images": model.config.max_images,
    }


def _mapped_device(device_map: dict, name: str):
    best, device = -1, "?"
    for key, value in device_map.items():
        if (key == "" or name == key or name.startswith(key + ".")) and len(key) > best:
            best, device = len(key), value
    return device


def stored_dtypes(model_dir: Path) -> dict[str, list[str]]:
    """Dtypes of the saved tensors per part, read from safetensors headers (no weights loaded)."""
    from safetensors import safe_open

    found: dict[str, set[str]] = defaultdict(set)
    for path in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as handle:
            for name in handle.keys():
                stored = str(handle.get_slice(name).get_dtype()).upper()
                found[part_of(name)].add(_SAFETENSORS_DTYPES.get(stored, stored.lower()))
    return {part: sorted(values) for part, values in found.items()}


def compute_devices(cpu_support=None) -> list[str]:
    """Devices this machine offers, with memory (what `--device auto` would use first) and the CPU's
    vector capability / native bf16 support (``cpu_support``: default this machine's)."""
    import torch  # here, not at the top: `radfm info --help` and usage errors stay fast

    from radfm.model.cpu_bf16 import cpu_bf16_support

    cpu = (cpu_support or cpu_bf16_support()).describe()
    devices = []
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            devices.append(f"cuda:{index} {props.name} ({props.total_memory / 1024**3:.1f} GiB)")
    try:
        import psutil

        devices.append(f"cpu ({psutil.virtual_memory().total / 1024**3:.1f} GiB RAM; {cpu})")
    except ImportError:
        devices.append(f"cpu ({cpu})")
    return devices


def markdown_report(summary: dict[str, Any], title: str, stored: dict[str, list[str]] | None = None) -> str:
    lines = [f"# {title}", "", "| part | parameters | dtype | device |", "|---|---:|---|---|"]
    for part, values in summary["parts"].items():
        dtype = ", ".join((stored or {}).get(part, values["dtypes"]))
        lines.append(f"| {part} | {values['parameters']:,} | {dtype} | {', '.join(values['devices'])} |")
    lines.append(f"| **total** | **{summary['total_parameters']:,}** | | |")
    llm = summary["language_model"]
    lines += ["", f"Language model: {llm['type']}, {llm['layers']} layers, hidden {llm['hidden']}, vocabulary {llm['vocab']}; "
              f"up to {summary['max_images']} images per prompt."]
    return "\n".join(lines)


def info(
    model: str | None = None,
    preset: str | None = None,
    plan: bool = False,
    spec: str | None = None,
    json_output: bool = False,
    output: str | None = None,
) -> None:
    """Print parameter counts per part, dtypes and devices of a model (no weights are loaded).

    Args:
        model: saved model folder (default: the demo model, else the "radfm-14b" preset sizes).
        preset: describe a preset instead ("tiny", "cpu-small" or "radfm-14b").
        plan: append the 14B memory plan (peak GPU/CPU memory per loading mode).
        spec: another key list (``key<TAB>shape`` lines, .tsv or .tsv.gz) for the plan; default: the one shipped in the package.
        json_output: print JSON instead of Markdown.
        output: also write the report to this file.
    """
    from radfm.model.config import RadFMConfig
    from radfm.model.loading import demo_model_dir, resolve_model_dir
    from radfm.model.radfm import RadFMForConditionalGeneration

    stored = None
    if preset is not None:
        config, title = RadFMConfig.preset(preset), f"RadFM preset {preset!r}"
    elif model is not None or (demo_model_dir() / "config.json").is_file():
        model_dir = resolve_model_dir(model)
        config, title = RadFMConfig.from_json_file(model_dir / "config.json"), f"RadFM model {model_dir}"
        stored = stored_dtypes(model_dir)
    else:
        config, title = RadFMConfig.preset("radfm-14b"), "RadFM preset 'radfm-14b' (no model folder given)"
    summary = describe_model(RadFMForConditionalGeneration.empty(config))  # meta device: counts without memory
    for part in summary["parts"].values():
        part["devices"] = ["not loaded"]
    from radfm.model.cpu_bf16 import cpu_bf16_support

    support = cpu_bf16_support()
    summary["compute_devices"] = compute_devices(support)
    summary["cpu"] = {"capability": support.capability, "native_bf16": support.native, "evidence": support.evidence}
    if stored is not None:
        summary["stored_dtypes"] = stored
    if json_output:
        text = json.dumps(summary, indent=2)
    else:
        text = markdown_report(summary, title, stored) + "\n\nThis machine: " + "; ".join(summary["compute_devices"])
        if plan:
            from radfm.model.memory_plan import memory_plan

            text += "\n\n" + memory_plan(spec=spec)
    if output is not None:
        from radfm.utils.io import atomic_write_text

        atomic_write_text(output, text + "\n")
    print(text)


def preprocess(path: str, model: str | None = None, window: Any = None, series_uid: str | None = None,
               nonfinite: str | None = None, axcodes: str | None = None, png: str | None = None,
               size_2d: Any = None, size_3d: Any = None, max_depth: int | None = None,
               max_scan_mb: int | None = None) -> None:
    """Preprocess one scan and print what a model receives (shape, dtype, range, metadata).

    Without --model: the published RadFM grid (2D 512x512, 3D 256x256, depth <= 64). With
    --model DIR: that model's own preprocessing, read from DIR/processor_config.json (the demo model
    sees 2D 128x128, 3D 128x128, depth <= 8).

    Args:
        path: a NIfTI/DICOM/NRRD/MHA/PNG/JPEG/.npy file or a folder holding a DICOM series.
        model: a model folder: show what that model receives (its grid and options in processor_config.json).
        window: CT window: lung, mediastinum, bone, brain or "[low,high]" in HU (default: none, or the model's).
        series_uid: SeriesInstanceUID to read when the folder holds several series.
        nonfinite: "error" (default) or "replace" NaN/Inf voxels.
        axcodes: orientation for 3D volumes (default RAS).
        png: write the middle slice of the model input to this PNG file.
        size_2d: grid of 2D images as "[H,W]", multiples of 32 (default 512,512; not with --model).
        size_3d: in-plane grid of 3D volumes as "[H,W]", multiples of 32 (default 256,256; not with --model).
        max_depth: most slices of a 3D input, a multiple of 4 (default 64; not with --model).
        max_scan_mb: refuse files whose header claims more decoded data than this (MiB; default 2048).
    """
    from radfm.model.loading import resolve_model_dir
    from radfm.model.processing import RadFMImageProcessor
    from radfm.transforms.preprocess import preprocess_cli
    from radfm.transforms.spatial import MAX_DEPTH, SIZE_2D, SIZE_3D
    from radfm.utils.cli import UsageError

    given = {"window": window, "nonfinite": nonfinite, "axcodes": axcodes}
    grid = {"size_2d": size_2d, "size_3d": size_3d, "max_depth": max_depth}
    if model is not None:
        clash = [f"--{name}" for name, value in grid.items() if value is not None]
        if clash:
            raise UsageError(f"{', '.join(clash)} and --model: the grid is the model's (its processor_config.json)")
        model_dir = resolve_model_dir(model)
        options = RadFMImageProcessor.from_model_dir(model_dir).options  # refuses a folder recording no grid
        grid = {key: options[key] for key in ("size_2d", "size_3d", "max_depth")}
        given = {key: value if value is not None else options.get(key) for key, value in given.items()}
        source = f"the model in {model_dir}"
    else:
        grid = {key: value if value is not None else default for (key, value), default in
                zip(grid.items(), (SIZE_2D, SIZE_3D, MAX_DEPTH))}
        source = "the published RadFM grid (--model DIR shows what another model receives)"
    defaults = {"nonfinite": "error", "axcodes": "RAS"}
    options_out = {key: value if value is not None else defaults.get(key) for key, value in given.items()}
    preprocess_cli(path, series_uid=series_uid, png=png, max_scan_mb=max_scan_mb, **options_out, **grid)
    shown = {key: list(value) if isinstance(value, (tuple, list)) else value for key, value in grid.items()}
    try:
        text = RadFMImageProcessor.at_grid(shown).describe_grid()
    except (KeyError, TypeError, ValueError, IndexError):  # a size given as "64,64" on the command line
        text = ", ".join(f"{key} {value}" for key, value in shown.items())
    print(f"grid:            {text}, from {source}")
