"""The content hashes of the rows an update writes: those of reused rows are left in the entry file it
replaces and read from there a block at a time, so an update of a large cache never holds them all."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import numpy as np

from featcache.cache.layout import SHA256, ColumnBlocks, ColumnReader

HASH_WIDTH = 64  # a sha256 in hex
#: rows whose hashes are made at once by :meth:`RowHashes.blocks` (1 MB of hashes, a few MB of temporaries)
BLOCK_ROWS = 1 << 14


class RowHashes(ColumnBlocks):
    """The content hash of each row (hex as bytes): row i's is row ``reused[i]`` of the entry file ``path``
    where that is >= 0, else the next of ``computed`` (in row order; b"" where the file could not be read).
    Only ``computed`` is held while the reused rows come in the file's order (a walk of the folder the cache
    was made from); otherwise (a reordered manifest) every hash is read at once, in the file's order, on first
    use: reading in the rows' order would read the whole column for every block. ``stored``, when given, is the
    entry file's whole content-hash column, already read for another use (the views): it is not read again."""

    def __init__(self, path: Path | None, reused: np.ndarray, computed, stored: np.ndarray | None = None):
        self.path, self.reused, self.stored = path, np.asarray(reused, dtype=np.int64), stored
        self.computed = np.array(computed, dtype=f"S{HASH_WIDTH}").reshape(len(computed))
        self._new = np.flatnonzero(self.reused < 0)  # the rows whose hash was computed, increasing
        if len(self._new) != len(self.computed):
            raise ValueError(f"{len(self._new)} rows are not reused but {len(self.computed)} hashes were computed")
        self.itemsize = HASH_WIDTH if len(self.reused) else 1  # what a column of no rows is stored as
        source = self.reused[self.reused >= 0]
        self._in_file_order = bool(np.all(source[1:] >= source[:-1]))
        self._held: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.reused)

    def present(self) -> np.ndarray:
        """Which rows have a content hash (the others: files that could not be read), bool (n,)."""
        found = self.reused >= 0
        found[self._new] = self.computed != b""
        return found

    def take(self, kept: np.ndarray) -> RowHashes:
        """The hashes of the rows ``kept`` (indices, increasing)."""
        reused = self.reused[kept]
        computed = self.computed[np.searchsorted(self._new, kept[reused < 0])]
        return RowHashes(self.path, reused, computed, self.stored)

    def rows(self, idx) -> np.ndarray:
        """The hashes of the rows ``idx`` (increasing), ``S64`` (len(idx),)."""
        return np.concatenate([*self.in_blocks(np.asarray(idx, dtype=np.int64).reshape(-1)), self.computed[:0]])

    def blocks(self):
        return self.in_blocks()

    def in_blocks(self, idx: np.ndarray | None = None):
        """The hashes of the rows ``idx`` (increasing; default every row), BLOCK_ROWS rows at a time."""
        n = len(self) if idx is None else len(idx)
        held = self._held_hashes()
        with self._column() as column:  # opened once for every block
            for start in range(0, n, BLOCK_ROWS):
                at = np.arange(start, min(start + BLOCK_ROWS, n)) if idx is None else idx[start : start + BLOCK_ROWS]
                yield held[at] if held is not None else self._rows(column, at)

    def array(self) -> np.ndarray:
        """Every row's hash at once, ``S64`` (n,): for the uses that need them all (views, format-1 caches)."""
        return self.rows(np.arange(len(self)))

    def _held_hashes(self) -> np.ndarray | None:
        """Every row's hash, when the reused rows are not in the file's order (read once, then kept)."""
        if self._in_file_order:
            return None
        if self._held is None:
            self._held = np.zeros(len(self), dtype=f"S{HASH_WIDTH}")
            hit = np.flatnonzero(self.reused >= 0)
            hit = hit[np.argsort(self.reused[hit], kind="stable")]  # the file is read in its order
            with self._column() as column:
                for start in range(0, len(hit), BLOCK_ROWS):
                    at = hit[start : start + BLOCK_ROWS]
                    self._held[at] = column.rows(self.reused[at])
            self._held[self._new] = self.computed
        return self._held

    @contextmanager
    def _column(self):
        """The entry file's content-hash column (None without a file: every hash was computed)."""
        if self.stored is not None:
            yield _HeldColumn(self.stored)
            return
        column = ColumnReader(self.path, SHA256) if self.path is not None else None
        try:
            yield column
        finally:
            if column is not None:
                column.close()

    def _rows(self, column: ColumnReader, idx: np.ndarray) -> np.ndarray:
        found = np.zeros(len(idx), dtype=f"S{HASH_WIDTH}")
        source = self.reused[idx]
        read = source >= 0
        if read.any():
            found[read] = column.rows(source[read])
        if not read.all():
            found[~read] = self.computed[np.searchsorted(self._new, idx[~read])]
        return found


class _HeldColumn:
    """A content-hash column already read whole, read as :class:`ColumnReader` reads one from its file."""

    def __init__(self, values: np.ndarray):
        self.values = np.asarray(values, dtype=f"S{HASH_WIDTH}")

    def rows(self, idx) -> np.ndarray:
        return self.values[np.asarray(idx, dtype=np.int64)]
