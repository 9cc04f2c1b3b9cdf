"""Which engine answers: ``--engine transformers`` (one model thread) or ``--engine vllm`` (continuous batching).

Every door (``radfm serve``, ``generate``, ``evaluate``, the MLflow model, the DICOM node) loads its
answerer with :func:`load_answerer`; the request path then starts the answerer's engine
(:func:`radfm.answering.worker.start_engine`). vLLM is imported only when that engine is chosen.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

ENGINES = ("transformers", "vllm")
ENGINE_VARIABLE = "RADFM_ENGINE"  # the default engine of every door when no --engine is given
# --quantize on the vllm engine: 8-bit weights as FP8 (quantised while loading; Ada/Hopper GPUs),
# 4-bit with bitsandbytes (vLLM's in-flight bitsandbytes is 4-bit); other names go to vLLM as given
VLLM_QUANTIZATION = {"8bit": "fp8", "4bit": "bitsandbytes"}


def check_engine(engine: str | None) -> str:
    """The engine to use: ``engine``, else ``$RADFM_ENGINE``, else ``transformers``; refuses other names.

    Args:
        engine: the door's ``--engine`` value (``None``: not given).

    Returns:
        ``"transformers"`` or ``"vllm"``.

    Raises:
        ValueError: naming the flag (or the variable) and the engines there are.
    """
    source = "--engine"
    if engine is None:
        engine, source = os.environ.get(ENGINE_VARIABLE) or "transformers", ENGINE_VARIABLE
    if engine not in ENGINES:
        raise ValueError(f"{source}={engine!r}: expected one of {', '.join(ENGINES)}")
    return str(engine)


def check_placement(engine: str, **flags: Any) -> None:
    """Refuse transformers-only placement flags (``device_map``, ``max_memory``, ``offload_folder``) on vLLM.

    Args:
        engine: the checked engine name.
        flags: the door's placement flags by name (``None``: not given).

    Raises:
        ValueError: naming the flag and what vLLM uses instead.
    """
    if engine != "vllm":
        return
    for name, value in flags.items():
        if value is not None:
            raise ValueError(f"--{name}: not used by --engine vllm (vLLM places the model itself; split it over "
                             "GPUs with --tensor_parallel_size)")


def load_answerer(model_dir: str | Path, engine: str | None = None, preprocess_options: dict[str, Any] | None = None,
                  **placement: Any):
    """The answerer for a model folder on ``engine`` (see :func:`check_engine`); every door loads through here.

    Args:
        model_dir: a saved RadFM model folder.
        engine: ``transformers`` (one model thread, :class:`radfm.answering.answerer.ModelAnswerer`) or ``vllm``
            (continuous batching, :class:`radfm.answering.vllm_engine.VLLMAnswerer`, one per process).
        preprocess_options: per-scan options (window, series_uid).
        placement: dtype, device, device_map, max_memory, offload_folder, quantization (transformers);
            vLLM takes dtype, tensor_parallel_size, quantization, max_num_seqs, max_model_len and ignores the
            accelerate placement (it places the model itself).

    Returns:
        An answerer for :class:`radfm.answering.request.RequestPath`.
    """
    if check_engine(engine) == "vllm":
        from radfm.answering.vllm_engine import VLLMAnswerer

        vllm_args = {k: placement[k] for k in ("tensor_parallel_size", "max_num_seqs", "max_model_len")
                     if placement.get(k) is not None}
        return VLLMAnswerer.shared(model_dir, preprocess_options, dtype=placement.get("dtype") or "auto",
                                   quantization=VLLM_QUANTIZATION.get(placement.get("quantization"),
                                                                      placement.get("quantization")),
                                   **vllm_args)
    placement = {k: v for k, v in placement.items() if k not in ("tensor_parallel_size", "max_num_seqs", "max_model_len")}
    from radfm.answering.answerer import ModelAnswerer

    return ModelAnswerer.from_model_dir(model_dir, preprocess_options=preprocess_options, **placement)
