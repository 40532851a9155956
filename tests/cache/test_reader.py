"""Reading a cache in pieces: labels and splits as arrays, hashes of chosen rows, vectors by row ranges."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from featcache.cache import reader
from featcache.cache.layout import read_cache
from featcache.cache.reader import FeatureReader, read_row_index, read_sha256
from featcache.errors import CacheError
from tests.support import feature_reads, interleaved_cache


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return interleaved_cache(tmp_path_factory.mktemp("reader") / "c.h5", n=100)


def test_row_index_holds_what_read_cache_holds_without_vectors(cache, monkeypatch):
    monkeypatch.setattr(reader, "METADATA_ROWS", 7)  # several slices of string metadata
    reads = feature_reads(monkeypatch)
    index, whole = read_row_index(cache), read_cache(cache)
    assert index.class_names == whole.class_names and index.attrs == whole.attrs and len(index) == 100
    assert index.label.tolist() == whole.rows.label and index.dim == whole.features.shape[1]
    for split in ("train", "validation", "test"):
        assert index.split_indices(split).tolist() == whole.split_indices(split).tolist()
    assert reads == [100]  # read_cache's, none of read_row_index's


def test_hashes_of_chosen_rows(cache, monkeypatch):
    monkeypatch.setattr(reader, "METADATA_ROWS", 16)
    rows = np.array([0, 3, 15, 16, 40, 99])
    assert read_sha256(cache, rows) == [read_cache(cache).rows.sha256[i] for i in rows]


def test_row_ranges_and_one_pass_gather(cache):
    whole = read_cache(cache).features
    with FeatureReader(cache) as features:
        np.testing.assert_array_equal(features.read(10, 25), whole[10:25])
        sets = [np.array([1, 2, 50, 97]), np.array([], dtype=np.int64), np.arange(30, 60, 3)]
        gathered = features.gather(sets, chunk_rows=8)
        # the range, then each chunk of 8 rows holding a wanted row once: 0, 3 to 7, and 96-97 (the last row wanted)
        assert features.rows_read == 15 + 6 * 8 + 2
    for rows, x in zip(sets, gathered):
        np.testing.assert_array_equal(x, whole[rows])
        assert x.shape == (len(rows), whole.shape[1]) and x.dtype == np.float32


def test_a_foreign_file_is_refused(tmp_path):
    with h5py.File(tmp_path / "other.h5", "w") as h5:
        h5["features"] = np.zeros((2, 2))
    with pytest.raises(CacheError, match="not a featcache feature cache"):
        read_row_index(tmp_path / "other.h5")
    with pytest.raises(CacheError, match="featcache extract"):
        read_row_index(tmp_path / "missing.h5")
