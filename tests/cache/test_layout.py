"""cache/layout.py: a cache file written whole, read back by featcache and by plain h5py."""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest

from featcache.cache.layout import FORMAT_VERSION, QuarantineEntry, Rows, read_cache, read_features, write_cache
from featcache.errors import CacheError
from tests.support import handmade_cache


class _Vectors:
    """A vector source of fixed rows: ``gather`` returns them by content hash."""

    def __init__(self, rows: dict[str, np.ndarray]):
        self.rows, self.dim = rows, len(next(iter(rows.values())))

    def gather(self, sha256s) -> np.ndarray:
        return np.stack([self.rows[s] for s in sha256s])


def _rows(n: int) -> Rows:
    return Rows(
        path=[f"train/c{i % 2}/{i}.jpg" for i in range(n)],
        sha256=[f"{i:064x}" for i in range(n)],
        label=[i % 2 for i in range(n)],
        split=["train"] * (n - 1) + ["validation"],
        size=[100 + i for i in range(n)],
        mtime_ns=[10**18 + i for i in range(n)],
    )


def test_written_cache_reads_back_in_featcache_and_in_plain_h5py(tmp_path):
    rows = _rows(5)
    vectors = {sha: np.full(3, i, np.float32) for i, sha in enumerate(rows.sha256)}
    path = tmp_path / "c.h5"
    quarantine = [QuarantineEntry("train/c0/bad.jpg", "not an image", "ab" * 32)]
    write_cache(path, {"fingerprint": "f"}, ["c0", "c1"], rows, _Vectors(vectors), quarantine)
    cache = read_cache(path)
    assert cache.rows == rows and cache.class_names == ["c0", "c1"] and cache.quarantine == quarantine
    assert cache.attrs["format_version"] == FORMAT_VERSION and cache.fingerprint == "f"
    with h5py.File(path) as h5:  # what a user without featcache sees
        np.testing.assert_array_equal(h5["features"][:, 0], np.arange(5, dtype=np.float32))
        assert h5["path"].asstr()[0] == "train/c0/0.jpg" and list(h5["label"][:]) == rows.label
    assert [p.name for p in tmp_path.iterdir()] == ["c.h5"]  # the temporary file was renamed over it


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
    vectors = _Vectors({sha: np.zeros(4, np.float32) for sha in rows.sha256})
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    with pytest.raises(CacheError, match="no space left on the device"):
        write_cache(path, {"fingerprint": "g"}, ["a", "b"], rows, vectors, [])
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["c.h5"]
