"""``radfm convert``: the published ``pytorch_model.bin`` (or an old-format model folder) -> a transformers model folder."""

from __future__ import annotations


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
    from pathlib import Path

    if output is None:
        raise ValueError("radfm convert: pass --output DIR")
    if Path(official_bin).is_dir():
        from radfm.model.legacy import upgrade_folder

        return str(upgrade_folder(official_bin, output, max_shard_size=max_shard_size))
    if llm_config is None:
        raise ValueError("radfm convert: the published checkpoint needs --llm_config (the LLaMA config.json)")
    from radfm.model.radfm import RadFM
    from radfm.model.weights import parse_dtype

    model = RadFM.from_official(official_bin, llm_config=llm_config, dtype=parse_dtype(dtype))
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
