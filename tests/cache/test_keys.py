"""cache/keys.py: keys found among many by their 64-bit hash, in memory or left in the entry file."""

from __future__ import annotations

import numpy as np

import featcache.cache.keys as hashing
from featcache.cache.keys import KeyIndex, StoredKeys


def _reference(keys):
    """The first position of each key: what a KeyIndex must answer."""
    first = {}
    for i, key in enumerate(keys):
        first.setdefault(key, i)
    return first


def test_key_index_finds_first_entries_of_a_million_style_base_and_later_keys():
    rng = np.random.default_rng(0)
    keys = [f"{rng.integers(0, 2**63):064x}" for _ in range(5000)] + [f"{i:064x}/{i % 11}" for i in range(50)]
    keys += keys[:100]  # repeated contents keep their first entry
    index = KeyIndex()
    index.add(keys, np.arange(len(keys)))
    first = _reference(keys)
    assert index.find(keys).tolist() == [first[k] for k in keys]
    assert index.find(np.array([k.encode() for k in keys[:10]], dtype="S80")).tolist() == list(range(10))
    assert index.find(["absent", keys[0][:-1]]).tolist() == [-1, -1]
    index.add(["later", keys[0]], np.array([9000, 9001]))
    assert index.find(["later", keys[0]]).tolist() == [9000, 0] and "later" in index and len(index) == 5051
    index.add(["later2"], np.array([9004]))  # after a find: that find's view of the later keys is outdated
    assert index.find(["later2", "later"]).tolist() == [9004, 9000]
    index.add([keys[0]], np.array([9002]), replace=True)
    index.add(["after"], np.array([9003]))
    index._merge()  # later keys join the ordered base; replaced entries win
    assert index.find(["later", keys[0], keys[5], "after", "absent"]).tolist() == [9000, 9002, 5, 9003, -1]
    assert index.find(["later2"]).tolist() == [9004]


def test_key_index_tells_apart_keys_whose_hashes_collide(monkeypatch):
    monkeypatch.setattr(hashing, "_hash64", lambda keys: np.zeros(len(keys), dtype=np.uint64))
    monkeypatch.setattr(hashing, "_hash_one", lambda key: 0)
    index = KeyIndex()
    index.add(["a", "b", "a", "c"], np.arange(4))
    assert index.find(["c", "a", "b", "d"]).tolist() == [3, 0, 1, -1]
    assert "b" in index and "d" not in index


def test_one_keys_hash_is_the_hash_of_many():
    keys = [b"", b"a", b"abcdefgh", b"abcdefghi", b"\xff" * 64, b"sha/10", "é/3".encode()]
    keys += [b"%064x" % i for i in range(50)]
    many = hashing._hash64(np.array(keys, dtype=bytes)).tolist()
    assert [hashing._hash_one(key) for key in keys] == many


class Column:
    """A column in memory with the reads of :class:`featcache.cache.layout.ColumnReader`; counts row reads."""

    def __init__(self, keys, block: int):
        self.values, self.block, self.rows_read = np.array(keys, dtype=bytes), block, 0

    def __len__(self) -> int:
        return len(self.values)

    def blocks(self):
        for start in range(0, len(self.values), self.block):
            yield start, self.values[start : start + self.block]

    def rows(self, idx):
        assert np.all(np.diff(idx) > 0)  # increasing, as the file is read
        self.rows_read += len(idx)
        return self.values[idx]

    def close(self):
        pass


def test_stored_keys_find_the_first_row_of_each_key_across_blocks():
    rng = np.random.default_rng(1)
    keys = [f"{rng.integers(0, 2**63):064x}" for _ in range(700)]
    keys += keys[:50] + ["a", "b", "a"]  # repeated contents: found at their first row
    column = Column(keys, block=64)
    stored = StoredKeys(column)
    first = _reference(keys)
    assert stored.find(keys).tolist() == [first[k] for k in keys] and len(stored) == len(first)
    assert stored.find(["absent", keys[0][:-1], ""]).tolist() == [-1, -1, -1]
    reads = column.rows_read
    assert "absent" not in stored and column.rows_read == reads  # no hash found: nothing read back
    assert keys[5] in stored and "b" in stored
    assert sorted(stored.keys()) == sorted(first)


def test_stored_keys_leave_out_rows_not_kept():
    keys = ["x", "y", "x", "z"]
    stored = StoredKeys(Column(keys, block=3), keep=np.array([False, True, True, False]))
    assert stored.find(["x", "y", "z"]).tolist() == [2, 1, -1]  # x at its first kept row
    assert "z" not in stored and len(stored) == 2 and sorted(stored.keys()) == ["x", "y"]


def test_stored_keys_tell_apart_keys_whose_hashes_collide(monkeypatch):
    monkeypatch.setattr(hashing, "_hash64", lambda keys: np.zeros(len(keys), dtype=np.uint64))
    monkeypatch.setattr(hashing, "_hash_one", lambda key: 0)
    stored = StoredKeys(Column(["a", "b", "a", "c"], block=2))
    assert stored.find(["c", "a", "b", "d"]).tolist() == [3, 0, 1, -1]
    assert "b" in stored and "d" not in stored


def test_a_key_shared_by_many_rows_is_held_once_and_read_back_once_per_lookup():
    keys = ["placeholder"] * 5000 + ["a", "placeholder", "b"] + ["b"] * 20
    column = Column(keys, block=512)
    stored = StoredKeys(column)
    assert len(stored) == 3 and column.rows_read == 5000 + 1 + 21  # the repeated rows, read back once
    reads = column.rows_read
    found = stored.find(keys)  # what compact asks: every row's key
    assert found.tolist() == [0] * 5000 + [5000, 0, 5002] + [5002] * 20
    assert column.rows_read - reads == 3  # one row per distinct key, not one per copy


def test_stored_keys_keep_the_first_row_of_keys_whose_hashes_collide_and_repeat(monkeypatch):
    monkeypatch.setattr(hashing, "_hash64", lambda keys: np.zeros(len(keys), dtype=np.uint64))
    monkeypatch.setattr(hashing, "_hash_one", lambda key: 0)
    stored = StoredKeys(Column(["a", "b", "a", "c", "b", "a"], block=4), keep=np.array([0, 1, 1, 1, 1, 1], bool))
    assert len(stored) == 3 and stored.find(["a", "b", "c", "d"]).tolist() == [2, 1, 3, -1]


def test_key_index_ids_default_to_positions():
    index = KeyIndex()
    index.add(["p", "q", "p", "r"])
    assert index.find(["r", "p", "q", "s"]).tolist() == [3, 0, 1, -1]
    index.add(["s", "p"])  # later keys too: their positions in what was added
    assert index.find(["s", "p"]).tolist() == [0, 0]
