"""Reading a cache in pieces: labels and splits as arrays, hashes of chosen rows, vectors by row ranges."""

from __future__ import annotations

from collections import Counter

import h5py
import numpy as np
import pytest

from featcache.cache import reader
from featcache.cache.layout import read_cache
from featcache.cache.reader import FeatureReader, read_row_index, read_sha256
from featcache.errors import CacheError
from tests.support import feature_reads, handmade_cache, interleaved_cache


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


def test_rows_counted_a_block_at_a_time_match_a_count_of_the_whole_columns(tmp_path, monkeypatch):
    monkeypatch.setattr(reader, "METADATA_ROWS", 7)  # several blocks, the last one short
    labels = [0, 1, 2, 2, 1, 0, 0, 2, 1, 1, 2, 0, 1, 2, 2, 0, 1]
    splits = ["train", "validation", "test", "train", "holdout"] * 3 + ["train", "test"]
    cache = handmade_cache(tmp_path / "c.h5", labels, splits, ["a", "b", "c"])
    with h5py.File(cache, "r") as h5:  # the reference: plain h5py, both columns read whole
        pairs = Counter(zip(h5["split"][:].astype(str).tolist(), h5["label"][:].tolist()))
    counts = reader.count_rows(cache, ["a", "b", "c"])
    assert counts.rows == len(labels)
    for split in ("train", "validation", "test"):
        expected = {name: pairs[(split, c)] for c, name in enumerate("abc") if pairs[(split, c)]}
        assert counts.per_split[split] == sum(expected.values()) and counts.per_class[split] == expected
    assert sum(counts.per_split.values()) == len(labels) - splits.count("holdout")


def test_a_label_outside_the_classes_is_reported_as_damage(tmp_path):
    cache = handmade_cache(tmp_path / "c.h5", [0, 1, 1], ["train"] * 3, ["a", "b"])
    with h5py.File(cache, "r+") as h5:
        h5["label"][2] = 5
    with pytest.raises(CacheError, match="damaged"):
        reader.count_rows(cache, ["a", "b"])


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
