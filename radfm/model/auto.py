"""Register RadFM with transformers' Auto classes (run once transformers is imported; see ``radfm/__init__.py``).

After this, ``AutoConfig``/``AutoModelForImageTextToText``/``AutoModelForCausalLM``-style loading,
``AutoImageProcessor`` and ``AutoProcessor`` resolve ``model_type: radfm`` folders to our classes,
without ``trust_remote_code``.
"""

from __future__ import annotations

from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForImageTextToText, AutoProcessor

from radfm.model.config import PerceiverConfig, RadFMConfig, VisionConfig
from radfm.model.processing import RadFMImageProcessor, RadFMProcessor
from radfm.model.radfm import RadFMForConditionalGeneration


def register() -> None:
    """Idempotent registration of the config, model, image processor and processor classes."""
    for config in (RadFMConfig, VisionConfig, PerceiverConfig):
        AutoConfig.register(config.model_type, config, exist_ok=True)
    AutoModelForImageTextToText.register(RadFMConfig, RadFMForConditionalGeneration, exist_ok=True)
    AutoModel.register(RadFMConfig, RadFMForConditionalGeneration, exist_ok=True)
    AutoImageProcessor.register(RadFMConfig, image_processor_classes={"pil": RadFMImageProcessor,
                                                                      "torchvision": RadFMImageProcessor}, exist_ok=True)
    AutoProcessor.register(RadFMConfig, RadFMProcessor, exist_ok=True)


register()
