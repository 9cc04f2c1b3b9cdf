"""``radfm convert``: the published ``pytorch_model.bin`` -> our safetensors model folder."""

from __future__ import annotations


def convert(
    official_bin: str,
    llm_config: str,
    output: str,
    dtype: str = "float32",
    tokenizer: str | None = None,
    max_shard_size: str = "2GB",
) -> str:
    """Convert the published RadFM ``pytorch_model.bin`` into our safetensors model directory.

    Args:
        official_bin: path to the published ``pytorch_model.bin`` (a plain state dict).
        llm_config: the LLaMA ``config.json`` (file or folder) of the language model.
        output: directory to write (config.json, sharded safetensors, tokenizer if given).
        dtype: float32 (default), bfloat16 or float16; cast tensor by tensor.
        tokenizer: optional local tokenizer directory to store beside the weights; the image
            tokens are added if it lacks them.
        max_shard_size: largest safetensors shard, e.g. "2GB".
    Returns:
        The output directory.
    """
    from radfm.model.radfm import RadFM
    from radfm.model.weights import parse_dtype

    model = RadFM.from_official(official_bin, llm_config=llm_config, dtype=parse_dtype(dtype))
    tok = None
    if tokenizer is not None:
        from transformers import AutoTokenizer

        from radfm.model.tokenizer import add_image_tokens

        tok = AutoTokenizer.from_pretrained(tokenizer)
        base = add_image_tokens(tok, max_images=model.config.max_images)
        if base != model.config.base_vocab_size:
            raise ValueError(
                f"tokenizer {tokenizer} puts <image> at id {base} but the model's vocabulary is "
                f"{model.config.base_vocab_size}"
            )
    model.save_pretrained(output, tokenizer=tok, max_shard_size=max_shard_size)
    return output
