#!/usr/bin/env python
"""Train the small classifier shipped in ``bundles/radfm_classification/models`` (reproducible from this script).

Task: 2D phantom modality, X-ray (0) vs ultrasound (1), on the tiny RadFM vision encoder (random
init) at a 64×64 grid. All offline, on CPU, in a couple of minutes:

1. phantoms: training cases with seed 0 (train split for training, val split for model choice),
   held-out cases with a new seed (1) for the reported figures;
2. the bundle's own ``train.json`` (``monai.bundle`` workflow): its CheckpointSaver keeps the best
   validation macro AUC as ``models/model.pt``, ``SaveGrid`` records the grid in ``models/preprocess.json`` and
   ``SaveClassifierConfig`` the architecture and class names in ``models/classifier.json``;
3. ``python -m monai.bundle ckpt_export`` (traced) writes ``models/model.ts``;
4. the bundle's ``evaluate.json`` on the held-out phantoms: macro AUC / F1 → ``models/eval.json``.

    python scripts/train_classification_demo.py --output bundles/radfm_classification/models --work WORK_FOLDER
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "radfm_classification"
CLASSES = ["X-ray", "ultrasound"]
GRID = {"size_2d": [64, 64], "size_3d": [64, 64], "max_depth": 8}  # small: an easy task on 2 CPU cores


def write_items(phantom_dir: Path, split: str | None, path: Path) -> int:
    """``[{"image", "label"}]`` for the 2D phantoms of ``split`` (all splits when None); returns the count."""
    cases = [json.loads(line) for line in (phantom_dir / "cases.jsonl").read_text().splitlines()]
    items = [{"image": str(phantom_dir / c["image"]), "label": CLASSES.index(c["modality"])}
             for c in cases if c["dims"] == 2 and (split is None or c["split"] == split)]
    path.write_text(json.dumps(items, indent=1))
    return len(items)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default=str(BUNDLE / "models"))
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "radfm_cls"))
    parser.add_argument("--train-cases", type=int, default=300)
    parser.add_argument("--eval-cases", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-seed", type=int, default=1)
    args = parser.parse_args(argv)

    import torch
    from monai.bundle import run as bundle_run

    from radfm.data.phantoms import make_phantoms

    torch.set_num_threads(1)
    started = time.time()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    train_dir, eval_dir = work / "phantoms_train", work / "phantoms_eval"
    make_phantoms(train_dir, n=args.train_cases, seed=args.seed, overwrite=True, progress=False)
    make_phantoms(eval_dir, n=args.eval_cases, seed=args.eval_seed, overwrite=True, progress=False)
    counts = {"train": write_items(train_dir, "train", work / "train.json"),
              "val": write_items(train_dir, "val", work / "val.json"),
              "held_out": write_items(eval_dir, None, work / "test.json")}
    print(f"2D items: {counts}", flush=True)

    output = Path(args.output)
    staging = work / "models"  # written here first; copied into the bundle only when everything passed
    shutil.rmtree(staging, ignore_errors=True)
    common = dict(meta_file=str(BUNDLE / "configs" / "metadata.json"), logging_file=str(BUNDLE / "configs" / "logging.conf"),
                  bundle_root=str(BUNDLE), num_classes=len(CLASSES), multi_label=False)
    bundle_run(config_file=str(BUNDLE / "configs" / "train.json"), dataset_dir=str(work), ckpt_dir=str(staging),
               output_dir=str(work / "runs"), epochs=args.epochs, learning_rate=args.lr, seed=args.seed,
               batch_size=16, image_grid=GRID, class_names=CLASSES, **common)
    print(f"trained in {(time.time() - started) / 60:.1f} min", flush=True)

    export = [sys.executable, "-m", "monai.bundle", "ckpt_export", "network_def",
              "--config_file", str(BUNDLE / "configs" / "inference.json"), "--meta_file", common["meta_file"],
              "--bundle_root", str(BUNDLE), "--ckpt_dir", str(staging), "--ckpt_file", str(staging / "model.pt"),
              "--filepath", str(staging / "model.ts"), "--use_trace", "True", "--input_shape", "[1,3,64,64,4]"]
    subprocess.run(export, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})

    # architecture, classes and grid come from the staging folder (classifier.json, preprocess.json)
    bundle_run(config_file=str(BUNDLE / "configs" / "evaluate.json"), test_items=str(work / "test.json"),
               ckpt_dir=str(staging), output_dir=str(work / "eval"),
               **{k: v for k, v in common.items() if k not in ("num_classes", "multi_label")})
    metrics = {}
    summary = (work / "eval" / "metrics.csv").read_text()
    for line in summary.splitlines():
        key, value = line.replace("\t", ",").split(",")[:2]  # MetricsSaver's metrics.csv
        metrics[key] = float(value)
    results = {"held_out_metrics": metrics, "items": counts,
               "classes": CLASSES, "settings": {**vars(args), "output": os.path.relpath(output.resolve(), REPO)}, "minutes_total": round((time.time() - started) / 60, 1)}
    (staging / "eval.json").write_text(json.dumps(results, indent=2) + "\n")
    output.mkdir(parents=True, exist_ok=True)
    for name in ("model.pt", "model.ts", "preprocess.json", "eval.json"):
        shutil.copyfile(staging / name, output / f".{name}.tmp")
        os.replace(output / f".{name}.tmp", output / name)
    print(json.dumps(results, indent=1), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
