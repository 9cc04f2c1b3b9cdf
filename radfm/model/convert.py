"""``radfm convert``: the published ``pytorch_model.bin`` (or an old-format model folder) -> a transformers model folder.

The one place that reads formats older than the model folder: loading code (``radfm.load``,
``from_pretrained``) refuses an old-format folder in one line naming this command
(:func:`radfm.model.config.check_config_dict`) and carries no upgrade path of its own.

The old folder format (before RadFM became a transformers model): ``config.json`` with
``llm``/``vision``/``perceiver``/``max_images``, our own safetensors (same tensor names as today),
tokenizer files and ``preprocess.json``. The new one: ``config.json`` (``model_type: radfm``),
transformers' safetensors, ``processor_config.json`` (the grid), tokenizer files and
``chat_template.jinja``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

# old folder: its weights, and the files that are not the model itself and travel unchanged (evaluation records)
OLD_INDEX = "model.safetensors.index.json"
OLD_SINGLE = "model.safetensors"
CARRIED = ("EVAL.md", "eval.json", "README.md")


def convert(
    official_bin: str,
    llm_config: str | None = None,
    output: str | None = None,
    dtype: str = "float32",
    tokenizer: str | None = None,
    max_shard_size: str = "2GB",
) -> str:
    """Convert the published RadFM ``pytorch_model.bin`` (or an old-format model folder) into a model folder.

    ``radfm convert OLD_FOLDER --output NEW_FOLDER`` upgrades a folder saved before RadFM became a
    transformers model (config.json with ``llm``/``vision``/``perceiver``); tensors are unchanged.

    Args:
        official_bin: path to the published ``pytorch_model.bin`` (a plain state dict), or an
            old-format model folder.
        llm_config: the LLaMA ``config.json`` (file or folder) of the language model (for the
            published checkpoint).
        output: directory to write (config.json, sharded safetensors, tokenizer if given).
        dtype: float32 (default), bfloat16 or float16; cast tensor by tensor.
        tokenizer: optional local tokenizer directory to store beside the weights; the image
            tokens are added if it lacks them.
        max_shard_size: largest safetensors shard, e.g. "2GB".
    Returns:
        The output directory.
    """
    if output is None:
        raise ValueError("radfm convert: pass --output DIR")
    if Path(official_bin).is_dir():
        return str(upgrade_folder(official_bin, output, max_shard_size=max_shard_size))
    if llm_config is None:
        raise ValueError("radfm convert: the published checkpoint needs --llm_config (the LLaMA config.json)")
    from radfm.model.radfm import RadFMForConditionalGeneration
    from radfm.model.weights import parse_dtype

    model = RadFMForConditionalGeneration.from_official(official_bin, llm_config=llm_config, dtype=parse_dtype(dtype))
    tok = None
    if tokenizer is not None:
        from transformers import AutoTokenizer

        from radfm.model.tokenizer import add_image_tokens

        tok = AutoTokenizer.from_pretrained(tokenizer, trust_remote_code=False)  # never a folder's code
        base = add_image_tokens(tok, max_images=model.config.max_images)
        if base != model.config.base_vocab_size:
            raise ValueError(
                f"tokenizer {tokenizer} puts <image> at id {base} but the model's vocabulary is "
                f"{model.config.base_vocab_size}"
            )
    model.save_pretrained(output, max_shard_size=max_shard_size)
    if tok is not None:
        from radfm.model.processing import RadFMImageProcessor, RadFMProcessor

        # the published model runs at the paper's grid (512² 2D, 256²×≤64 3D)
        RadFMProcessor(RadFMImageProcessor(), tok).save_pretrained(output)
    return output


def is_old_format_folder(folder: str | os.PathLike) -> bool:
    """Whether ``folder/config.json`` is in the pre-transformers format (``llm``/``vision``/``perceiver``).

    Args:
        folder: a model folder.

    Returns:
        True for an old-format folder, False otherwise (also without a readable ``config.json``).
    """
    from radfm.model.config import LEGACY_KEYS
    from radfm.model.processing import read_json

    path = Path(os.fspath(folder)) / "config.json"
    if not path.is_file():
        return False
    values = read_json(path)
    return isinstance(values, dict) and values.get("model_type") != "radfm" and any(k in values for k in LEGACY_KEYS)


def upgrade_folder(old: str | os.PathLike, output: str | os.PathLike, *, max_shard_size: str = "2GB") -> Path:
    """Write the transformers version of the old-format folder ``old`` to ``output`` (``radfm convert OLD --output NEW``).

    Tensors and their names are unchanged (bit-identical); ``output`` may equal ``old`` (replaced
    atomically at the end).

    Args:
        old: the old-format model folder.
        output: the model folder to write.
        max_shard_size: largest safetensors shard, e.g. "2GB".

    Returns:
        ``output``.
    """
    from safetensors import safe_open
    from transformers import AutoTokenizer

    from radfm.model.config import LEGACY_KEYS, RadFMConfig
    from radfm.model.processing import PREPROCESS_FILE, RadFMImageProcessor, RadFMProcessor, read_json
    from radfm.model.radfm import RadFMForConditionalGeneration
    from radfm.model.weights import assign_weights, build_empty

    old, output = Path(os.fspath(old)), Path(os.fspath(output))
    if not is_old_format_folder(old):
        raise ValueError(f"{old / 'config.json'} is not an old-format RadFM config (no 'llm'/'vision'/'perceiver')")
    values = read_json(old / "config.json")
    unknown = sorted(set(values) - {*LEGACY_KEYS, "max_images", "radfm_version"})
    if unknown:
        raise ValueError(f"{old / 'config.json'}: unknown field(s) {unknown}")
    config = RadFMConfig(text_config=values["llm"], vision_config=values.get("vision", {}),
                         perceiver_config=values.get("perceiver", {}),
                         max_images=values.get("max_images", RadFMConfig().max_images))
    if (old / OLD_INDEX).is_file():
        index = read_json(old / OLD_INDEX)
        files, tied = sorted(set(index["weight_map"].values())), index.get("aliases", {})
    elif (old / OLD_SINGLE).is_file():
        files, tied = [OLD_SINGLE], {}
    else:
        raise FileNotFoundError(f"{old / OLD_SINGLE} is missing: the old folder holds no weights")

    def pairs():
        for name in files:
            with safe_open(str(old / name), framework="pt", device="cpu") as handle:
                for key in handle.keys():
                    yield key, handle.get_tensor(key)

    model = build_empty(RadFMForConditionalGeneration, config)
    assign_weights(model, pairs(), source=str(old), tied=tied, progress=False)
    tokenizer = AutoTokenizer.from_pretrained(str(old), trust_remote_code=False)
    grid_file = old / PREPROCESS_FILE
    if not grid_file.is_file():
        raise FileNotFoundError(f"{grid_file} is missing: the old folder does not say which grid the model was "
                                "trained at; write it (e.g. {\"size_2d\": [512, 512], \"size_3d\": [256, 256], "
                                "\"max_depth\": 64}) and convert again")
    processor = RadFMProcessor(RadFMImageProcessor.from_preprocess_json(grid_file), tokenizer)
    staging = output.with_name(f".{output.name}.upgrade-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        model.save_pretrained(staging, max_shard_size=max_shard_size, processor=processor)
        for name in (n for n in CARRIED if (old / n).is_file()):
            shutil.copy2(old / name, staging / name)
        shutil.rmtree(output, ignore_errors=True)  # output may be old itself: everything is read by now
        os.replace(staging, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # already renamed on success; a failure leaves nothing
    return output
