"""scripts/bench_generate.py: the step clock splits prefill from decode, and the demo row comes out."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_demo_row_with_prefill_decode_and_ratios(tmp_path):
    output = tmp_path / "generate.md"
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "bench_generate.py"), "--models", "demo",
                           "--new-tokens", "4", "--repeats", "1", "--threads", "1", "--output", str(output)],
                          capture_output=True, text=True, timeout=600, cwd=str(REPO))
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line for line in output.read_text().splitlines() if line.startswith("| demo")]
    assert len(rows) == 1
    cells = [cell.strip() for cell in rows[0].strip("|").split("|")]
    assert cells[1] == "59"  # 1 BOS + 34-id image block + 24 text tokens, the same length on both sides
    assert all(float(value) > 0 for value in cells[2:])


def test_step_clock_stamps_every_step():
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        from bench_generate import build_model, prompts, run_once
    finally:
        sys.path.remove(str(REPO / "scripts"))
    import torch

    model, _ = build_model("demo")
    _, bare_ids = prompts(model)
    llm = model.language_model
    with torch.inference_mode():
        prefill, decode, output = run_once(lambda **kw: llm.generate(input_ids=bare_ids, pad_token_id=0, **kw), 5)
    assert prefill > 0 and len(decode) == 4 and output.shape[-1] == bare_ids.shape[1] + 5
