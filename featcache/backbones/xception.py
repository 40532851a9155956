"""The frozen backbone: Xception + GlobalAveragePooling2D, its weights, and its identity in a fingerprint."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from featcache.backbones.protocol import Embedder
from featcache.config import WEIGHTS_ENV
from featcache.errors import WeightsError
from featcache.hashing import file_sha256

log = logging.getLogger(__name__)

IMAGENET_FILE = "xception_weights_tf_dim_ordering_tf_kernels_notop.h5"
FEATURE_DIM = 2048
RANDOM_SEED = 0


def quiet_tensorflow() -> None:
    """Silence TensorFlow's start-up chatter unless the user asked for it."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class XceptionBackbone:
    """``keras.applications.Xception(include_top=False)`` + GlobalAveragePooling2D, frozen.

    ``weights`` is ``"imagenet"`` (Keras cache or download), a path to a weights file
    (Keras ``.weights.h5`` or the legacy ``.h5`` Keras downloads), or ``"none"`` for a
    seeded random initialisation (for tests; its vectors mean nothing).
    """

    name = "xception"
    dim = FEATURE_DIM

    def __init__(self, weights: str = "imagenet", image_size: int = 150):
        self.weights = weights
        self.image_size = image_size

    def identity(self) -> dict:
        """What of the backbone changes the vectors, without importing TensorFlow."""
        if self.weights == "imagenet":
            weights_id = f"keras-imagenet:{IMAGENET_FILE}"
        elif self.weights == "none":
            weights_id = f"random-init:seed={RANDOM_SEED}"
        else:
            weights_id = "sha256:" + file_sha256(self._weights_path())
        return {
            "backbone": "keras.applications.Xception(include_top=False)",
            "pooling": "GlobalAveragePooling2D",
            "weights_id": weights_id,
            "feature_dim": self.dim,
        }

    def _weights_path(self) -> Path:
        path = Path(self.weights).expanduser()
        if not path.is_file():
            raise WeightsError(
                f"weights file {path} does not exist; pass --weights PATH to the Xception no-top "
                f"weights (or set {WEIGHTS_ENV}), or --weights imagenet to download them"
            )
        return path

    def build_model(self):
        """The Keras model: float pixels in [-1, 1] of shape (s, s, 3) -> (dim,) vectors."""
        quiet_tensorflow()
        import keras

        size = (self.image_size, self.image_size, 3)
        if self.weights == "none":
            keras.utils.set_random_seed(RANDOM_SEED)
        base = self._base(keras, size)
        base.trainable = False
        inputs = keras.Input(shape=size, name="pixels")
        outputs = keras.layers.GlobalAveragePooling2D(name="pool")(base(inputs, training=False))
        return keras.Model(inputs, outputs, name="xception_gap")

    def _base(self, keras, size):
        if self.weights == "imagenet":
            return _download_imagenet(keras, size)
        base = keras.applications.Xception(weights=None, include_top=False, input_shape=size)
        if self.weights != "none":
            path = self._weights_path()
            try:
                base.load_weights(str(path))
            except Exception as exc:  # Keras raises many types for a wrong file
                raise WeightsError(
                    f"could not load weights from {path}: {str(exc).splitlines()[0][:200]}; pass the "
                    f"Xception no-top weights file ({IMAGENET_FILE} or a .weights.h5)"
                ) from None
        return base

    def build(self) -> Embedder:
        """A function from uint8 pixels (n, s, s, 3) to float32 vectors (n, dim)."""
        import tensorflow as tf
        from keras.applications.xception import preprocess_input

        model = self.build_model()
        spec = tf.TensorSpec([None, self.image_size, self.image_size, 3], tf.float32)

        @tf.function(input_signature=[spec], jit_compile=False)
        def forward(pixels):
            return model(preprocess_input(pixels), training=False)

        def embed(batch: np.ndarray) -> np.ndarray:
            return forward(tf.constant(batch, dtype=tf.float32)).numpy().astype(np.float32, copy=False)

        return embed


def _download_imagenet(keras, size):
    try:
        return keras.applications.Xception(weights="imagenet", include_top=False, input_shape=size)
    except Exception as exc:  # URL errors, HTTP errors, hash mismatches
        reason = str(exc).splitlines()[0][:160]
        raise WeightsError(
            f"could not download the ImageNet Xception weights ({reason}); on a machine without "
            f"network pass --weights PATH to {IMAGENET_FILE} or a .weights.h5 file, "
            f"or set {WEIGHTS_ENV}=PATH"
        ) from None
