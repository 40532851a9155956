"""A frozen ``keras.applications`` base + GlobalAveragePooling2D: its weights, its preprocessing, its identity."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from featcache.backbones.protocol import Embedder
from featcache.backbones.registry import REGISTRY, TORCH_MEAN, TORCH_STD, BackboneSpec, preprocess_function
from featcache.config import WEIGHTS_ENV
from featcache.errors import WeightsError
from featcache.hashing import file_sha256

log = logging.getLogger(__name__)

RANDOM_SEED = 0


def quiet_tensorflow() -> None:
    """Silence TensorFlow's start-up chatter unless the user asked for it."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class KerasBackbone:
    """``keras.applications.<spec.application>(include_top=False)`` + GlobalAveragePooling2D, frozen.

    ``weights`` is ``"imagenet"`` (Keras cache or download), a path to a weights file (Keras
    ``.weights.h5`` or the legacy ``.h5`` Keras downloads), or ``"none"`` for a seeded random
    initialisation (for tests; its vectors mean nothing).
    """

    def __init__(self, spec: BackboneSpec | str, weights: str = "imagenet", image_size: int | None = None):
        self.spec = REGISTRY[spec] if isinstance(spec, str) else spec
        self.weights = weights
        self.image_size = image_size or self.spec.default_size

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def dim(self) -> int:
        return self.spec.dim

    def identity(self) -> dict:
        """What of the backbone changes the vectors, without importing TensorFlow."""
        if self.weights == "imagenet":
            weights_id = f"keras-imagenet:{self.spec.imagenet_file or self.spec.application}"
        elif self.weights == "none":
            weights_id = f"random-init:seed={RANDOM_SEED}"
        else:
            weights_id = "sha256:" + file_sha256(self._weights_path())
        return {
            "backbone": self.spec.description,
            "pooling": "GlobalAveragePooling2D",
            "weights_id": weights_id,
            "feature_dim": self.dim,
        }

    def _weights_path(self) -> Path:
        path = Path(self.weights).expanduser()
        if not path.is_file():
            raise WeightsError(
                f"weights file {path} does not exist; pass --weights PATH to the {self.spec.application} no-top "
                f"weights (or set {WEIGHTS_ENV}), or --weights imagenet to download them"
            )
        return path

    def build_model(self):
        """The Keras model: preprocessed float pixels of shape (s, s, 3) -> (dim,) vectors."""
        quiet_tensorflow()
        import keras

        size = (self.image_size, self.image_size, 3)
        if self.weights == "none":
            keras.utils.set_random_seed(RANDOM_SEED)
        base = self._base(keras, size)
        base.trainable = False
        inputs = keras.Input(shape=size, name="pixels")
        outputs = keras.layers.GlobalAveragePooling2D(name="pool")(base(inputs, training=False))
        return keras.Model(inputs, outputs, name=f"{self.spec.module}_gap")

    def _base(self, keras, size):
        application = getattr(keras.applications, self.spec.application)
        if self.weights == "imagenet":
            return _download_imagenet(application, self.spec, size)
        base = application(weights=None, include_top=False, input_shape=size)
        if self.weights != "none":
            path = self._weights_path()
            try:
                base.load_weights(str(path))
            except Exception as exc:  # Keras raises many types for a wrong file
                raise WeightsError(
                    f"could not load weights from {path}: {str(exc).splitlines()[0][:200]}; pass the "
                    f"{self.spec.application} no-top weights file (a .weights.h5 or the .h5 Keras downloads)"
                ) from None
        return base

    def build(self) -> Embedder:
        """A function from pixels (n, s, s, 3) in [0, 255] to float32 vectors (n, dim)."""
        import tensorflow as tf

        model = self.build_model()
        preprocess_input = preprocess_function(self.spec.preprocess)
        spec = tf.TensorSpec([None, self.image_size, self.image_size, 3], tf.float32)

        @tf.function(input_signature=[spec], jit_compile=False)
        def forward(pixels):
            return model(preprocess_input(pixels), training=False)

        def embed(batch: np.ndarray) -> np.ndarray:
            return forward(tf.constant(batch, dtype=tf.float32)).numpy().astype(np.float32, copy=False)

        return embed


def preprocessing_layers(keras, spec: BackboneSpec) -> list:
    """Keras layers that compute ``spec``'s ``preprocess_input`` on float pixels in [0, 255] (none when
    the model rescales its input itself), for models that must run without featcache."""
    if spec.scaling == "tf":  # x / 127.5 - 1
        return [keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name=f"{spec.module}_preprocess")]
    if spec.scaling == "torch":  # (x / 255 - mean) / std
        variance = [s * s for s in TORCH_STD]
        return [
            keras.layers.Rescaling(1.0 / 255.0, name=f"{spec.module}_scale"),
            keras.layers.Normalization(mean=list(TORCH_MEAN), variance=variance, name=f"{spec.module}_normalize"),
        ]
    return []


def _download_imagenet(application, spec: BackboneSpec, size):
    try:
        return application(weights="imagenet", include_top=False, input_shape=size)
    except Exception as exc:  # URL errors, HTTP errors, hash mismatches
        reason = str(exc).splitlines()[0][:160]
        name = spec.imagenet_file or f"the {spec.application} no-top weights"
        raise WeightsError(
            f"could not download the ImageNet {spec.application} weights ({reason}); on a machine without "
            f"network pass --weights PATH to {name} or a .weights.h5 file, or set {WEIGHTS_ENV}=PATH"
        ) from None
