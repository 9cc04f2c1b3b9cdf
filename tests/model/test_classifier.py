"""``radfm.model.classifier``: the RadFM vision encoder as a 2D/3D classifier."""

from __future__ import annotations

import pytest
import torch

SMALL_VISION = {"patch_size": 16, "depth": 1}  # the tiny preset's encoder, smaller still


def test_classifier_logits_shape_and_seeded_init():
    from radfm.model.classifier import RadFMClassifier, load_classifier

    model = load_classifier(3, vision_overrides=SMALL_VISION, seed=1).eval()
    again = load_classifier(3, vision_overrides=SMALL_VISION, seed=1)
    assert isinstance(model, RadFMClassifier)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    with torch.no_grad():
        logits = model(torch.rand(2, 3, 32, 32, 8))
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()
    with pytest.raises(ValueError, match="num_classes must be >= 1"):
        RadFMClassifier(model.vision_encoder, 0)
