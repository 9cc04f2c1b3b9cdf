"""Upgrade a model folder of the pre-transformers format to a transformers folder.

The old format: ``config.json`` with ``llm``/``vision``/``perceiver``/``max_images``, our own
safetensors (same tensor names as today), tokenizer files and ``preprocess.json``. The new one:
``config.json`` (``model_type: radfm``), transformers' safetensors, ``processor_config.json``
(the grid), tokenizer files and ``chat_template.jinja``. Run as ``radfm convert OLD --output NEW``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from radfm.model.config import LEGACY_KEYS, RadFMConfig
from radfm.model.processing import (
    LEGACY_PREPROCESS_FILE,
    RadFMImageProcessor,
    RadFMProcessor,
    read_json,
)

OLD_INDEX = "model.safetensors.index.json"
OLD_SINGLE = "model.safetensors"
# files of the old folder that are not the model itself and travel unchanged (evaluation records)
CARRIED = ("EVAL.md", "eval.json", "README.md")


def is_legacy_folder(folder: str | os.PathLike) -> bool:
    """True when ``folder/config.json`` is in the pre-transformers format."""
    path = Path(os.fspath(folder)) / "config.json"
    if not path.is_file():
        return False
    values = read_json(path)
    return isinstance(values, dict) and values.get("model_type") != "radfm" and any(k in values for k in LEGACY_KEYS)


def upgrade_folder(old: str | os.PathLike, output: str | os.PathLike, *, max_shard_size: str = "2GB") -> Path:
    """Write the transformers version of the old-format folder ``old`` to ``output``; returns ``output``.

    Tensors and their names are unchanged (bit-identical); ``output`` may equal ``old`` (replaced
    atomically at the end).
    """
    from safetensors import safe_open
    from transformers import AutoTokenizer

    from radfm.model.radfm import RadFM
    from radfm.model.weights import assign_weights, build_empty

    old, output = Path(os.fspath(old)), Path(os.fspath(output))
    if not is_legacy_folder(old):
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
        files, aliases = sorted(set(index["weight_map"].values())), index.get("aliases", {})
    elif (old / OLD_SINGLE).is_file():
        files, aliases = [OLD_SINGLE], {}
    else:
        raise FileNotFoundError(f"{old / OLD_SINGLE} is missing: the old folder holds no weights")

    def pairs():
        for name in files:
            with safe_open(str(old / name), framework="pt", device="cpu") as handle:
                for key in handle.keys():
                    yield key, handle.get_tensor(key)

    model = build_empty(RadFM, config)
    assign_weights(model, pairs(), source=str(old), tied=aliases, progress=False)
    tokenizer = AutoTokenizer.from_pretrained(str(old), trust_remote_code=False)
    legacy = old / LEGACY_PREPROCESS_FILE
    image_processor = RadFMImageProcessor.from_preprocess_json(legacy) if legacy.is_file() else None
    if image_processor is None:
        raise FileNotFoundError(f"{legacy} is missing: the old folder does not say which grid the model was "
                                "trained at; write it (e.g. {\"size_2d\": [512, 512], \"size_3d\": [256, 256], "
                                "\"max_depth\": 64}) and convert again")
    processor = RadFMProcessor(image_processor, tokenizer)
    staging = output.with_name(f".{output.name}.upgrade-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        model.save_pretrained(staging, max_shard_size=max_shard_size)
        processor.save_pretrained(str(staging))
        for name in (n for n in CARRIED if (old / n).is_file()):
            shutil.copy2(old / name, staging / name)
        shutil.rmtree(output, ignore_errors=True)  # output may be old itself: everything is read by now
        os.replace(staging, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # already renamed on success; a failure leaves nothing
    return output


def main(argv: list[str] | None = None) -> None:
    """``python -m radfm.model.legacy OLD NEW`` (the same as ``radfm convert OLD --output NEW``)."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old")
    parser.add_argument("output")
    args = parser.parse_args(argv)
    print(json.dumps({"output": str(upgrade_folder(args.old, args.output))}))


if __name__ == "__main__":
    main()
