"""Stage one on the real clothing dataset with the real ImageNet weights (../shared)."""

from __future__ import annotations

import numpy as np
import pytest

from featcache.api import extract
from featcache.backbones.xception import XceptionBackbone
from featcache.cache.layout import read_cache
from tests.support import REAL_DATA, REAL_WEIGHTS

pytestmark = pytest.mark.real

CLASSES = ["dress", "hat", "longsleeve", "outwear", "pants", "shirt", "shoes", "shorts", "skirt", "t-shirt"]


def test_every_image_lands_in_the_cache_with_keras_class_order(real_cache):
    cache = read_cache(real_cache, with_vectors=False)
    assert len(cache.rows) == 3781
    assert [cache.rows.split.count(s) for s in ("train", "validation", "test")] == [3068, 341, 372]
    assert cache.class_names == CLASSES
    assert cache.quarantine == []
    import keras

    keras_order = keras.utils.image_dataset_from_directory(REAL_DATA / "validation", image_size=(8, 8)).class_names
    assert keras_order == CLASSES


def test_stored_vectors_equal_xception_gap_run_directly_with_keras(real_cache):
    import keras

    cache = read_cache(real_cache)
    rows = np.random.default_rng(7).choice(len(cache.rows), size=20, replace=False)
    # the expected side is Keras' own loader, not featcache's (no clothing photo has an EXIF rotation)
    load = keras.utils.load_img
    pixels = np.stack(
        [keras.utils.img_to_array(load(REAL_DATA / cache.rows.path[i], target_size=(150, 150))) for i in rows]
    )
    base = keras.applications.Xception(weights=None, include_top=False, input_shape=(150, 150, 3))
    base.load_weights(str(REAL_WEIGHTS))
    pooled = keras.layers.GlobalAveragePooling2D()(base(keras.applications.xception.preprocess_input(pixels)))
    diff = np.abs(np.asarray(pooled) - cache.features[rows]).max()
    assert diff <= 1e-4, diff


class _CountingBackbone(XceptionBackbone):
    builds = 0

    def build(self):
        type(self).builds += 1
        return super().build()


def test_rerun_on_unchanged_data_computes_nothing(real_cache):
    backbone = _CountingBackbone(str(REAL_WEIGHTS), 150)
    result = extract(REAL_DATA, real_cache, weights=str(REAL_WEIGHTS), backbone=backbone)
    assert (result.rows, result.computed, result.reused) == (3781, 0, 3781)
    assert _CountingBackbone.builds == 0
