"""The frozen bases featcache can extract with: one entry per ``keras.applications`` model.

Adding a base is one entry: its ``keras.applications`` class and module (where its
``preprocess_input`` lives), the input size it defaults to, the smallest it accepts, the size of its
pooled vector, how its ``preprocess_input`` scales pixels (for export and OpenVINO, which apply it
as a layer), and the name of the no-top weights file Keras downloads for it.
"""

from __future__ import annotations

from dataclasses import dataclass

#: how ``preprocess_input`` maps uint8 pixels, as Keras' imagenet_utils modes name it
#: tf: x / 127.5 - 1; torch: (x / 255 - mean) / std per channel; none: unchanged (the model rescales)
SCALINGS = ("tf", "torch", "none")
TORCH_MEAN, TORCH_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class BackboneSpec:
    """One ``keras.applications`` base: what builds it, what feeds it, what it gives."""

    name: str
    application: str  # the keras.applications class, e.g. "Xception"
    module: str  # the keras.applications module of its preprocess_input, e.g. "xception"
    default_size: int
    min_size: int
    dim: int  # channels of its last feature map: the GlobalAveragePooling2D vector's size
    scaling: str
    imagenet_file: str = ""

    @property
    def preprocess(self) -> str:
        """The dotted name of its ``preprocess_input``, as caches record it."""
        return f"keras.applications.{self.module}.preprocess_input"

    @property
    def description(self) -> str:
        return f"keras.applications.{self.application}(include_top=False)"


REGISTRY = {
    spec.name: spec
    for spec in (
        # featcache's default size for Xception is the reference recipe's 150 px, not Keras' 299
        BackboneSpec(
            "xception",
            "Xception",
            "xception",
            150,
            71,
            2048,
            "tf",
            "xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
        ),
        BackboneSpec("efficientnetv2-b0", "EfficientNetV2B0", "efficientnet_v2", 224, 32, 1280, "none"),
        BackboneSpec("efficientnetv2-s", "EfficientNetV2S", "efficientnet_v2", 384, 32, 1280, "none"),
        BackboneSpec("resnet50v2", "ResNet50V2", "resnet_v2", 224, 32, 2048, "tf"),
        BackboneSpec("mobilenetv3-large", "MobileNetV3Large", "mobilenet_v3", 224, 32, 960, "none"),
        BackboneSpec("convnext-tiny", "ConvNeXtTiny", "convnext", 224, 32, 768, "none"),
        BackboneSpec("densenet121", "DenseNet121", "densenet", 224, 32, 1024, "torch"),
        BackboneSpec("inceptionv3", "InceptionV3", "inception_v3", 299, 75, 2048, "tf"),
    )  # fmt: skip
}
BACKBONE_NAMES = tuple(REGISTRY)
PREPROCESS_FUNCTIONS = {spec.preprocess: spec for spec in REGISTRY.values()}


def preprocess_function(name: str):
    """The Keras ``preprocess_input`` a cache recorded, for the registry's functions only (never an
    arbitrary import named by a file)."""
    import importlib

    spec = PREPROCESS_FUNCTIONS[name]
    return importlib.import_module(f"keras.applications.{spec.module}").preprocess_input
