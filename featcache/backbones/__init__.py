"""Frozen backbones: the :class:`Backbone` contract, and the Xception of a precision and runtime.

``xception`` runs Keras' Xception + GlobalAveragePooling2D on TensorFlow; ``openvino`` runs the
same model converted to OpenVINO (float32 or bfloat16). Both implement :class:`Backbone`.
"""

from __future__ import annotations

from featcache.backbones.protocol import Backbone, Embedder

__all__ = ["Backbone", "Embedder", "backbone_for"]


def backbone_for(weights: str, image_size: int, precision: str = "float32", runtime: str = "tensorflow") -> Backbone:
    """The frozen Xception computing at ``precision`` on ``runtime`` (tensorflow, or openvino).

    TensorFlow float32 is the exact default; OpenVINO runs float32 (within 1e-5 of it) or bfloat16.
    Raises ConfigError naming the install command when OpenVINO is asked for but missing.
    """
    from featcache.backbones.xception import XceptionBackbone

    base = XceptionBackbone(weights, image_size)
    if runtime == "tensorflow" and precision == "float32":
        return base
    from featcache.backbones.openvino import OpenVinoBackbone, require_openvino

    require_openvino(precision)
    return OpenVinoBackbone(base, precision)
