"""pipeline.py: computed vectors are committed as one shard per commit interval, of at most COMMIT_ROWS rows."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from featcache.api import extract
from featcache.cache.layout import read_cache
from featcache.cache.shards import list_shards, shards_dir
from featcache.extraction import pipeline
from featcache.extraction.pipeline import Pending
from tests.support import FakeBackbone, make_split_dataset


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _vectors(n: int, start: int = 0) -> np.ndarray:
    return np.arange(start, start + n, dtype=np.float32).repeat(3).reshape(n, 3)


def test_pending_vectors_are_due_after_the_interval_and_taken_as_one_shard():
    clock = _Clock()
    pending = Pending(10.0, clock)
    assert not pending and not pending.due()
    pending.add(["a", "b"], _vectors(2), [])
    pending.add([], np.zeros((0, 0), dtype=np.float32), [("c", "not an image")])  # a batch of bad images only
    clock.now = 9.9
    assert pending and not pending.due()
    pending.add(["d"], _vectors(1, 2), [])
    clock.now = 10.0
    assert pending.due()
    shas, vectors, bad = pending.take()
    assert shas == ["a", "b", "d"] and bad == [("c", "not an image")]
    np.testing.assert_array_equal(vectors, _vectors(3))
    assert not pending and not pending.due()
    clock.now = 15.0
    pending.add(["e"], _vectors(1), [])
    assert not pending.due()  # the interval counts from the last commit


def test_pending_vectors_are_due_at_commit_rows_whatever_the_time(monkeypatch):
    monkeypatch.setattr(pipeline, "COMMIT_ROWS", 4)
    pending = Pending(3600.0, _Clock())
    pending.add(["a", "b", "c"], _vectors(3), [])
    assert not pending.due()
    pending.add(["d"], _vectors(1), [])
    assert pending.due()


def test_bad_images_alone_are_taken_with_no_vectors():
    pending = Pending(0.0, _Clock())
    pending.add([], np.zeros((0, 0), dtype=np.float32), [("x", "truncated")])
    assert pending.due()
    shas, vectors, bad = pending.take()
    assert shas == [] and vectors.shape[0] == 0 and bad == [("x", "truncated")]


@pytest.mark.parametrize("commit_seconds, shards", [(0, 5), (3600, 1)])
def test_a_run_commits_a_shard_per_batch_or_per_interval_with_the_same_cache(tmp_path, commit_seconds, shards):
    data = make_split_dataset(tmp_path / "data", counts={"train": 10})  # 20 images, 5 batches of 4
    out, reference = tmp_path / "c.h5", tmp_path / "ref.h5"
    extract(data, reference, backbone=FakeBackbone(), image_size=71, batch_size=4, commit_seconds=0)
    extract(data, out, backbone=FakeBackbone(), image_size=71, batch_size=4, commit_seconds=commit_seconds)
    committed = list_shards(shards_dir(out))
    assert len(committed) == shards
    with h5py.File(committed[0], "r") as h5:
        assert h5["features"].shape[0] == 20 // shards
    got, ref = read_cache(out), read_cache(reference)
    assert got.rows == ref.rows
    np.testing.assert_array_equal(got.features, ref.features)
