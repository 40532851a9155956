"""The recipe, the choice of live weights, head loading and image listing used by predict, export and verify."""

from __future__ import annotations

import json

import numpy as np
import pytest

from featcache.errors import ConfigError, HeadError, WeightsError
from featcache.images import PreprocessSpec
from featcache.serving.recipe import Recipe, collect_images, live_backbone, require_match
from featcache.training.head_files import load_head
from featcache.training.metrics import softmax
from tests.support import FakeBackbone, write_image

RANDOM_ID = "random-init:seed=0"


def recipe(weights="none", weights_id=RANDOM_ID, size=71):
    return Recipe(PreprocessSpec(image_size=size), weights, weights_id, ("cat", "dog"))


def test_recipe_from_cache_and_head_agree():
    spec = PreprocessSpec(image_size=99, interpolation="bicubic")
    attrs = {"preprocessing": json.dumps(spec.to_dict()), "weights": "w.h5", "weights_id": "sha256:abc"}
    from_cache = Recipe.from_cache(attrs, ["a", "b"])
    meta = {"preprocessing": spec.to_dict(), "weights": "w.h5", "weights_id": "sha256:abc", "class_names": ["a", "b"]}
    assert Recipe.from_head(meta) == from_cache
    assert from_cache.spec == spec


def test_recorded_weights_are_used_when_nothing_else_is_given(monkeypatch):
    monkeypatch.delenv("FEATCACHE_WEIGHTS", raising=False)
    live = live_backbone(recipe())
    assert live.matches and live.weights == "none" and live.backbone.image_size == 71


def test_env_weights_that_do_not_match_give_way_to_recorded_ones(monkeypatch, tmp_path):
    monkeypatch.setenv("FEATCACHE_WEIGHTS", str(tmp_path / "absent.weights.h5"))
    assert live_backbone(recipe()).weights == "none"


def test_explicit_other_weights_are_reported_as_not_matching(tmp_path):
    other = tmp_path / "other.weights.h5"
    other.write_bytes(b"not the recorded weights")
    live = live_backbone(recipe(), weights=str(other))
    assert not live.matches and live.weights_id.startswith("sha256:")
    with pytest.raises(WeightsError, match="not the ones the head was made with"):
        require_match(live, recipe(), "the head")


def test_unreadable_weights_everywhere_say_what_to_pass(monkeypatch, tmp_path):
    monkeypatch.delenv("FEATCACHE_WEIGHTS", raising=False)
    missing = recipe(weights=str(tmp_path / "gone.h5"), weights_id="sha256:abc")
    with pytest.raises(WeightsError, match="--weights PATH"):
        live_backbone(missing)


def test_a_given_backbone_is_used_and_compared_by_weights_id():
    live = live_backbone(recipe(weights_id="none"), backbone=FakeBackbone())
    assert live.matches
    assert not live_backbone(recipe(), backbone=FakeBackbone()).matches


def test_collect_images_recurses_keeps_order_and_reports_missing(tmp_path):
    folder = tmp_path / "imgs"
    b = write_image(folder / "sub" / "b.png", (1, 2, 3), 1)
    a = write_image(folder / "a.jpg", (1, 2, 3), 2)
    write_image(folder / ".hidden" / "c.jpg", (1, 2, 3), 3)
    (folder / "notes.txt").write_text("not an image")
    single = write_image(tmp_path / "single.jpg", (1, 2, 3), 4)
    entries = collect_images([single, tmp_path / "nope.jpg", folder, a])
    assert entries == [(single, None), (tmp_path / "nope.jpg", "no such file or folder"), (a, None), (b, None)]


def test_collect_images_of_an_empty_folder_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="no images found"):
        collect_images([tmp_path])


def test_a_folder_without_a_head_is_refused(tmp_path):
    with pytest.raises(HeadError):
        load_head(tmp_path)


def test_a_head_json_of_another_tool_is_refused(tmp_path):
    (tmp_path / "head.json").write_text(json.dumps({"format": "something-else"}))
    (tmp_path / "head.keras").write_bytes(b"")
    with pytest.raises(HeadError):
        load_head(tmp_path)


def test_softmax_is_stable_and_normalised():
    probs = softmax(np.array([[1000.0, 0.0], [0.0, 0.0]]))
    np.testing.assert_allclose(probs, [[1.0, 0.0], [0.5, 0.5]], atol=1e-6)
