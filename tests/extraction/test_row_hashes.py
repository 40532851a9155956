"""extraction/row_hashes.py: an update's content hashes, the reused ones read from the entry file it replaces."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from featcache.extraction import row_hashes
from featcache.extraction.row_hashes import RowHashes
from tests.support import handmade_cache


@pytest.fixture
def stored(tmp_path):
    """An entry file of 5 rows and its content hashes, as plain h5py reads them."""
    path = handmade_cache(tmp_path / "c.h5", [0, 1, 0, 1, 1], ["train"] * 5, ["a", "b"])
    with h5py.File(path) as h5:
        return path, h5["sha256"][:].tolist()


@pytest.mark.parametrize("block_rows", [2, 1 << 16])
def test_reused_rows_read_their_hash_from_the_file_and_new_rows_take_the_computed(stored, monkeypatch, block_rows):
    monkeypatch.setattr(row_hashes, "BLOCK_ROWS", block_rows)
    path, old = stored
    c1, c2 = b"c" * 64, b"d" * 64
    hashes = RowHashes(path, np.array([4, -1, 0, 0, -1, 2]), [c1.decode(), c2.decode()])
    expected = [old[4], c1, old[0], old[0], c2, old[2]]
    assert hashes.array().tolist() == expected and len(hashes) == 6 and hashes.itemsize == 64
    assert np.concatenate(list(hashes.blocks())).tolist() == expected
    assert all(block.dtype == np.dtype("S64") for block in hashes.blocks())
    assert hashes.rows([1, 3, 5]).tolist() == [c1, old[0], old[2]]


def test_unreadable_files_have_no_hash_and_are_left_out_by_take(stored):
    path, old = stored
    hashes = RowHashes(path, np.array([-1, 3, -1, 1]), ["", "e" * 64])
    assert hashes.present().tolist() == [False, True, True, True]
    kept = hashes.take(np.flatnonzero(hashes.present()))
    assert kept.array().tolist() == [old[3], b"e" * 64, old[1]] and kept.computed.tolist() == [b"e" * 64]


def test_a_first_extract_holds_only_computed_hashes_and_no_rows_store_as_width_one():
    hashes = RowHashes(None, np.array([-1, -1]), ["a" * 64, "b" * 64])
    assert hashes.array().tolist() == [b"a" * 64, b"b" * 64]
    assert RowHashes(None, np.zeros(0, dtype=np.int64), []).itemsize == 1
    with pytest.raises(ValueError, match="2 rows are not reused but 1"):
        RowHashes(None, np.array([-1, -1]), ["a" * 64])


class _SpanCounter(row_hashes.ColumnReader):
    """A ColumnReader that adds up the span of file rows each read covers (what HDF5 is asked to read)."""

    spans: list[int] = []

    def rows(self, idx):
        idx = np.asarray(idx)
        _SpanCounter.spans.append(int(idx.max() - idx.min() + 1) if len(idx) else 0)
        return super().rows(idx)


@pytest.mark.parametrize("order", ["file", "permuted"])
def test_each_pass_reads_the_file_about_once_whatever_the_order_of_the_rows(tmp_path, monkeypatch, order):
    n = 60
    path = handmade_cache(tmp_path / "c.h5", [0] * n, ["train"] * n, ["a"])
    with h5py.File(path) as h5:
        old = h5["sha256"][:]
    monkeypatch.setattr(row_hashes, "BLOCK_ROWS", 4)
    monkeypatch.setattr(row_hashes, "ColumnReader", _SpanCounter)
    _SpanCounter.spans = []
    reused = np.arange(n) if order == "file" else np.random.default_rng(0).permutation(n)
    hashes = RowHashes(path, reused, [])
    assert np.concatenate(list(hashes.blocks())).tolist() == old[reused].tolist()
    assert hashes.array().tolist() == old[reused].tolist()  # a second pass
    assert sum(_SpanCounter.spans) <= 2 * n  # not the whole column for every block of rows


class _Unopened(row_hashes.ColumnReader):
    def __init__(self, *args, **kwargs):
        raise AssertionError("the entry file's hash column was read again")


@pytest.mark.parametrize("reused", [[4, -1, 0, 0, -1, 2], [0, -1, 2, 3, -1, 4]])
def test_a_column_already_read_is_used_instead_of_the_file(stored, monkeypatch, reused):
    path, old = stored
    computed = ["c" * 64, "d" * 64]
    from_file = RowHashes(path, np.array(reused), computed)
    expected = from_file.array().tolist()
    monkeypatch.setattr(row_hashes, "ColumnReader", _Unopened)
    held = RowHashes(path, np.array(reused), computed, stored=np.array(old))
    assert held.array().tolist() == expected
    assert np.concatenate(list(held.blocks())).tolist() == expected
    assert held.take(np.array([0, 1, 5])).array().tolist() == [expected[0], expected[1], expected[5]]
    with pytest.raises(AssertionError, match="read again"):
        from_file.array()
