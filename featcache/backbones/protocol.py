"""The backbone contract: what stage one, predict, verify and export need of a frozen feature extractor."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import numpy as np

#: uint8 pixels (n, s, s, 3) -> float32 vectors (n, dim)
Embedder = Callable[[np.ndarray], np.ndarray]


@runtime_checkable
class Backbone(Protocol):
    """A frozen image feature extractor.

    ``identity()`` names everything of the backbone that changes its vectors (keys ``backbone``,
    ``pooling``, ``weights_id``, ``feature_dim``, and any others), without building the model:
    it goes into the cache's fingerprint. ``build()`` builds the model and returns an
    :data:`Embedder`; it is called only when an image needs computing. The runtimes
    (:class:`featcache.backbones.xception.XceptionBackbone`,
    :class:`featcache.backbones.openvino.OpenVinoBackbone`) and the fakes in the tests implement it.
    ``export`` also needs ``build_model()``: a Keras model from pixels in [-1, 1] to vectors.
    """

    def identity(self) -> dict: ...

    def build(self) -> Embedder: ...
