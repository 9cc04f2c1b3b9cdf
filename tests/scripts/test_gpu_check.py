"""scripts/gpu_check.py in CPU mode (tiny sizes): every check runs and the table has one row each."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_gpu_check_runs_on_cpu(tmp_path):
    output = tmp_path / "gpu_check.md"
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "gpu_check.py"), "--device", "cpu",
                           "--output", str(output)], capture_output=True, text=True, timeout=900, cwd=str(REPO))
    assert done.returncode == 0, done.stderr[-4000:]
    table = output.read_text()
    assert "FAILED" not in table
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| check")]
    assert len(rows) == 1 + 1 + 3 + 1  # decode, vision, memory bf16/8bit/4bit, fsdp
    assert "tokens/s" in rows[0] and "per token" in rows[0]
    assert "FLOP/s" in rows[1]
    assert all("plan: weights" in row for row in rows[2:5])
    assert "FSDP training, 3 steps" in rows[5] and "passed" in rows[5]


def test_unknown_section_is_named():
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "gpu_check.py"), "--device", "cpu",
                           "--sections", "decode,warp"], capture_output=True, text=True, timeout=120, cwd=str(REPO))
    assert done.returncode == 2 and "warp" in done.stderr


def test_config_list_is_one_constant_of_existing_files():
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(REPO / "scripts"))
    assert gpu_check.INSTRUCT_FSDP_CONFIGS[-1] == "configs/multi_gpu_fsdp.json"
    for name in gpu_check.INSTRUCT_FSDP_CONFIGS:
        assert (gpu_check.BUNDLE / name).is_file(), name
    code = [line for line in (REPO / "scripts" / "gpu_check.py").read_text().splitlines()
            if not line.lstrip().startswith("#")]
    assert sum('"configs/instruct.json"' in line for line in code) == 1  # written once, in the constant
