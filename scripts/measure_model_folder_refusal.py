"""Memory and time of ``radfm.load`` on spoiled model folders (issue 28, F6/F7/F8).

    python scripts/measure_model_folder_refusal.py            # widths 4096, 4 layers
    python scripts/measure_model_folder_refusal.py --hidden 8192 --layers 8

Copies the shipped demo model three times and spoils each copy: ``wide`` (a ``config.json`` with
wide language-model layers and no weights for them), ``unrelated`` (a ``model.safetensors`` holding
one unrelated tensor) and ``grid`` (a ``processor_config.json`` grid of 16384² × 4096). Each load
runs in a fresh process after a load of the complete demo folder (imports warm); the process
prints what the load did and how much its peak RSS grew. A refusal costs what the headers cost:
the network is built on the meta device and compared with the safetensors headers.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

_CHILD = """
import json, resource, sys, time
import radfm
from radfm.model.config import RadFMConfig
radfm.load(sys.argv[1], device="cpu")
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
start = time.perf_counter()
try:
    radfm.load(sys.argv[2], device="cpu")
    outcome = "loaded"
except ValueError as error:
    outcome = "refused: " + str(error)[:160]
seconds = time.perf_counter() - start
grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
described = RadFMConfig.from_json_file(sys.argv[2] + "/config.json").estimated_parameters() * 4
print(json.dumps({"outcome": outcome, "seconds": round(seconds, 2), "peak_rss_growth_mib": round(grew / 2**20, 1),
                  "fp32_bytes_config_describes_gb": round(described / 1e9, 2)}))
"""


def _spoil(demo: Path, folder: Path, kind: str, hidden: int, layers: int) -> None:
    shutil.copytree(demo, folder)
    if kind == "wide":
        path = folder / "config.json"
        values = json.loads(path.read_text(encoding="utf-8"))
        values["text_config"].update(hidden_size=hidden, intermediate_size=hidden, num_hidden_layers=layers,
                                     num_attention_heads=hidden // 128, num_key_value_heads=hidden // 128, head_dim=128)
        path.write_text(json.dumps(values), encoding="utf-8")
    elif kind == "unrelated":
        import torch
        from safetensors.torch import save_file

        save_file({"unrelated": torch.zeros(4)}, str(folder / "model.safetensors"))
    elif kind == "grid":
        path = folder / "processor_config.json"
        values = json.loads(path.read_text(encoding="utf-8"))
        values["image_processor"].update(size_2d=[16384, 16384], size_3d=[16384, 16384], max_depth=4096)
        path.write_text(json.dumps(values), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=4096, help="width of the 'wide' config's layers")
    parser.add_argument("--layers", type=int, default=4, help="layers of the 'wide' config")
    args = parser.parse_args()
    from radfm.model.loading import demo_model_dir

    demo = demo_model_dir()
    with tempfile.TemporaryDirectory() as scratch:
        for kind in ("wide", "unrelated", "grid"):
            folder = Path(scratch) / kind
            _spoil(demo, folder, kind, args.hidden, args.layers)
            run = subprocess.run([sys.executable, "-c", _CHILD, str(demo), str(folder)], capture_output=True,
                                 text=True, timeout=1800)
            line = run.stdout.strip().splitlines()[-1] if run.returncode == 0 else f"exit {run.returncode}: {run.stderr[-300:]}"
            print(f"{kind}: {line}")


if __name__ == "__main__":
    main()
