"""Who produced an answer: model name, version and a hash of its weights.

Clinical outputs (DICOM SR, service answers) must say exactly which weights produced
them; the name alone is not enough once a model has been fine-tuned.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

# weight files, in the order they are hashed (sorted by name inside each pattern)
_WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt")
_HASH_CACHE: dict[tuple[str, float, int], str] = {}


@dataclass(frozen=True)
class ModelIdentity:
    """Name, version and weights hash of the model that produced an answer."""

    name: str = "RadFM"
    version: str = "unknown"
    weights_sha256: str = "unknown"

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def weights_sha256(model_dir: str | Path) -> str:
    """SHA-256 over the weight files of ``model_dir`` (names and bytes, sorted by name).

    Streams the files (a 28 GB model never sits in memory) and caches the result per
    directory, newest modification time and total size (in memory, and for large models in
    ``~/.cache/radfm/weights_sha256.json``) so that repeated CLI calls hash only once.
    """
    model_dir = Path(model_dir)
    files = sorted({p for pattern in _WEIGHT_PATTERNS for p in model_dir.glob(pattern) if p.is_file()})
    if not files:
        raise FileNotFoundError(f"{model_dir}: no weight files ({', '.join(_WEIGHT_PATTERNS)}) to hash")
    key = (str(model_dir.resolve()), max(p.stat().st_mtime for p in files), sum(p.stat().st_size for p in files))
    if key in _HASH_CACHE:
        return _HASH_CACHE[key]
    disk_cache = _read_disk_cache()
    disk_key = json.dumps(key)
    if disk_key in disk_cache:
        _HASH_CACHE[key] = disk_cache[disk_key]
        return _HASH_CACHE[key]
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode())
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 24), b""):
                digest.update(chunk)
    _HASH_CACHE[key] = digest.hexdigest()
    if sum(p.stat().st_size for p in files) > 1 << 28:  # remember hashes that took a while (> 256 MB)
        disk_cache[disk_key] = _HASH_CACHE[key]
        _write_disk_cache(disk_cache)
    return _HASH_CACHE[key]


def _cache_file() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "radfm" / "weights_sha256.json"


def _read_disk_cache() -> dict[str, str]:
    try:
        value = json.loads(_cache_file().read_text(encoding="utf-8"))
        return value if isinstance(value, dict) else {}
    except (OSError, json.JSONDecodeError):
        return {}


def _write_disk_cache(cache: dict[str, str]) -> None:
    """Best effort: a read-only home only costs a re-hash next time."""
    from radfm.utils.io import atomic_write_text

    try:
        atomic_write_text(_cache_file(), json.dumps(cache, indent=1))
    except OSError:
        pass


def identity_of_model_dir(model_dir: str | Path, name: str | None = None) -> ModelIdentity:
    """Identity of a saved model: name from ``config.json`` (``name_or_path``/``preset``) or the folder."""
    from radfm import __version__

    model_dir = Path(model_dir)
    version = __version__
    config_path = model_dir / "config.json"
    if name is None and config_path.is_file():
        config = json.loads(config_path.read_text(encoding="utf-8"))
        name = config.get("model_name") or config.get("preset") or None
    return ModelIdentity(name=name or f"RadFM ({model_dir.name})", version=version, weights_sha256=weights_sha256(model_dir))


def identity_of_model(model, name: str = "RadFM (in-memory)") -> ModelIdentity:
    """Identity of a model that was never saved: hash its state dict tensors (tests, random models)."""
    import torch

    from radfm import __version__

    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        digest.update(key.encode())
        if tensor.device.type == "meta":  # offloaded weights have no bytes here; hash the shape
            digest.update(str(tuple(tensor.shape)).encode())
            continue
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return ModelIdentity(name=name, version=__version__, weights_sha256=digest.hexdigest())
