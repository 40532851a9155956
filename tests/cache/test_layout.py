"""cache/layout.py: an entry file written whole over shards, read back by featcache and by plain h5py."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pytest

from featcache.cache import layout
from featcache.cache.layout import FORMAT_VERSION, QuarantineEntry, Rows, read_cache, read_features, write_cache
from featcache.cache.shards import ShardWriter, VectorPool, shards_dir
from featcache.errors import CacheError
from tests.support import handmade_cache


def _located(cache: Path, rows: Rows, vectors: dict[str, np.ndarray], per_shard: int = 2):
    """Write ``vectors`` into shards of ``per_shard`` rows, newest content first, and locate ``rows`` in them."""
    writer = ShardWriter(shards_dir(cache), "f")
    shas = sorted(vectors, reverse=True)  # shard order differs from row order, so /features maps many runs
    for start in range(0, len(shas), per_shard):
        chunk = shas[start : start + per_shard]
        writer.write(chunk, np.stack([vectors[s] for s in chunk]))
    pool = VectorPool()
    pool.add_shards(shards_dir(cache), "f")
    located = pool.locations(rows.sha256)
    pool.close()
    return located


def _rows(n: int) -> Rows:
    return Rows(
        path=[f"train/c{i % 2}/{i}.jpg" for i in range(n)],
        sha256=[f"{i:064x}" for i in range(n)],
        label=[i % 2 for i in range(n)],
        split=["train"] * (n - 1) + ["validation"],
        size=[100 + i for i in range(n)],
        mtime_ns=[10**18 + i for i in range(n)],
    )


def test_written_cache_reads_back_in_featcache_and_in_plain_h5py(tmp_path, monkeypatch):
    rows = _rows(5)
    vectors = {sha: np.full(3, i, np.float32) for i, sha in enumerate(rows.sha256)}
    path = tmp_path / "c.h5"
    quarantine = [QuarantineEntry("train/c0/bad.jpg", "not an image", "ab" * 32)]
    write_cache(path, {"fingerprint": "f"}, ["c0", "c1"], rows, _located(path, rows, vectors), quarantine)
    cache = read_cache(path)
    assert cache.rows == rows and cache.class_names == ["c0", "c1"] and cache.quarantine == quarantine
    assert cache.attrs["format_version"] == FORMAT_VERSION == 3 and cache.fingerprint == "f"
    np.testing.assert_array_equal(cache.features[:, 0], np.arange(5, dtype=np.float32))
    monkeypatch.chdir(tmp_path.parent)  # the shards are found beside the entry file, wherever the reader runs
    with h5py.File(path) as h5:  # what a user without featcache sees
        assert h5["features"].is_virtual and len(h5["shards/file"]) == 3
        np.testing.assert_array_equal(h5["features"][:, 0], np.arange(5, dtype=np.float32))
        np.testing.assert_array_equal(h5["features"][3], np.full(3, 3, np.float32))
        assert h5["path"].asstr()[0] == "train/c0/0.jpg" and list(h5["label"][:]) == rows.label
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.h5", "c.h5.shards"]  # no temporary file left


def test_a_missing_shard_reads_as_nan_rows_not_as_zeros(tmp_path):
    rows = _rows(4)
    path = tmp_path / "c.h5"
    located = _located(path, rows, {sha: np.ones(3, np.float32) for sha in rows.sha256})
    write_cache(path, {"fingerprint": "f"}, ["c0", "c1"], rows, located, [])
    (shards_dir(path) / located.files[0]).unlink()
    features = read_cache(path).features
    lost = located.index == 0
    assert np.isnan(features[lost]).all() and (features[~lost] == 1).all()


def test_read_features_reads_the_rows_asked_for_in_their_order(tmp_path):
    path = handmade_cache(tmp_path / "c.h5", [0, 1, 0, 1], ["train"] * 4, ["a", "b"])
    everything = read_cache(path).features
    np.testing.assert_array_equal(read_features(path, [3, 0, 3]), everything[[3, 0, 3]])
    with pytest.raises(CacheError, match="has 4 rows; row 9 does not exist"):
        read_features(path, [9])


def test_counts_per_split_and_class():
    per_split, per_class = _rows(5).counts(["c0", "c1"])
    assert per_split == {"train": 4, "validation": 1, "test": 0}
    assert per_class == {"train": {"c0": 2, "c1": 2}, "validation": {"c0": 1}}


def test_foreign_future_and_truncated_files_are_one_line_errors(tmp_path):
    path = handmade_cache(tmp_path / "c.h5", [0, 1], ["train"] * 2, ["a", "b"])
    with h5py.File(tmp_path / "future.h5", "w") as h5:
        h5.attrs.update({"format": "featcache-features", "format_version": FORMAT_VERSION + 1})
    with h5py.File(tmp_path / "foreign.h5", "w") as h5:
        h5["x"] = [1]
    (tmp_path / "cut.h5").write_bytes(path.read_bytes()[:2048])
    for name, message in [("future", "upgrade featcache"), ("foreign", "not a featcache"), ("cut", "--overwrite")]:
        with pytest.raises(CacheError, match=message) as caught:
            read_cache(tmp_path / f"{name}.h5")
        assert "\n" not in str(caught.value)


def test_a_full_disk_keeps_the_old_cache_whole(tmp_path, monkeypatch):
    path = handmade_cache(tmp_path / "c.h5", [0, 1], ["train"] * 2, ["a", "b"])
    before = path.read_bytes()
    rows = _rows(3)
    located = _located(path, rows, {sha: np.zeros(4, np.float32) for sha in rows.sha256})
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    with pytest.raises(CacheError, match="no space left on the device"):
        write_cache(path, {"fingerprint": "g"}, ["a", "b"], rows, located, [])
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["c.h5", "c.h5.shards"]


@pytest.mark.parametrize("count", [0, 7, 1024, 5000])
def test_picked_rows_equal_numpy_indexing_across_blocks(tmp_path, count):
    values = np.arange(3 * layout.BLOCK_ROWS + 11, dtype=np.int64) * 3
    with h5py.File(tmp_path / "c.h5", "w") as h5:
        h5.create_dataset("v", data=values)
    rng = np.random.default_rng(count)
    idx = np.sort(rng.choice(len(values), count, replace=False))
    if count:
        idx[0], idx[-1] = 0, len(values) - 1
    with h5py.File(tmp_path / "c.h5") as h5:
        assert np.array_equal(layout.picked(h5["v"], idx), values[idx])
