"""Augmented views: the built-in policies are the recipe's ImageDataGenerator settings, and a view's pixels
are exactly what Keras' ImageDataGenerator.apply_transform makes of its parameters."""

from __future__ import annotations

import json

import numpy as np
import pytest

from featcache.augment import POLICIES, AugmentPolicy, apply_view, policy_for, view_parameters
from featcache.errors import ConfigError

SHA = "ab" * 32


def _generator(**kwargs):
    from tensorflow.keras.preprocessing.image import ImageDataGenerator

    return ImageDataGenerator(**kwargs)


KERAS_SETTINGS = {
    "lesson": {"shear_range": 10, "zoom_range": 0.1, "vertical_flip": True},
    "flip": {"horizontal_flip": True},
    "light": {"rotation_range": 10, "zoom_range": 0.05, "horizontal_flip": True},
}


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_builtin_policies_are_the_image_data_generator_settings_they_name(name):
    keras_gen, policy = _generator(**KERAS_SETTINGS[name]), POLICIES[name]
    assert policy.rotation_range == keras_gen.rotation_range
    assert policy.shear_range == keras_gen.shear_range
    assert list(policy.zoom_range) == pytest.approx(list(keras_gen.zoom_range))
    assert (policy.horizontal_flip, policy.vertical_flip) == (keras_gen.horizontal_flip, keras_gen.vertical_flip)
    assert policy.fill_mode == keras_gen.fill_mode


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_views_equal_keras_apply_transform_of_the_same_parameters(name):
    pixels = np.random.default_rng(1).integers(0, 256, (150, 150, 3)).astype(np.uint8)
    keras_gen, policy = _generator(**KERAS_SETTINGS[name]), POLICIES[name]
    for view in range(6):
        params = view_parameters(policy, 0, SHA, view, (150, 150))
        expected = keras_gen.apply_transform(pixels.astype(np.float32), params)
        np.testing.assert_array_equal(apply_view(pixels, params, policy), expected)


def test_a_json_policy_with_every_transform_equals_keras():
    settings = {
        "rotation_range": 20, "width_shift_range": 0.1, "height_shift_range": 5, "shear_range": 5,
        "zoom_range": [0.8, 1.2], "horizontal_flip": True, "fill_mode": "reflect",
    }  # fmt: skip
    policy = AugmentPolicy.from_dict(settings)
    pixels = np.random.default_rng(2).integers(0, 256, (80, 96, 3)).astype(np.uint8)
    for view in range(4):
        params = view_parameters(policy, 3, SHA, view, pixels.shape[:2])
        assert params["tx"] != 0 and params["ty"] != 0 and params["theta"] != 0
        expected = _generator(**settings).apply_transform(pixels.astype(np.float32), params)
        np.testing.assert_array_equal(apply_view(pixels, params, policy), expected)


def test_view_parameters_depend_on_content_view_seed_and_policy_only():
    lesson = POLICIES["lesson"]
    first = view_parameters(lesson, 0, SHA, 2, (150, 150))
    assert view_parameters(lesson, 0, SHA, 2, (150, 150)) == first  # same inputs, same view
    assert view_parameters(lesson, 1, SHA, 2, (150, 150)) != first
    assert view_parameters(lesson, 0, "cd" * 32, 2, (150, 150)) != first
    assert view_parameters(lesson, 0, SHA, 3, (150, 150)) != first
    renamed = AugmentPolicy.from_dict(lesson.identity, name="mine")
    assert view_parameters(renamed, 0, SHA, 2, (150, 150)) == first  # the name is not a parameter


def test_policy_files_and_their_errors(tmp_path):
    good = tmp_path / "mine.json"
    good.write_text(json.dumps({"horizontal_flip": True, "zoom_range": 0.2}))
    policy = policy_for(str(good))
    assert policy.name == "mine" and policy.zoom_range == pytest.approx((0.8, 1.2)) and policy.horizontal_flip
    bad = tmp_path / "bad.json"
    for content, words in [
        ('{"brightness_range": [0.5, 1.5]}', "unknown key(s) brightness_range"),
        ('{"zoom_range": [1.2, 0.8]}', "zoom_range must be"),
        ('{"fill_mode": "mirror"}', "fill_mode must be one of"),
        ("{not json", "not valid JSON"),
    ]:
        bad.write_text(content)
        with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
            policy_for(str(bad))
    with pytest.raises(ConfigError, match="unknown augmentation policy 'heavy'"):
        policy_for("heavy")
    with pytest.raises(ConfigError, match="cannot read augmentation policy"):
        policy_for(str(tmp_path / "missing.json"))
