"""Start-up time of a vLLM engine on a RadFM folder (the plugin), and the first and a second batch.

Runs in the vLLM side environment (``make install-vllm``):

    VLLM_CPU_KVCACHE_SPACE=1 .venv-vllm/bin/python scripts/measure_vllm_start.py [--model DIR] [--new-tokens 12]

Prints the engine's start time (``LLM(...)``: processes, weights, profiling, KV cache) and the wall time
of the shipped phantom scans' four prompts (1 and 2 scans, 2D and 3D) as one batch, twice.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROMPTS = [
    ("What is the modality of this image?", ["xray_phantom.png"]),
    ("Which organ is shown in <image>?", ["ct_phantom.nii.gz"]),
    ("<image> is an X-ray and <image> a CT. Describe the findings.", ["xray_phantom.png", "ct_phantom.nii.gz"]),
    ("Compare <image> with <image>.", ["mri_phantom.nii.gz", "ct_phantom.nii.gz"]),
]


def main() -> None:
    """Measure and print the figures (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(REPO / "bundles" / "radfm" / "models" / "demo"))
    parser.add_argument("--new-tokens", type=int, default=12)
    args = parser.parse_args()

    from vllm import LLM, SamplingParams

    from radfm.model.processing import RadFMProcessor
    from radfm.model.vllm_radfm import prompt_token_ids

    processor = RadFMProcessor.from_pretrained(args.model)
    samples = REPO / "bundles" / "radfm" / "sample_data"
    requests = []
    for text, names in PROMPTS:
        scans = [processor.image_processor.process_one(samples / name).as_tensor() for name in names]
        ids = prompt_token_ids(processor.tokenizer, text, len(scans), base_vocab_size=processor.base_vocab_size)
        requests.append({"prompt_token_ids": ids, "multi_modal_data": {"image": scans}})

    started = time.perf_counter()
    llm = LLM(model=args.model, dtype="float32", enforce_eager=True, max_model_len=512, seed=0)
    start_s = time.perf_counter() - started
    params = SamplingParams(temperature=0.0, max_tokens=args.new_tokens, min_tokens=args.new_tokens)
    batches = []
    for _ in range(2):
        started = time.perf_counter()
        llm.generate(requests, params, use_tqdm=False)
        batches.append(time.perf_counter() - started)
    print(f"model: {args.model}")
    print(f"engine start: {start_s:.1f} s")
    print(f"batch of {len(requests)} prompts x {args.new_tokens} new tokens: first {batches[0]:.2f} s, "
          f"second {batches[1]:.2f} s")


if __name__ == "__main__":  # vLLM starts its engine core by spawn
    main()
