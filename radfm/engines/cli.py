"""``radfm train``: run a training bundle config (pretrain, instruct, classification) via MONAI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from radfm.utils.cli_bundle import shipped_configs
from radfm.utils.resources import bundle_dir

# name -> (bundle, config files in order: pretrain / instruct are small overrides on the shared train.json)
NAMED_CONFIGS = {
    "pretrain": ("radfm", ["train.json", "pretrain.json"]),
    "instruct": ("radfm", ["train.json", "instruct.json"]),
    "classification": ("radfm_classification", ["train.json"]),
}


def named_configs(name: str) -> list[Path]:
    """The config files behind a short name (``instruct`` -> the RadFM bundle's train.json + instruct.json)."""
    bundle, file_names = NAMED_CONFIGS[name]
    return [bundle_dir(bundle) / "configs" / file_name for file_name in file_names]


def _resolve(config: str | list[str] | tuple[str, ...]) -> list[str]:
    configs = [config] if isinstance(config, str) else list(config)
    paths = []
    for item in configs:
        for path in named_configs(item) if item in NAMED_CONFIGS else [Path(item)]:
            if not Path(path).is_file():
                raise FileNotFoundError(
                    f"training config {item!r} not found; give a JSON path or one of {sorted(NAMED_CONFIGS)}"
                )
            paths.append(str(path))
    return paths


def train(
    config: str = "instruct",
    *,
    bundle_root: str | None = None,
    meta_file: str | None = None,
    distributed: bool = False,
    tracking: str | None = None,
    **overrides: Any,
) -> None:
    """Train with a MONAI bundle config; any other ``--key value`` overrides a config entry.

    Args:
        config: "pretrain", "instruct", "classification", or a path (or list of paths) to JSON configs.
        bundle_root: folder for runs/ (checkpoints, the final model) and relative data paths;
            default: the bundle folder the config belongs to.
        meta_file: metadata.json; default: the one next to the (first) config.
        distributed: add the DDP mixin (multi_gpu_train.json); launch with
            ``torchrun --nproc_per_node=N -m radfm.cli train ... --distributed``.
        tracking: "mlflow" to log params, losses, metrics and the executed config (MONAI's
            ``--tracking``); the store defaults to <output_dir>/mlruns.db.
        overrides: config entries, e.g. ``--epochs 2 --batch_size 4 --train_manifest data/train.jsonl
            --model bundles/radfm/models/demo --tracking_uri sqlite:///mlruns.db``.

    Example:
        radfm train instruct --train_manifest phantoms/train.jsonl --val_manifest phantoms/val.jsonl --epochs 1
    """
    from monai.bundle import run

    config_files = _resolve(config)
    configs_dir = Path(config_files[0]).parent
    if distributed:
        config_files.append(str(bundle_dir("radfm") / "configs" / "multi_gpu_train.json"))
    meta = meta_file or str(configs_dir / "metadata.json")
    logging_file = configs_dir / "logging.conf"
    with shipped_configs(config_files):
        run(
            config_file=config_files,
            meta_file=meta,
            logging_file=str(logging_file) if logging_file.is_file() else None,
            tracking=tracking,
            bundle_root=bundle_root or str(configs_dir.parent),
            **overrides,
        )
