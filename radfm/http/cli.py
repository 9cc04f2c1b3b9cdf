"""``radfm serve``: its flags, checked before anything heavy loads, then the service of :mod:`radfm.http.service`.

Kept apart from the app so that ``radfm serve --help`` and a misspelled flag answer without importing
torch, transformers or MONAI (the app module imports the request path and its readers).
"""

from __future__ import annotations

import errno
import socket
from typing import Any

from radfm.answering.limits import DEFAULT_MAX_SCAN_MB, Limits
from radfm.answering.options import GenerationOptions
from radfm.http.http_guard import GuardLimits, bind_socket, guarded_server

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


def serve(
    model: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8765,
    allow_remote: bool = False,
    dtype: str = "auto",
    device: str = "auto",
    device_map: str | None = None,
    max_memory: str | None = None,
    offload_folder: str | None = None,
    quantize: str | None = None,
    max_request_mb: int = 512,
    max_files: int = 2000,
    max_queue: int = 32,
    max_new_tokens_limit: int = 1024,
    max_num_beams: int = GenerationOptions.MAX_NUM_BEAMS,
    max_beam_tokens: int = GenerationOptions.MAX_BEAM_TOKENS,
    generation_timeout_s: float = 300.0,
    header_timeout_s: float = 10.0,
    body_timeout_s: float = 600.0,
    max_scan_mb: int = DEFAULT_MAX_SCAN_MB,
    prepare_budget_mb: int = 2048,
    max_kept_scan_mb: int = 1024,
    engine: str | None = None,
    tensor_parallel_size: int = 1,
    max_num_seqs: int = 32,
) -> None:
    """Serve a RadFM model over HTTP: chat page at /, POST /v1/answer, POST /v1/chat/completions
    (OpenAI-compatible), GET /health; the API schema at /openapi.json.

    Args:
        model: saved model folder (default: the demo model bundles/radfm/models/demo/).
        host: address to bind; 127.0.0.1 unless --allow_remote (no authentication!).
        port: TCP port (1-65535).
        allow_remote: permit a non-loopback host (put the service behind an authenticating proxy).
        dtype: auto | float32 | bfloat16 | float16.
        device: auto | cpu | cuda | cuda:N (ignored with --device_map).
        device_map: "auto" to spread the LLM over GPUs/CPU/disk with accelerate.
        max_memory: per-device caps for device_map, e.g. "0=22GiB,1=22GiB,cpu=64GiB".
        offload_folder: folder for weights offloaded to disk.
        quantize: "8bit" or "4bit" (bitsandbytes: a CUDA GPU, or its CPU backend).
        max_request_mb: largest request body in MiB.
        max_files: most uploaded files per request (DICOM slices count one each).
        max_queue: requests allowed to wait for the model before 503 (>= 1).
        max_new_tokens_limit: largest max_new_tokens a request may ask for.
        max_num_beams: largest num_beams a request may ask for.
        max_beam_tokens: largest max_new_tokens x num_beams a request may ask for.
        generation_timeout_s: a generation still running after this many seconds is stopped (504).
        header_timeout_s: connections that have not sent their request head by then are closed (408).
        body_timeout_s: the whole request body must arrive within this many seconds (408).
        max_scan_mb: largest decoded size of one uploaded scan in MiB, checked from its header (413).
        prepare_budget_mb: MiB of image data (as the scans' headers claim) read at once over all requests.
        max_kept_scan_mb: MiB the chat page keeps over all clients (model inputs, display volumes, files; oldest dropped first).
        engine: transformers (default: one request at a time) | vllm (continuous batching; the vLLM environment,
            see docs/vllm.md); default $RADFM_ENGINE, else transformers.
        tensor_parallel_size: vllm engine: GPUs the model is split over (e.g. 2 for the 14B on two 24 GB cards).
        max_num_seqs: vllm engine: requests decoded at once; --max_queue more may wait beyond them.
    """
    from radfm.utils.cli import UsageError

    if host not in LOOPBACK_HOSTS and not allow_remote:
        raise SystemExit(
            f"refusing to bind {host!r}: the service has no authentication and receives patient data. "
            "Use 127.0.0.1 (default), or pass --allow_remote behind an authenticating proxy."
        )
    try:  # every flag is checked before the model loads
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise ValueError(f"--port={port!r}: expected a TCP port in 1..65535")
        limits = Limits.from_flags(max_request_mb=max_request_mb, max_files=max_files, max_queue=max_queue,
                                   max_new_tokens_limit=max_new_tokens_limit, max_num_beams=max_num_beams,
                                   max_beam_tokens=max_beam_tokens, generation_timeout_s=generation_timeout_s,
                                   max_scan_mb=max_scan_mb, prepare_budget_mb=prepare_budget_mb,
                                   max_kept_scan_mb=max_kept_scan_mb)
        guard = GuardLimits(header_timeout_s=header_timeout_s, body_timeout_s=body_timeout_s).check()
        from radfm.answering.engines import check_engine, check_placement

        engine = check_engine(engine)
        check_placement(engine, device_map=device_map, max_memory=max_memory, offload_folder=offload_folder)
        for name, value in (("tensor_parallel_size", tensor_parallel_size), ("max_num_seqs", max_num_seqs)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"--{name}={value!r}: expected a whole number >= 1")
    except ValueError as error:
        raise UsageError(str(error)) from None
    try:  # the port is taken before the model loads (minutes for a big one), and held until uvicorn listens
        listening = bind_socket(host, port)
    except OSError as error:
        in_use = error.errno == errno.EADDRINUSE
        raise SystemExit(f"cannot listen on {host}:{port}: {error.strerror or error}"
                         + (" (another process listens there: stop it or pick another --port)" if in_use else "")) from None
    try:
        _load_and_serve(model, host, port, listening, limits, guard, placement=dict(
            dtype=dtype, device=device, device_map=device_map, max_memory=max_memory,
            offload_folder=offload_folder, quantization=quantize), engine=engine,
            engine_options=dict(tensor_parallel_size=tensor_parallel_size, max_num_seqs=max_num_seqs))
    finally:
        listening.close()


def _load_and_serve(model: str | None, host: str, port: int, listening: socket.socket, limits: Limits,
                    guard: GuardLimits, placement: dict[str, Any], engine: str = "transformers",
                    engine_options: dict[str, Any] | None = None) -> None:
    """Load the model and serve on the socket ``serve`` bound (returns on SIGTERM/Ctrl-C)."""
    from radfm.answering.engines import load_answerer
    from radfm.http.service import InferenceService
    from radfm.model.loading import resolve_model_dir

    model_dir = resolve_model_dir(model)
    import radfm.transforms  # noqa: F401  (imports ITK/MONAI now, not during the first request)

    if engine == "vllm":
        placement = {"dtype": placement["dtype"], "quantization": placement["quantization"], **(engine_options or {})}
    print(f"loading {model_dir} on the {engine} engine "
          f"({', '.join(f'{k}={v}' for k, v in placement.items() if v is not None)}) ...", flush=True)
    answerer = load_answerer(model_dir, engine, **placement)
    service = InferenceService(answerer, limits)
    print(f"RadFM service on http://{host}:{port} ({engine} engine, model {answerer.identity.name}, "
          f"weights sha256 {answerer.identity.weights_sha256[:12]}...)", flush=True)
    try:
        guarded_server(service.app, host, int(port), guard, log_level="info").run(sockets=[listening])
    finally:
        service.close()  # SIGTERM/Ctrl-C: uvicorn returns here; no temp folder outlives the process
        if hasattr(answerer, "close"):
            answerer.close()  # the vLLM engine's core process
