"""Classification finetunes: the RadFM vision encoder + mean pooling + a linear head.

As in the paper's task-specific finetunes, the 3D ViT (from a RadFM checkpoint, or random)
initialises 2D/3D classifiers. The bundle ``bundles/radfm_classification`` trains it with
``radfm.engines.loss.classification_loss`` and scores it with ``radfm.metrics.ignite_metrics.MacroAUCF1``.
"""

from __future__ import annotations

import copy
import os
from typing import Any

import torch
from torch import nn


class RadFMClassifier(nn.Module):
    """``[B, 3, H, W, D]`` → logits ``[B, num_classes]`` (mean over the ViT's patch tokens)."""

    def __init__(self, vision_encoder: nn.Module, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        if num_classes < 2 and num_classes != 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.vision_encoder = vision_encoder
        dim = vision_encoder.config.dim
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        tokens = self.vision_encoder(images)  # [B, T, dim]
        return self.head(self.dropout(self.norm(tokens.mean(dim=1))))

    def __prepare_scriptable__(self) -> RadFMClassifier:
        """``torch.jit.script`` hook (what ``monai.bundle ckpt_export`` runs by default): a copy whose
        encoder is traced (the ViT's shape checks and einops patching are Python), the head scripted.

        The trace records the grid sizes as ``aten::size`` operations, so the exported module takes
        other batch sizes and grids too (tested against eager).
        """
        if isinstance(self.vision_encoder, torch.jit.ScriptModule):
            return self
        config = self.vision_encoder.config
        example = torch.rand(1, config.channels, 2 * config.patch_size, 2 * config.patch_size,
                             2 * config.frame_patch_size, device=self.head.weight.device, dtype=self.head.weight.dtype)
        scriptable = copy.copy(self)
        scriptable._modules = dict(self._modules)
        encoder = copy.deepcopy(self.vision_encoder).eval()
        with torch.no_grad():
            scriptable._modules["vision_encoder"] = torch.jit.trace(encoder, example, check_trace=False)
        return scriptable


def load_classifier(
    num_classes: int,
    *,
    radfm_dir: str | os.PathLike | None = None,
    preset: str = "tiny",
    vision_overrides: dict[str, Any] | None = None,
    seed: int = 0,
) -> RadFMClassifier:
    """Classifier whose encoder comes from ``radfm_dir`` (a RadFM model folder) or is random."""
    from radfm.model.config import RadFMConfig, VisionConfig
    from radfm.model.vision import VisionEncoder3D

    torch.manual_seed(seed)
    if radfm_dir is not None:
        from radfm.model.loading import load

        encoder = copy.deepcopy(load(radfm_dir, device="cpu", dtype="float32").model.vision_encoder)
    else:
        values = RadFMConfig.preset(preset).vision_config.sizes()
        values.update(vision_overrides or {})
        encoder = VisionEncoder3D(VisionConfig(**values))
    return RadFMClassifier(encoder, num_classes)


# What a classifier folder records beside its weights (model.pt) and its grid (preprocess.json):
# the architecture, so that inference, evaluation and `radfm classify` build the same network.
CLASSIFIER_CONFIG_FILE = "classifier.json"


def classifier_config(model: RadFMClassifier, *, multi_label: bool, labels: list[str] | None = None) -> dict[str, Any]:
    """The architecture of ``model`` as a JSON-able dict (``classifier.json``).

    Args:
        model: the classifier.
        multi_label: sigmoid per class (True) or softmax over the classes (False).
        labels: optional class names, in class order.

    Returns:
        ``{"num_classes", "multi_label", "labels", "vision"}`` (``vision``: the encoder's ``VisionConfig`` sizes).
    """
    if labels is not None and len(labels) != model.head.out_features:
        raise ValueError(f"{len(labels)} labels for {model.head.out_features} classes")
    return {"num_classes": int(model.head.out_features), "multi_label": bool(multi_label),
            "labels": None if labels is None else [str(label) for label in labels],
            "vision": dict(model.vision_encoder.config.sizes())}


def save_classifier_config(model: RadFMClassifier, folder: str | os.PathLike, *, multi_label: bool,
                           labels: list[str] | None = None) -> str:
    """Write ``classifier.json`` (atomically) into ``folder``.

    Args:
        model: the classifier whose weights the folder holds.
        folder: the classifier folder (``model.pt``, ``preprocess.json``).
        multi_label: as in :func:`classifier_config`.
        labels: as in :func:`classifier_config`.

    Returns:
        The path written.
    """
    import json

    from radfm.utils.io import atomic_write_text

    path = os.path.join(folder, CLASSIFIER_CONFIG_FILE)
    os.makedirs(folder, exist_ok=True)
    atomic_write_text(path, json.dumps(classifier_config(model, multi_label=multi_label, labels=labels), indent=1) + "\n")
    return path


def read_classifier_config(folder: str | os.PathLike) -> dict[str, Any]:
    """The architecture a classifier folder records (``classifier.json``), checked.

    Args:
        folder: a classifier folder.

    Returns:
        The dict of :func:`classifier_config`.

    Raises:
        FileNotFoundError / ValueError naming the file and what was expected.
    """
    import json

    from radfm.model.config import VISION_FIELDS

    path = os.path.join(folder, CLASSIFIER_CONFIG_FILE)
    if not os.path.isfile(path):
        hint = (" (a RadFM model folder, not a classifier)" if os.path.isfile(os.path.join(folder, "config.json"))
                else "")
        raise FileNotFoundError(f"{path} is missing{hint}: a classifier folder holds model.pt, preprocess.json "
                                "and classifier.json (written by the classification bundle's train.json)")
    try:
        config = json.loads(open(path, encoding="utf-8").read())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(config, dict) or not isinstance(config.get("num_classes"), int) or config["num_classes"] < 1:
        raise ValueError(f"{path}: field 'num_classes': expected an integer >= 1")
    if not isinstance(config.get("multi_label"), bool):
        raise ValueError(f"{path}: field 'multi_label': expected true or false")
    vision = config.get("vision")
    if not isinstance(vision, dict) or set(vision) - set(VISION_FIELDS):
        raise ValueError(f"{path}: field 'vision': expected an object with some of {list(VISION_FIELDS)}")
    labels = config.get("labels")
    if labels is not None and (not isinstance(labels, list) or len(labels) != config["num_classes"]):
        raise ValueError(f"{path}: field 'labels': expected null or {config['num_classes']} class names")
    return config


def classifier_from_config(config: dict[str, Any], seed: int = 0) -> RadFMClassifier:
    """The (untrained) network a ``classifier.json`` describes; the weights come from ``model.pt``.

    Args:
        config: what :func:`read_classifier_config` returns.
        seed: seed of the initial weights.

    Returns:
        The classifier.
    """
    from radfm.model.config import VisionConfig
    from radfm.model.vision import VisionEncoder3D

    torch.manual_seed(seed)
    return RadFMClassifier(VisionEncoder3D(VisionConfig(**config["vision"])), config["num_classes"])


def load_classifier_dir(folder: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[RadFMClassifier, dict[str, Any]]:
    """A trained classifier folder: the network with its ``model.pt`` weights, in eval mode, and its config.

    Args:
        folder: the classifier folder (``model.pt``, ``preprocess.json``, ``classifier.json``).
        device: where to load it.

    Returns:
        ``(model, config)``.
    """
    config = read_classifier_config(folder)
    weights = os.path.join(folder, "model.pt")
    if not os.path.isfile(weights):
        raise FileNotFoundError(f"{weights} is missing: a classifier folder holds its weights as model.pt")
    model = classifier_from_config(config)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and set(state) == {"model"}:  # a checkpoint dict rather than the bare state dict
        state = state["model"]
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[1:2] or [""]
        raise ValueError(f"{weights}: the weights do not fit the architecture of {CLASSIFIER_CONFIG_FILE} "
                         f"({first[0].strip()})") from None
    return model.to(device).eval(), config
