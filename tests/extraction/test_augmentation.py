"""extract --augment: K views of every train image beside the clean rows, incremental, with their own fingerprint."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from featcache.api import compact, extract, info, verify
from featcache.augment import POLICIES, apply_view, view_parameters
from featcache.cache.layout import read_cache, read_views, views_folder
from featcache.cache.shards import list_shards
from featcache.errors import ConfigError
from featcache.images import PreprocessSpec, load_image
from tests.support import FakeBackbone, fake_embed, make_split_dataset, write_image

SPEC = PreprocessSpec(image_size=150)


@pytest.fixture
def data(tmp_path):
    return make_split_dataset(tmp_path / "data", counts={"train": 4, "validation": 2, "test": 2})


def _views(out):
    """{(path, view): vector} of a cache's views, read with plain h5py."""
    with h5py.File(out) as h5:
        paths = h5["path"].asstr()[:]
        g = h5["augmented"]
        return {(paths[r], int(v)): x for r, v, x in zip(g["row"][:], g["view"][:], g["features"][:])}


def _expected_view(data, relpath, sha, view, policy="lesson", seed=0):
    pixels = load_image(data / relpath, SPEC)
    params = view_parameters(POLICIES[policy], seed, sha, view, pixels.shape[:2])
    return fake_embed(apply_view(pixels, params, POLICIES[policy])[None])[0]


def test_views_of_every_train_image_are_the_embedded_transforms(data, tmp_path):
    out = tmp_path / "c.h5"
    result = extract(data, out, backbone=FakeBackbone(), augment=3)
    cache = read_cache(out)
    train = [i for i, s in enumerate(cache.rows.split) if s == "train"]
    views = _views(out)
    assert len(views) == 3 * len(train) == result.views.computed
    assert {p for p, _ in views} == {cache.rows.path[i] for i in train}  # validation and test stay clean
    for i in train[:3]:
        for j in range(3):
            expected = _expected_view(data, cache.rows.path[i], cache.rows.sha256[i], j)
            np.testing.assert_allclose(views[(cache.rows.path[i], j)], expected, atol=1e-6)
    assert "views: 3 per train image (policy lesson, seed 0)" in result.summary()
    shown = info(out)
    assert shown.views["per_split"] == {"train": 3 * len(train), "validation": 0, "test": 0}
    assert "augmented views: 3 per train image, policy lesson, seed 0" in shown.summary()


def test_views_leave_the_clean_vectors_and_their_fingerprint_alone(data, tmp_path):
    plain, augmented = tmp_path / "plain.h5", tmp_path / "aug.h5"
    extract(data, plain, backbone=FakeBackbone())
    extract(data, augmented, backbone=FakeBackbone(), augment=2)
    a, b = read_cache(plain), read_cache(augmented)
    assert a.fingerprint == b.fingerprint and a.rows.sha256 == b.rows.sha256
    np.testing.assert_array_equal(a.features, b.features)
    views = read_views(augmented)
    assert json.loads(views.attrs["fingerprint_fields"])["cache_fingerprint"] == a.fingerprint


def test_raising_k_computes_only_the_new_views_and_keeps_the_old_ones(data, tmp_path):
    out, backbone = tmp_path / "c.h5", FakeBackbone()
    extract(data, out, backbone=backbone, augment=2)
    before = _views(out)
    n_train = len(before) // 2
    more = extract(data, out, backbone=backbone, augment=5)
    assert more.computed == 0 and more.views.computed == 3 * n_train
    after = _views(out)
    assert len(after) == 5 * n_train
    for key, vector in before.items():
        np.testing.assert_array_equal(after[key], vector)
    again = extract(data, out, backbone=backbone)  # no --augment: the cache's views are kept, none computed
    assert again.views.computed == 0 and len(_views(out)) == 5 * n_train
    # a fresh cache with K = 5 at once has the same views: view j does not depend on K
    fresh = tmp_path / "fresh.h5"
    extract(data, fresh, backbone=backbone, augment=5)
    for key, vector in _views(fresh).items():
        np.testing.assert_allclose(after[key], vector, atol=1e-6)


def test_new_train_images_get_views_with_the_caches_policy(data, tmp_path):
    out = tmp_path / "c.h5"
    extract(data, out, backbone=FakeBackbone(), augment=2, augment_policy="flip", augment_seed=7)
    write_image(data / "train" / "cat" / "new.jpg", (200, 40, 40), seed=999)
    result = extract(data, out, backbone=FakeBackbone())
    assert result.computed == 1 and result.views.computed == 2
    sha = next(s for p, s in zip(*_paths_and_hashes(out)) if p == "train/cat/new.jpg")
    for j in range(2):
        expected = _expected_view(data, "train/cat/new.jpg", sha, j, policy="flip", seed=7)
        np.testing.assert_allclose(_views(out)[("train/cat/new.jpg", j)], expected, atol=1e-6)


def _paths_and_hashes(out):
    cache = read_cache(out, with_vectors=False)
    return cache.rows.path, cache.rows.sha256


def test_another_policy_replaces_the_views_and_zero_removes_them(data, tmp_path):
    out = tmp_path / "c.h5"
    extract(data, out, backbone=FakeBackbone(), augment=2)
    lesson = _views(out)
    flipped = extract(data, out, backbone=FakeBackbone(), augment_policy="flip")
    assert flipped.views.replaced and flipped.views.computed == len(lesson)
    assert json.loads(read_views(out).attrs["policy"])["name"] == "flip"
    assert len(list_shards(views_folder(out))) >= 1
    removed = extract(data, out, backbone=FakeBackbone(), augment=0)
    assert removed.views.views is None and read_views(out) is None
    assert list_shards(views_folder(out)) == []  # the view shards are deleted with the views


def test_compact_and_verify_keep_and_check_the_views(data, tmp_path):
    out = tmp_path / "c.h5"
    extract(data, out, backbone=FakeBackbone(), augment=4)
    extract(data, out, backbone=FakeBackbone(), augment=2)  # leaves views 2 and 3 as garbage in the shards
    before = _views(out)
    compact(out)
    assert _views(out).keys() == before.keys()
    for key, vector in before.items():
        np.testing.assert_array_equal(_views(out)[key], vector)
    assert len(list_shards(views_folder(out))) == 1
    assert verify(out, sample=2, backbone=FakeBackbone()).passed
    list_shards(views_folder(out))[0].write_bytes(b"damaged")
    report = info(out)
    assert report.shard_problems and "damaged shard" in report.summary()


def test_bad_augment_options_fail_before_anything_is_written(data, tmp_path):
    out = tmp_path / "c.h5"
    with pytest.raises(ConfigError, match="augment must be an integer >= 0"):
        extract(data, out, backbone=FakeBackbone(), augment=-1)
    with pytest.raises(ConfigError, match="unknown augmentation policy"):
        extract(data, out, backbone=FakeBackbone(), augment=2, augment_policy="heavy")
    assert not out.exists()
