"""The batches stage two learns from: a seeded shuffle over chunks of cache rows with a bounded buffer.

One scheme, whether a split's vectors are held in memory or read from the cache: the cache's rows
are cut into chunks of CHUNK_ROWS contiguous rows; each epoch visits the chunks in a seeded random
order, BUFFER_CHUNKS at a time, and shuffles the split's rows of those chunks together before
cutting them into batches. So the same seed gives the same batches, hence the same history, in
memory and streamed, and a streamed epoch reads each chunk once and holds a few chunks at most. A
split smaller than a chunk is simply shuffled whole.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from featcache.cache.reader import FeatureReader

#: contiguous cache rows read at once (64 MB of 2048-d float32 vectors)
CHUNK_ROWS = 8192
#: chunks whose rows an epoch shuffles together
BUFFER_CHUNKS = 4


def epoch_order(rows: np.ndarray, seed: int, epoch: int) -> np.ndarray:
    """Positions into a split whose cache rows are ``rows`` (increasing), in the order epoch ``epoch`` visits them.

    int64 of shape (len(rows),): chunks in a random order, BUFFER_CHUNKS of them at a time, their
    rows shuffled together; a function of ``seed``, ``epoch`` and ``rows`` only.
    """
    rng = np.random.default_rng([seed, epoch])
    chunk = np.asarray(rows, dtype=np.int64) // CHUNK_ROWS
    present, chunk_index = np.unique(chunk, return_inverse=True)
    group_of_chunk = np.empty(len(present), dtype=np.int64)
    group_of_chunk[rng.permutation(len(present))] = np.arange(len(present)) // BUFFER_CHUNKS
    return np.lexsort((rng.random(len(chunk)), group_of_chunk[chunk_index])).astype(np.int64)


class MemoryVectors:
    """A split's vectors held in memory: ``x`` float32 (m, dim)."""

    streamed = False

    def __init__(self, x: np.ndarray):
        self.x = x

    def plan(self, order: np.ndarray, batch_size: int, epoch: int = 0) -> None:
        """Nothing to plan: every row is at hand."""

    def take(self, positions: np.ndarray, batch: int) -> np.ndarray:
        """Vectors of the split's rows at ``positions``: float32 (len(positions), dim)."""
        return self.x[positions]

    def close(self) -> None:
        """Nothing to release."""


class AugmentedVectors:
    """A train split's clean vectors ``x`` (m, dim) and views in memory; each epoch draws, per row, its
    clean vector or one of its views, uniformly among the 1 + K (with probability 1/(K+1) each).

    ``views`` is float32 (v, dim) and ``view_at`` int64 (m, K) the index into ``views`` of view j of
    row i (-1 where a row lacks that view: the clean vector is used). The draw of epoch ``e`` is a
    function of ``seed`` and ``e`` only, so the same seed gives the same batches.
    """

    streamed = False

    def __init__(self, x: np.ndarray, views: np.ndarray, view_at: np.ndarray, seed: int):
        self.x, self.views, self.view_at, self.seed = x, views, view_at, seed
        self.choice = np.zeros(len(x), dtype=np.int64)

    def plan(self, order: np.ndarray, batch_size: int, epoch: int = 0) -> None:
        """Draw, for every row, what epoch ``epoch`` shows of it: 0 the clean vector, j + 1 view j."""
        rng = np.random.default_rng([self.seed, epoch, 0xA06])
        self.choice = rng.integers(0, self.view_at.shape[1] + 1, size=len(self.x))

    def take(self, positions: np.ndarray, batch: int) -> np.ndarray:
        """Vectors of the rows at ``positions`` as drawn for this epoch: float32 (len(positions), dim)."""
        out = self.x[positions]
        pick = self.choice[positions]
        drawn = np.flatnonzero(pick > 0)
        at = self.view_at[positions[drawn], pick[drawn] - 1]
        has = at >= 0
        out[drawn[has]] = self.views[at[has]]
        return out

    def close(self) -> None:
        """Nothing to release."""


class CacheVectors:
    """A split's vectors read from the cache a chunk of rows at a time.

    ``plan`` is told the order of an epoch, so each chunk is read when the first batch needs it
    and dropped after the last one: an epoch reads every chunk once, and holds only the chunks of
    the batches in flight. ``peak_rows_held`` is the most split rows held at once.
    """

    streamed = True

    def __init__(self, path: str | Path, rows: np.ndarray, dim: int):
        self.reader = FeatureReader(path)
        self.rows, self.dim = np.asarray(rows, dtype=np.int64), dim
        self._chunk = self.rows // CHUNK_ROWS
        self._held: dict[int, tuple[int, np.ndarray]] = {}  # chunk -> (its first position, its vectors)
        self._last_batch: dict[int, int] = {}
        self.peak_rows_held = 0

    def plan(self, order: np.ndarray, batch_size: int, epoch: int = 0) -> None:
        """Note the last batch that needs each chunk when batches of ``batch_size`` follow ``order``."""
        present, index = np.unique(self._chunk[order], return_inverse=True)
        last = np.full(len(present), -1, dtype=np.int64)
        np.maximum.at(last, index, np.arange(len(order)) // batch_size)
        self._last_batch = dict(zip(present.tolist(), last.tolist()))

    def take(self, positions: np.ndarray, batch: int) -> np.ndarray:
        """Vectors of the split's rows at ``positions`` for batch number ``batch``: float32 (len(positions), dim)."""
        chunks = self._chunk[positions]
        out = np.empty((len(positions), self.dim), dtype=np.float32)
        for chunk in np.unique(chunks).tolist():
            first, vectors = self._held[chunk] if chunk in self._held else self._load(chunk)
            mine = chunks == chunk
            out[mine] = vectors[positions[mine] - first]
        self.peak_rows_held = max(self.peak_rows_held, sum(len(v) for _, v in self._held.values()))
        for chunk in [c for c in self._held if self._last_batch.get(c, -1) <= batch]:
            del self._held[chunk]
        return out

    def _load(self, chunk: int) -> tuple[int, np.ndarray]:
        lo, hi = (int(i) for i in np.searchsorted(self._chunk, [chunk, chunk + 1]))
        start, stop = int(self.rows[lo]), int(self.rows[hi - 1]) + 1
        block = self.reader.read(start, stop)
        if stop - start != hi - lo:  # other splits' rows interleave: keep this split's only
            block = block[self.rows[lo:hi] - start]
        self._held[chunk] = (lo, block)
        return self._held[chunk]

    def close(self) -> None:
        self._held.clear()
        self.reader.close()


class EpochBatches:
    """A split cut into batches: ``batch(i)`` is (vectors float32 (b, dim), labels int64 (b,)).

    Shuffled, epoch ``e`` (set by :meth:`start_epoch`, 0 at first) follows ``epoch_order(rows,
    seed, e)``; not shuffled, batches follow the cache's order. Iterating yields every batch of
    the current epoch.
    """

    def __init__(self, rows, y, vectors, batch_size: int, shuffle: bool = False, seed: int = 0):
        self.rows, self.y, self.vectors = np.asarray(rows, dtype=np.int64), np.asarray(y), vectors
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.start_epoch(0)

    def start_epoch(self, epoch: int) -> None:
        """Batch the rows in the order of epoch ``epoch`` from now on."""
        self.epoch = epoch
        self.order = epoch_order(self.rows, self.seed, self.epoch) if self.shuffle else np.arange(len(self.rows))
        self.vectors.plan(self.order, self.batch_size, epoch)

    def __len__(self) -> int:
        return -(-len(self.rows) // self.batch_size)

    def batch(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} of {len(self)}")
        positions = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        return self.vectors.take(positions, index), self.y[positions]

    def __iter__(self):
        return (self.batch(i) for i in range(len(self)))
