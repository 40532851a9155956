"""Every registered base builds, gives vectors of its registered size, and computes exactly what the Keras
application of that name, with its own preprocess_input, computes, averaged over positions."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from click.testing import CliRunner

from featcache.api import export, extract, predict, train_head
from featcache.backbones.keras_app import KerasBackbone, preprocessing_layers
from featcache.backbones.registry import REGISTRY
from featcache.cache.layout import read_cache
from featcache.cli import main
from featcache.config import ExtractConfig
from featcache.errors import ConfigError
from tests.support import make_split_dataset

#: written out here, independently of the registry: name -> (Keras class, its module's preprocess_input, dim)
apps = keras.applications
KERAS = {
    "xception": (apps.Xception, apps.xception.preprocess_input, 2048),
    "efficientnetv2-b0": (apps.EfficientNetV2B0, apps.efficientnet_v2.preprocess_input, 1280),
    "efficientnetv2-s": (apps.EfficientNetV2S, apps.efficientnet_v2.preprocess_input, 1280),
    "resnet50v2": (apps.ResNet50V2, apps.resnet_v2.preprocess_input, 2048),
    "mobilenetv3-large": (apps.MobileNetV3Large, apps.mobilenet_v3.preprocess_input, 960),
    "convnext-tiny": (apps.ConvNeXtTiny, apps.convnext.preprocess_input, 768),
    "densenet121": (apps.DenseNet121, apps.densenet.preprocess_input, 1024),
    "inceptionv3": (apps.InceptionV3, apps.inception_v3.preprocess_input, 2048),
}  # fmt: skip


def test_the_registry_holds_the_bases_asked_for():
    assert set(REGISTRY) == set(KERAS)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(KERAS))
def test_each_base_equals_its_keras_application_with_average_pooling(name):
    spec = REGISTRY[name]
    size = max(spec.min_size, 75)
    pixels = np.random.default_rng(0).integers(0, 256, (2, size, size, 3)).astype(np.float32)
    got = KerasBackbone(name, "none", size).build()(pixels)
    application, preprocess_input, dim = KERAS[name]
    keras.utils.set_random_seed(0)  # what weights "none" means: a seeded random initialisation
    reference = application(weights=None, include_top=False, input_shape=(size, size, 3))
    # the average over positions of the base's feature map (for ConvNeXt this is not pooling="avg", which
    # normalises after pooling: featcache pools the base's own output, as for every other base)
    expected = np.asarray(reference(preprocess_input(pixels.copy()), training=False)).mean(axis=(1, 2))
    assert got.shape == (2, dim) == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    # the layers export puts before the base compute the same preprocess_input
    x = pixels.copy()
    for layer in preprocessing_layers(keras, spec):
        x = np.asarray(layer(x))
    np.testing.assert_allclose(x, np.asarray(preprocess_input(pixels.copy())), rtol=1e-5, atol=1e-5)


def test_sizes_default_to_the_base_and_below_its_minimum_are_refused(tmp_path):
    assert ExtractConfig(tmp_path).image_size == 150  # the recipe's size for the default Xception
    assert ExtractConfig(tmp_path, backbone="resnet50v2").image_size == 224
    assert ExtractConfig(tmp_path, backbone="inceptionv3").preprocess.preprocess == (
        "keras.applications.inception_v3.preprocess_input"
    )
    with pytest.raises(ConfigError, match="InceptionV3 needs at least 75 px"):
        ExtractConfig(tmp_path, backbone="inceptionv3", image_size=71)
    result = CliRunner().invoke(main, ["extract", str(tmp_path), "--backbone", "vgg16"])
    assert result.exit_code != 0 and "vgg16" in result.output


@pytest.mark.slow
def test_another_base_goes_through_extract_train_predict_and_export(tmp_path):
    data = make_split_dataset(tmp_path / "data", counts={"train": 6, "validation": 2, "test": 2})
    cache = tmp_path / "c.h5"
    extract(data, cache, backbone="mobilenetv3-large", weights="none", image_size=32)
    made = read_cache(cache)
    assert made.attrs["backbone"] == "mobilenetv3-large" and made.features.shape == (20, 960)
    assert json.loads(made.attrs["fingerprint_fields"])["backbone"] == (
        "keras.applications.MobileNetV3Large(include_top=False)"
    )
    head = tmp_path / "head"
    train_head(cache, head, epochs=2)
    rows = read_cache(cache)
    predicted = predict([data / rows.rows.path[0]], head=head, weights="none")
    assert predicted.predictions[0].top[0][0] in ("cat", "dog")
    written = export(head=head, out=tmp_path / "model.keras", weights="none")
    assert written.max_prob_diff <= 1e-4
