"""A cache from one's own code: ``featcache.load`` gives what plain h5py reads from the file, ``featcache.dataset``
streams every row once an epoch in train-head's bounded shuffle, and both feed scikit-learn and Keras."""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest

import featcache
from featcache.errors import CacheError, ConfigError
from featcache.training import stream
from tests.support import (
    FakeBackbone,
    feature_reads,
    handmade_cache,
    interleaved_cache,
    make_split_dataset,
    write_image,
)

SPLIT_NAMES = ("train", "validation", "test")


@pytest.fixture
def named_cache(tmp_path):
    """A cache of small images (fake backbone), one of them named by bytes that are not UTF-8."""
    data = make_split_dataset(tmp_path / "data", counts={"train": 5, "validation": 2, "test": 2})
    write_image(data / "train" / "cat" / os.fsdecode(b"\xff\xfe caf\xc3\xa9.jpg"), (200, 40, 40), seed=99)
    out = tmp_path / "features.h5"
    featcache.extract(data, out, backbone=FakeBackbone())
    return out


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 16 cache rows, shuffled 2 at a time, so a few hundred rows make many chunks."""
    monkeypatch.setattr(stream, "CHUNK_ROWS", 16)
    monkeypatch.setattr(stream, "BUFFER_CHUNKS", 2)


def _read_with_h5py(path):
    """The cache's vectors, labels, splits, paths and classes as plain h5py reads them (the README's layout)."""
    with h5py.File(path, "r") as h5:
        return {
            "X": h5["features"][:],
            "y": h5["label"][:],
            "split": np.array([s.decode() for s in h5["split"][:]]),
            "paths": [os.fsdecode(p) for p in h5["path"][:]],
            "class_names": [c.decode() if isinstance(c, bytes) else c for c in h5["class_names"][:]],
        }


@pytest.mark.parametrize("split", [*SPLIT_NAMES, None])
def test_load_gives_what_h5py_reads(named_cache, split):
    plain = _read_with_h5py(named_cache)
    rows = np.arange(len(plain["y"])) if split is None else np.flatnonzero(plain["split"] == split)
    loaded = featcache.load(named_cache, split)
    assert loaded.X.dtype == np.float32 and loaded.X.shape == (len(rows), FakeBackbone.dim)
    np.testing.assert_array_equal(loaded.X, plain["X"][rows])
    np.testing.assert_array_equal(loaded.y, plain["y"][rows])
    np.testing.assert_array_equal(loaded.rows, rows)
    assert loaded.paths == [plain["paths"][i] for i in rows] and loaded.split == split
    assert loaded.class_names == plain["class_names"] == ["cat", "dog"] and len(loaded) == len(rows)


def test_load_paths_open_the_files_even_when_not_utf8(named_cache):
    loaded = featcache.load(named_cache, "train")
    odd = [p for p in loaded.paths if p.startswith("train/cat/\udcff")]
    assert odd == ["train/cat/\udcff\udcfe café.jpg"]
    assert all((named_cache.parent / "data" / p).is_file() for p in loaded.paths)


def test_a_split_above_the_memory_budget_is_refused_in_one_line_naming_the_dataset(tmp_path):
    cache = interleaved_cache(tmp_path / "c.h5", n=120, dim=8)
    n_train = len(featcache.load(cache, "train").y)
    assert len(featcache.load(cache, "train", memory_budget=n_train * 8 * 4).y) == n_train  # exactly fits
    with pytest.raises(ConfigError) as refused:
        featcache.load(cache, "train", memory_budget=n_train * 8 * 4 - 1)
    message = str(refused.value)
    assert "\n" not in message and "exceed the memory budget" in message
    assert f"featcache.dataset({str(cache)!r}, 'train')" in message
    with pytest.raises(ConfigError, match="the cache's vectors"):
        featcache.load(cache, None, memory_budget="1kB")


def test_a_split_featcache_does_not_know_is_refused(tmp_path):
    cache = interleaved_cache(tmp_path / "c.h5", n=30)
    with pytest.raises(ConfigError, match="split must be one of train, validation, test, or None"):
        featcache.load(cache, "val")
    with pytest.raises(ConfigError, match="split must be one of"):
        featcache.dataset(cache, "everything")


def _positions(batches, X) -> np.ndarray:
    """Where in ``X`` each vector of ``batches`` is (the rows' vectors are distinct)."""
    where = {row.tobytes(): i for i, row in enumerate(X)}
    return np.array([where[v.tobytes()] for x, _ in batches for v in x])


def _epoch(ds) -> list:
    ds.on_epoch_begin()  # as model.fit does at the start of every epoch
    return [ds[i] for i in range(len(ds))]


def test_dataset_gives_every_row_once_an_epoch_shuffled_by_seed(small_chunks, tmp_path, monkeypatch):
    import keras

    cache = interleaved_cache(tmp_path / "c.h5", n=400, dim=8)
    train = featcache.load(cache, "train")
    ds = featcache.dataset(cache, "train", batch_size=10, seed=3)
    assert isinstance(ds, keras.utils.PyDataset) and len(ds) == -(-len(train) // 10)
    reads = feature_reads(monkeypatch)
    first, second = _epoch(ds), _epoch(ds)
    assert reads and max(reads) <= 16  # read a chunk of 16 cache rows at a time
    orders = [_positions(first, train.X), _positions(second, train.X)]
    for order, batches in zip(orders, (first, second)):
        assert sorted(order.tolist()) == list(range(len(train)))  # every row, once
        assert order.tolist() != list(range(len(train)))  # shuffled
        labels = np.concatenate([y for _, y in batches])
        assert labels.dtype == np.float32 and labels.shape == (len(train), 3)
        np.testing.assert_array_equal(labels, np.eye(3, dtype=np.float32)[train.y[order]])
        chunk = train.rows[order] // 16
        for c in np.unique(chunk):  # a chunk's rows come out among those of one other chunk at most
            at = np.flatnonzero(chunk == c)
            assert len(np.unique(chunk[at[0] : at[-1] + 1])) <= 2
    assert orders[0].tolist() != orders[1].tolist()  # a new order each epoch
    again = featcache.dataset(cache, "train", batch_size=10, seed=3)
    np.testing.assert_array_equal(_positions(_epoch(again), train.X), orders[0])
    other = featcache.dataset(cache, "train", batch_size=10, seed=4)
    assert _positions(_epoch(other), train.X).tolist() != orders[0].tolist()


def test_dataset_without_shuffle_follows_the_cache(tmp_path):
    cache = interleaved_cache(tmp_path / "c.h5", n=90)
    test = featcache.load(cache, "test")
    batches = _epoch(featcache.dataset(cache, "test", batch_size=4, shuffle=False))
    np.testing.assert_array_equal(np.concatenate([x for x, _ in batches]), test.X)
    assert [len(x) for x, _ in batches[:-1]] == [4] * (len(batches) - 1)


def test_empty_splits_and_bad_dataset_options(tmp_path):
    cache = handmade_cache(tmp_path / "c.h5", [0, 1, 0, 1], ["train"] * 4, ["a", "b"])
    empty = featcache.load(cache, "validation")  # arrays of no rows, as numpy gives them
    assert empty.X.shape == (0, 4) and empty.y.shape == (0,) and empty.paths == [] and len(empty) == 0
    with pytest.raises(CacheError, match="has no validation rows"):
        featcache.dataset(cache, "validation")
    for bad in ({"batch_size": 0}, {"seed": -1}, {"shuffle": "yes"}):
        with pytest.raises(ConfigError):
            featcache.dataset(cache, "train", **bad)


def test_scikit_learn_and_a_keras_model_learn_from_the_cache(tmp_path):
    import keras
    from sklearn.linear_model import LogisticRegression

    cache = interleaved_cache(tmp_path / "c.h5", n=240, dim=8)
    train, test = featcache.load(cache, "train"), featcache.load(cache, "test")
    assert LogisticRegression(max_iter=1000).fit(train.X, train.y).score(test.X, test.y) > 0.9
    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(train.X.shape[1],))
    model = keras.Model(inputs, keras.layers.Dense(len(train.class_names))(inputs))
    loss = keras.losses.CategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=keras.optimizers.Adam(0.1), loss=loss, metrics=["accuracy"])
    ds, steps = featcache.dataset(cache, "train", batch_size=16), []
    counted = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: steps.append(batch))
    history = model.fit(ds, epochs=1, callbacks=[counted], verbose=0)
    assert steps == list(range(len(ds))) and np.isfinite(history.history["loss"][0])
    history = model.fit(ds, epochs=9, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert model.evaluate(test.X, keras.utils.to_categorical(test.y, 3), verbose=0)[1] > 0.7
