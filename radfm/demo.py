"""Quick-start job (``make demo``, ``radfm demo``, ``python -m radfm.demo``).

Runs the RadFM bundle's ``inference.json`` (a MONAI inference workflow: architecture from
``models/demo``, weights from ``models/model.pt`` via ``CheckpointLoader``) on the shipped phantom
scans (an X-ray PNG, a CT and an MRI NIfTI) and prints each prompt with its answer: one prompt
holds two scans (2D + 3D). The demo model is a small model trained on synthetic phantoms by
``scripts/train_demo.py``; it knows nothing about real anatomy or disease.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from radfm.utils.cli_bundle import shipped_configs
from radfm.utils.resources import bundle_dir


def main(model_dir: str | None = None, max_new_tokens: int = 16) -> None:
    """Answer the quick-start prompts about the shipped phantom scans and print them.

    Args:
        model_dir: a RadFM model folder (default: the bundle's demo model). A converted
            published checkpoint works too (see bundles/radfm/large_files.yml).
        max_new_tokens: longest answer, in tokens.
    """
    import torch
    from monai.bundle import run

    torch.set_num_threads(min(2, torch.get_num_threads()))
    bundle = bundle_dir("radfm")
    # inference.json: the demo model's architecture from models/demo with its weights from models/model.pt;
    # any other model folder loads whole (its safetensors)
    if model_dir is None:
        model_dir = str(bundle / "models" / "demo")
        if not (bundle / "models" / "model.pt").is_file():
            raise SystemExit(f"radfm demo: no weights in {bundle / 'models' / 'model.pt'}; "
                             "rebuild the demo model with `python scripts/train_demo.py`")
    if not (Path(model_dir) / "config.json").is_file():
        raise SystemExit(f"radfm demo: no model in {model_dir} (expected config.json and a tokenizer); "
                         "rebuild the demo model with `python scripts/train_demo.py`")
    print("RadFM quick start: the demo model (a small RadFM trained on synthetic phantoms by "
          "scripts/train_demo.py) answers questions about the shipped phantom scans.")
    if Path(model_dir).resolve() == (bundle / "models" / "demo").resolve():
        # MONAI's CheckpointLoader logs "Restored all variables from .../models/model.pt": say what that file is
        print("Model: models/demo (architecture, tokenizer, grid); its weights load from models/model.pt, the same "
              "tensors as models/demo/model.safetensors in the MONAI bundle layout.")
    print()
    # The bundle's logging.conf goes through logging's fileConfig, which closes every handler the
    # process already has: a host that configured logging (a notebook, a test runner) keeps its own.
    logging_file = False if logging.getLogger().handlers else None
    config_file = str(bundle / "configs" / "inference.json")
    with shipped_configs(config_file):
        run(
            config_file=config_file,
            logging_file=logging_file,
            meta_file=str(bundle / "configs" / "metadata.json"),
            bundle_root=str(bundle),
            model_dir=model_dir,
            max_new_tokens=max_new_tokens,
        )
    truth = json.loads((bundle / "sample_data" / "truth.json").read_text(encoding="utf-8"))
    print("Ground truth of the scans:")
    for name, facts in truth.items():
        lesions = "; ".join(f"{les['brightness']} {les['shape']} ({les['size']}) {les['location']}" for les in facts["lesions"])
        print(f"  {name}: {facts['modality']}; {', '.join(facts['diseases']) or 'normal'}; lesions: {lesions or 'none'}")
    print("\nEvaluation of the demo model on held-out phantoms: bundles/radfm/models/demo/EVAL.md")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
