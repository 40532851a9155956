"""The default frozen backbone: Xception + GlobalAveragePooling2D (the reference recipe's base)."""

from __future__ import annotations

from featcache.backbones.keras_app import RANDOM_SEED, KerasBackbone, quiet_tensorflow
from featcache.backbones.registry import REGISTRY

__all__ = ["FEATURE_DIM", "IMAGENET_FILE", "RANDOM_SEED", "XceptionBackbone", "quiet_tensorflow"]

IMAGENET_FILE = REGISTRY["xception"].imagenet_file
FEATURE_DIM = REGISTRY["xception"].dim


class XceptionBackbone(KerasBackbone):
    """``keras.applications.Xception(include_top=False)`` + GlobalAveragePooling2D, frozen (see
    :class:`KerasBackbone`); its identity, hence every cache's fingerprint, is what it always was."""

    def __init__(self, weights: str = "imagenet", image_size: int = 150):
        super().__init__("xception", weights, image_size)
