"""The arrays of a cache's splits, the stable validation carve, and caches nothing can be trained on."""

from __future__ import annotations

import numpy as np
import pytest

from featcache.errors import CacheError
from featcache.training.metrics import softmax
from featcache.training.splits import carve_validation, load_splits, one_hot
from tests.support import handmade_cache, tiny_cache


def test_splits_follow_the_cache(tmp_path):
    splits = load_splits(tiny_cache(tmp_path))
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (12, 4, 4)
    assert splits.feature_dim == 16 and splits.train.x.dtype == np.float32
    assert splits.class_names == ["cat", "dog"] and not splits.val_carved
    assert set(splits.train.y) == {0, 1}


def test_missing_validation_is_carved_from_train_stably(tmp_path):
    cache = tiny_cache(tmp_path, counts={"train": 10, "test": 2})
    first, second = load_splits(cache, holdout_fraction=0.25), load_splits(cache, holdout_fraction=0.25)
    assert first.val_carved and len(first.validation) == 5 and len(first.train) == 15
    assert np.array_equal(first.validation.rows, second.validation.rows)
    assert not set(first.validation.rows) & set(first.train.rows)


def test_carve_depends_on_content_not_order():
    shas = [f"{i:064x}" for i in range(40)]
    rows = np.arange(40)
    _, held = carve_validation(rows, shas, 0.2, "c.h5")
    _, held_reversed = carve_validation(rows[::-1].copy(), shas[::-1], 0.2, "c.h5")
    assert len(held) == 8 and set(held) == set(held_reversed)


def test_no_train_rows_is_refused(tmp_path):
    cache = handmade_cache(tmp_path / "c.h5", [0, 1, 0, 1], ["test"] * 4, ["a", "b"])
    with pytest.raises(CacheError, match="no train rows"):
        load_splits(cache)


def test_one_class_is_refused(tmp_path):
    cache = handmade_cache(tmp_path / "c.h5", [0, 0, 0], ["train"] * 3, ["a"])
    with pytest.raises(CacheError, match="at least two"):
        load_splits(cache)


def test_train_rows_of_one_class_are_refused(tmp_path):
    cache = handmade_cache(tmp_path / "c.h5", [0, 0, 1], ["train", "train", "test"], ["a", "b"])
    with pytest.raises(CacheError, match="one class only"):
        load_splits(cache)


def test_a_carve_must_leave_train_rows(tmp_path):
    cache = handmade_cache(tmp_path / "c.h5", [0, 1], ["train", "train"], ["a", "b"])
    with pytest.raises(CacheError, match="2 train row"):
        load_splits(cache, holdout_fraction=0.9)


def test_missing_cache_says_how_to_make_one(tmp_path):
    with pytest.raises(CacheError, match="featcache extract"):
        load_splits(tmp_path / "nothing.h5")


def test_one_hot_and_softmax():
    assert one_hot(np.array([1, 0]), 3).tolist() == [[0, 1, 0], [1, 0, 0]]
    p = softmax(np.array([[1000.0, 1000.0], [0.0, np.log(3.0)]]))
    np.testing.assert_allclose(p, [[0.5, 0.5], [0.25, 0.75]])


def test_views_of_rows_carved_into_validation_are_left_out_and_the_rest_are_the_caches(tmp_path):
    import h5py

    from featcache.api import extract
    from tests.support import FakeBackbone, make_split_dataset

    data = make_split_dataset(tmp_path / "data", counts={"train": 10, "test": 2})  # no validation folder
    cache = tmp_path / "c.h5"
    extract(data, cache, backbone=FakeBackbone(), augment=2)
    splits = load_splits(cache, 0.3, None, with_test=False, with_views=True)
    assert splits.val_carved and len(splits.validation.rows) > 0
    with h5py.File(cache, "r") as h5:  # the reference: plain h5py
        g = h5["augmented"]
        vectors, row, view = g["features"][:], g["row"][:], g["view"][:]
    views = splits.train.views
    assert views.at.shape == (len(splits.train.rows), 2) and (views.at >= 0).all()
    assert len(views.x) == 2 * len(splits.train.rows) < len(vectors)  # the carved rows' views are not held
    for i, r in enumerate(splits.train.rows):
        for j in range(2):
            (k,) = np.flatnonzero((row == r) & (view == j))
            np.testing.assert_array_equal(views.x[views.at[i, j]], vectors[k])
