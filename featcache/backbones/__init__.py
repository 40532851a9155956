"""Frozen backbones: the :class:`Backbone` contract, and a registered base at a precision and runtime.

``keras_app`` runs a ``keras.applications`` base (:mod:`registry`; Xception by default) +
GlobalAveragePooling2D on TensorFlow; ``openvino`` runs the same model converted to OpenVINO
(float32 or bfloat16). Both implement :class:`Backbone`.
"""

from __future__ import annotations

from featcache.backbones.protocol import Backbone, Embedder

__all__ = ["Backbone", "Embedder", "backbone_for"]


def backbone_for(
    weights: str, image_size: int, precision: str = "float32", runtime: str = "tensorflow", name: str = "xception"
) -> Backbone:
    """The frozen base ``name`` (a key of :data:`featcache.backbones.registry.REGISTRY`) computing at
    ``precision`` on ``runtime`` (tensorflow, or openvino).

    TensorFlow float32 is the exact default; OpenVINO runs float32 (within 1e-5 of it) or bfloat16.
    Raises ConfigError naming the install command when OpenVINO is asked for but missing.
    """
    from featcache.backbones.keras_app import KerasBackbone
    from featcache.backbones.xception import XceptionBackbone

    base = XceptionBackbone(weights, image_size) if name == "xception" else KerasBackbone(name, weights, image_size)
    if runtime == "tensorflow" and precision == "float32":
        return base
    from featcache.backbones.openvino import OpenVinoBackbone, require_openvino

    require_openvino(precision)
    return OpenVinoBackbone(base, precision)
