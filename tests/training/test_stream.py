"""The shuffle over chunks with a bounded buffer: a seeded permutation, the same batches in memory and streamed."""

from __future__ import annotations

import numpy as np
import pytest

from featcache.training import stream
from featcache.training.splits import load_splits
from featcache.training.stream import AugmentedVectors, CacheVectors, EpochBatches, MemoryVectors, epoch_order
from tests.support import feature_reads, interleaved_cache


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 16 cache rows, shuffled 2 at a time, so a few hundred rows make many chunks."""
    monkeypatch.setattr(stream, "CHUNK_ROWS", 16)
    monkeypatch.setattr(stream, "BUFFER_CHUNKS", 2)


def test_an_epoch_is_a_seeded_permutation_new_each_epoch(small_chunks):
    rows = np.sort(np.random.default_rng(0).choice(1000, 700, replace=False))
    first = epoch_order(rows, seed=3, epoch=0)
    assert sorted(first.tolist()) == list(range(700))
    np.testing.assert_array_equal(first, epoch_order(rows, seed=3, epoch=0))
    assert not np.array_equal(first, epoch_order(rows, seed=3, epoch=1))
    assert not np.array_equal(first, epoch_order(rows, seed=4, epoch=0))


def test_rows_mix_within_a_buffer_of_chunks_only(small_chunks):
    rows = np.arange(320)  # 20 chunks, so 10 buffers of 32 rows
    order = epoch_order(rows, seed=0, epoch=0)
    for start in range(0, 320, 32):
        chunks = set((rows[order[start : start + 32]] // 16).tolist())
        assert len(chunks) == 2  # one buffer: two whole chunks, shuffled together
    assert len({tuple(sorted(rows[order[s : s + 32]] // 16)) for s in range(0, 320, 32)}) == 10
    assert not np.array_equal(np.sort(order[:32]), order[:32])


def test_a_split_within_one_chunk_is_shuffled_whole():
    order = epoch_order(np.arange(50), seed=0, epoch=0)
    assert sorted(order.tolist()) == list(range(50)) and order.tolist() != list(range(50))


def test_streamed_batches_equal_batches_in_memory(small_chunks, tmp_path, monkeypatch):
    cache = interleaved_cache(tmp_path / "c.h5", n=400)
    splits = load_splits(cache)
    train = splits.train
    in_memory = EpochBatches(train.rows, train.y, MemoryVectors(train.x), 10, shuffle=True, seed=5)
    vectors = CacheVectors(cache, train.rows, splits.feature_dim)
    streamed = EpochBatches(train.rows, train.y, vectors, 10, shuffle=True, seed=5)
    reads = feature_reads(monkeypatch)
    for epoch in range(3):
        in_memory.start_epoch(epoch)
        streamed.start_epoch(epoch)
        for (xa, ya), (xb, yb) in zip(in_memory, streamed, strict=True):
            np.testing.assert_array_equal(xa, xb)
            np.testing.assert_array_equal(ya, yb)
    vectors.close()
    chunks = np.unique(train.rows // 16)
    assert len(reads) == 3 * len(chunks)  # every chunk holding train rows read once per epoch
    assert max(reads) <= 16 and vectors.reader.rows_read <= 3 * 400
    assert 0 < vectors.peak_rows_held <= 2 * 2 * 16  # at most two buffers, at a buffer's turn


def test_batches_in_cache_order_without_shuffle(tmp_path):
    cache = interleaved_cache(tmp_path / "c.h5", n=100)
    splits = load_splits(cache, memory_budget=0)
    assert splits.memory.streamed and splits.validation.x is None
    batches = splits.batches(splits.validation, 4)
    got = np.concatenate([x for x, _ in batches])
    batches.vectors.close()
    np.testing.assert_array_equal(got, load_splits(cache).validation.x)
    with pytest.raises(IndexError):
        batches.batch(len(batches))


def test_augmented_epochs_show_each_row_once_as_its_clean_vector_or_one_view_drawn_uniformly():
    m, k = 3000, 4
    x = np.stack([np.arange(m), np.zeros(m)], axis=1).astype(np.float32)  # (row, 0): the clean vector
    views = np.array([[i, j + 1] for i in range(m) for j in range(k)], dtype=np.float32)  # (row, view + 1)
    at = np.arange(m * k).reshape(m, k)
    at[:100] = -1  # rows without views always show their clean vector
    batches = EpochBatches(np.arange(m), np.arange(m), AugmentedVectors(x, views, at, seed=5), 100, True, 5)

    def epoch(b, e):
        b.start_epoch(e)
        got = [(v, y) for v, y in b]
        return np.concatenate([v for v, _ in got]), np.concatenate([y for _, y in got])

    shown, y = epoch(batches, 0)
    np.testing.assert_array_equal(shown[:, 0], y)  # every vector belongs to its row
    assert sorted(y.tolist()) == list(range(m))  # each row once per epoch
    drawn = shown[:, 1].astype(int)
    assert (drawn[y < 100] == 0).all()
    counts = np.bincount(drawn[y >= 100], minlength=k + 1)
    expected = (m - 100) / (k + 1)
    assert np.abs(counts - expected).max() < 0.15 * expected, counts  # 1/(K+1) each
    again = EpochBatches(np.arange(m), np.arange(m), AugmentedVectors(x, views, at, seed=5), 100, True, 5)
    np.testing.assert_array_equal(epoch(again, 0)[0], shown)  # same seed, same draws
    later, y1 = epoch(batches, 1)
    assert not np.array_equal(later[np.argsort(y1), 1], shown[np.argsort(y), 1])  # a new draw each epoch
