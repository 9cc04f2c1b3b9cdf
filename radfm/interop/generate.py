"""``radfm generate``: answer a prompt about one or more scans from the command line."""

from __future__ import annotations

import json as jsonlib
from pathlib import Path
from typing import Any

from radfm.interop.answerer import GenerationOptions, ModelAnswerer, build_prompt
from radfm.model.loading import resolve_model_dir
from radfm.utils.cli import UsageError
from radfm.utils.io import atomic_write_text


def run_generate(
    answerer: ModelAnswerer,
    scans: list[str],
    prompt: str,
    options: GenerationOptions,
) -> dict[str, Any]:
    """The answer record for ``scans`` + ``prompt`` (also what ``--json`` prints)."""
    if not scans:
        raise ValueError("no scans given: pass one or more scan files or DICOM folders")
    missing = [scan for scan in scans if not Path(scan).exists()]
    if missing:
        raise FileNotFoundError(f"scan(s) not found: {', '.join(missing)}")
    if len(scans) > answerer.max_images:
        raise ValueError(f"{len(scans)} scans given; the model takes at most {answerer.max_images} per prompt")
    full_prompt = build_prompt(prompt, len(scans))  # checks placeholders before the slow part
    images = answerer.prepare([Path(scan) for scan in scans])
    text = answerer.answer(full_prompt, images, options)
    return {
        "answer": text,
        "prompt": full_prompt,
        "scans": [str(Path(scan).resolve()) for scan in scans],
        "image_shapes": [list(image.shape) for image in images],
        "model": answerer.identity.to_dict(),
        "generation": options.to_dict(),
        "verification": "UNVERIFIED",
    }


def generate(
    *scans: str,
    prompt: str | None = None,
    model: str | None = None,
    json: bool = False,
    output: str | None = None,
    max_new_tokens: int = 256,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 50,
    num_beams: int = 1,
    repetition_penalty: float = 1.0,
    seed: int | None = None,
    window: str | None = None,
    series_uid: str | None = None,
    dtype: str = "auto",
    device: str = "auto",
    device_map: str | None = None,
    max_memory: str | None = None,
    offload_folder: str | None = None,
    quantize: str | None = None,
) -> None:
    """Answer a prompt about one or more scans; prints the answer (or a JSON record with --json).

    Example: radfm generate ct_series/ brain.nii.gz chest.png --prompt "Compare <image>, <image> and <image>."

    Args:
        scans: scan files (NIfTI, PNG, JPEG, NRRD, DICOM) or DICOM series folders, in prompt order.
        prompt: the question; one <image> placeholder per scan, or none (scans are then put first).
        model: saved model folder (default: the demo model bundles/radfm/models/demo/).
        json: print a JSON record (answer, prompt, scans, model name/version/weights hash, options).
        output: also write the JSON record to this file (atomically); feed it to `radfm export-sr --from_json`.
        max_new_tokens: longest answer in tokens.
        do_sample / temperature / top_p / top_k: sampling (greedy by default, reproducible).
        num_beams: beam search width.
        repetition_penalty: >1 discourages repeats.
        seed: random seed for sampling.
        window: CT intensity window for all scans: lung | mediastinum | bone | brain | "LO,HI".
        series_uid: series to use when a DICOM folder holds several.
        dtype: auto | float32 | bfloat16 | float16.
        device: auto | cpu | cuda | cuda:N.
        device_map: "auto" to spread the model over GPUs/CPU/disk (accelerate).
        max_memory: caps for device_map, e.g. "0=22GiB,1=22GiB,cpu=64GiB".
        offload_folder: folder for weights offloaded to disk.
        quantize: 8bit | 4bit (bitsandbytes, CUDA).
    """
    if prompt is None:
        raise UsageError("--prompt is required (the question about the scans)")
    scan_paths = [str(scan) for scan in scans]  # fire turns numeric-looking values into numbers
    prompt = str(prompt)
    try:
        options = GenerationOptions(
            max_new_tokens=int(max_new_tokens), do_sample=bool(do_sample), temperature=float(temperature),
            top_p=float(top_p), top_k=int(top_k), num_beams=int(num_beams),
            repetition_penalty=float(repetition_penalty), seed=None if seed is None else int(seed),
        ).validate()
    except (TypeError, ValueError) as error:
        raise UsageError(str(error)) from None
    if not scan_paths:
        raise UsageError("no scans given: pass one or more scan files or DICOM folders")
    missing = [scan for scan in scan_paths if not Path(scan).exists()]
    if missing:  # before the model is loaded
        raise FileNotFoundError(f"scan(s) not found: {', '.join(missing)}")
    preprocess_options: dict[str, Any] = {}
    if window is not None:
        preprocess_options["window"] = _parse_window(window)
    if series_uid is not None:
        preprocess_options["series_uid"] = str(series_uid)
    model_dir = resolve_model_dir(model)
    answerer = ModelAnswerer.from_model_dir(model_dir, preprocess_options=preprocess_options, dtype=dtype, device=device,
                                            device_map=device_map, max_memory=max_memory,
                                            offload_folder=offload_folder, quantization=quantize)
    record = run_generate(answerer, scan_paths, prompt, options)  # ScanReadError names the file (exit 1)
    text = jsonlib.dumps(record, indent=2)
    if output is not None:
        atomic_write_text(output, text + "\n")
    print(text if json else record["answer"])


def _parse_window(window: str | tuple) -> str | tuple[float, float]:
    """``"lung"`` stays a name; ``"-1000,400"`` or ``(-1000, 400)`` becomes ``(lo, hi)``."""
    if isinstance(window, (tuple, list)):
        lo, hi = window
        return float(lo), float(hi)
    if "," in str(window):
        lo, hi = str(window).split(",", 1)
        return float(lo), float(hi)
    return str(window)
