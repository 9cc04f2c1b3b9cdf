"""``radfm generate``: the command-line door of the request path (scans by path + prompt -> answer)."""

from __future__ import annotations

import json as jsonlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from radfm.answering.limits import DEFAULT_MAX_SCAN_MB, Limits
from radfm.answering.options import GenerationOptions, parse_options
from radfm.answering.refusal import RequestError
from radfm.utils.cli import UsageError
from radfm.utils.io import atomic_write_text

if TYPE_CHECKING:  # the request path imports MONAI and torch: loaded when a command runs, not for --help
    from radfm.answering.request import AnswerRequest, RequestPath

# the command line has no request body: only the generation caps apply (beam search multiplies the work)
CLI_LIMITS = dict(max_new_tokens=GenerationOptions.MAX_BEAM_TOKENS)
UNVERIFIED = "unverified research output: not for clinical use"


def cli_request(scans: list[str], prompt: str, options: Any) -> AnswerRequest:
    """The request for scan paths (files, DICOM folders or zips, in prompt order) and a prompt."""
    from radfm.answering.request import AnswerRequest, ScanInput

    if not scans:
        raise RequestError("no scans given: pass one or more scan files or DICOM folders", field="scans")
    return AnswerRequest(prompt, [ScanInput(str(scan), path=Path(scan)) for scan in scans], options)


def run_generate(path: RequestPath, scans: list[str], prompt: str, options: Any) -> dict[str, Any]:
    """The answer record for ``scans`` + ``prompt`` (also what ``--json`` prints and the MLflow model answers)."""
    result = path.run_blocking(cli_request(scans, prompt, options))
    record = result.record(path.answerer.identity)
    record["scans"] = [str(Path(scan).resolve()) for scan in scans]  # what `radfm export-sr --from_json` reads
    return record


def check_inputs(scans: list[str], prompt: str, options: Any, max_images: int | None = None) -> GenerationOptions:
    """Everything that can be refused before the model loads: flag ranges, the prompt's ``<image>``
    count, and that every scan exists and is a readable scan (by its first bytes)."""
    from radfm.answering.answerer import build_prompt
    from radfm.answering.scans import reference_scan

    checked = parse_options(options, Limits(**CLI_LIMITS))
    request = cli_request(scans, prompt, checked)
    try:
        build_prompt(prompt, len(scans))
    except ValueError as error:
        raise RequestError(f"--prompt: {error}", 422, field="prompt") from None
    if max_images is not None and len(scans) > max_images:
        raise RequestError(f"{len(scans)} scans given; the model takes at most {max_images} per prompt")
    for item in request.scans:
        reference_scan(item.path, item.name)  # exists, readable, a scan kind (a zip is unpacked later)
    return checked


def generate(
    *scans: str,
    prompt: str | None = None,
    model: str | None = None,
    json: bool = False,
    output: str | None = None,
    max_new_tokens: int = 256,
    min_new_tokens: int = 0,
    ignore_eos: bool = False,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 50,
    num_beams: int = 1,
    repetition_penalty: float = 1.0,
    seed: int | None = None,
    window: str | None = None,
    series_uid: str | None = None,
    volume: int | None = None,
    dtype: str = "auto",
    device: str = "auto",
    device_map: str | None = None,
    max_memory: str | None = None,
    offload_folder: str | None = None,
    quantize: str | None = None,
    max_scan_mb: int = DEFAULT_MAX_SCAN_MB,
    engine: str | None = None,
) -> None:
    """Answer a prompt about one or more scans; prints the answer (or a JSON record with --json).

    Example: radfm generate ct_series/ brain.nii.gz chest.png --prompt "Compare <image>, <image> and <image>."

    The plain answer is followed by a line marking it as unverified research output (and
    naming the demo model when it answered).

    Args:
        scans: scan files (NIfTI, PNG, JPEG, NRRD, MHA, DICOM), DICOM series folders or zips of a series, in prompt order.
        prompt: the question; one <image> placeholder per scan, or none (scans are then put first).
        model: saved model folder (default: the demo model bundles/radfm/models/demo/).
        json: print a JSON record (answer, prompt, scans, model name/version/weights hash, options).
        output: also write the JSON record to this file (atomically); feed it to `radfm export-sr --from_json`.
        max_new_tokens: longest answer in tokens.
        min_new_tokens: the answer may not end (EOS) before this many tokens.
        ignore_eos: never stop at EOS: the answer is max_new_tokens tokens long (benchmarks).
        do_sample / temperature / top_p / top_k: sampling (greedy by default, reproducible).
        num_beams: beam search width.
        repetition_penalty: >1 discourages repeats.
        seed: random seed for sampling.
        window: CT intensity window for all scans: lung | mediastinum | bone | brain | "LO,HI".
        series_uid: series to use when a DICOM folder holds several.
        volume: volume to read of each 4D NIfTI (from 0): adds the suffix ``[N]`` to every scan path given
            without one (``fmri.nii.gz[3]`` picks a volume of one scan only).
        dtype: auto | float32 | bfloat16 | float16.
        device: auto | cpu | cuda | cuda:N.
        device_map: "auto" to spread the model over GPUs/CPU/disk (accelerate).
        max_memory: caps for device_map, e.g. "0=22GiB,1=22GiB,cpu=64GiB".
        offload_folder: folder for weights offloaded to disk.
        quantize: 8bit | 4bit (bitsandbytes: a CUDA GPU, or its CPU backend).
        max_scan_mb: largest decoded size of one scan in MiB, checked from its header before it is read.
        engine: transformers | vllm (see `radfm serve --engine`); default $RADFM_ENGINE, else transformers.
    """
    from radfm.answering.engines import check_engine, check_placement, load_answerer
    from radfm.answering.request import RequestPath
    from radfm.model.loading import demo_model_dir, resolve_model_dir
    from radfm.transforms.volumes import with_volume

    if prompt is None:
        raise UsageError("--prompt is required (the question about the scans)")
    if volume is not None and (isinstance(volume, bool) or not isinstance(volume, int) or volume < 0):
        raise UsageError(f"--volume: expected a volume index (0, 1, ...), got {volume!r}")
    # fire turns numeric-looking values into numbers
    scan_paths = [with_volume(str(scan), volume) for scan in scans]
    prompt = str(prompt)
    raw = dict(max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens, ignore_eos=ignore_eos, do_sample=do_sample,
               temperature=temperature, top_p=top_p, top_k=top_k, num_beams=num_beams,
               repetition_penalty=repetition_penalty, seed=seed)
    if not scan_paths:
        raise UsageError("no scans given: pass one or more scan files or DICOM folders")
    try:
        limits = Limits.from_flags(max_scan_mb=max_scan_mb, **CLI_LIMITS)
        engine = check_engine(engine)
        check_placement(engine, device_map=device_map, max_memory=max_memory, offload_folder=offload_folder)
    except ValueError as error:
        raise UsageError(str(error)) from None
    try:
        options = check_inputs(scan_paths, prompt, raw)  # before the model is loaded
    except RequestError as error:
        if error.field in raw:
            raise UsageError(f"--{error.field}: {error}") from None
        raise
    preprocess_options: dict[str, Any] = {}
    if window is not None:
        preprocess_options["window"] = _parse_window(window)
    if series_uid is not None:
        preprocess_options["series_uid"] = str(series_uid)
    model_dir = resolve_model_dir(model)
    placement = dict(dtype=dtype, quantization=quantize)
    if engine == "transformers":
        placement.update(device=device, device_map=device_map, max_memory=max_memory, offload_folder=offload_folder)
    answerer = load_answerer(model_dir, engine, preprocess_options=preprocess_options, **placement)
    path = RequestPath(answerer, limits)
    try:
        record = run_generate(path, scan_paths, prompt, options)  # ScanReadError names the file (exit 1)
    finally:
        path.close()
    is_demo = Path(model_dir).resolve() == demo_model_dir().resolve()
    if is_demo:
        record["model"]["demo"] = True
    text = jsonlib.dumps(record, indent=2)
    if output is not None:
        atomic_write_text(output, text + "\n")
    if json:
        print(text)
    else:
        print(record["answer"])
        print(f"[{UNVERIFIED}" + ("; answered by the demo model, trained on synthetic phantoms" if is_demo else "") + "]")


def _parse_window(window: str | tuple) -> str | tuple[float, float]:
    """``"lung"`` stays a name; ``"-1000,400"`` or ``(-1000, 400)`` becomes ``(lo, hi)``."""
    if isinstance(window, (tuple, list)):
        lo, hi = window
        return float(lo), float(hi)
    if "," in str(window):
        lo, hi = str(window).split(",", 1)
        return float(lo), float(hi)
    return str(window)
