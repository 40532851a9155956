"""Reading a cache in pieces: labels and splits as arrays, vectors by contiguous ranges of rows.

Stage two uses this on caches larger than memory: nothing here reads ``/features`` whole, nor the
paths and hashes of every row. Vectors are read as contiguous slices ``h5["features"][a:b]``, which
h5py serves the same way from a plain dataset and from a virtual one over shards.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from featcache.cache.layout import (
    CLASS_NAMES,
    FEATURES,
    LABEL,
    SHA256,
    SPLIT,
    SPLITS,
    attr_value,
    check_format,
    damaged,
    decode_strings,
    open_h5,
    read_columns,
    split_codes,
    split_counts,
    vector_dim,
)
from featcache.errors import CacheError

#: rows of string metadata decoded at once, so a million rows never become a million Python strings
METADATA_ROWS = 65536


@dataclass
class RowIndex:
    """What training needs of a cache's rows: ``label`` int64 (n,), ``split`` int8 (n,) index into SPLITS."""

    path: Path
    attrs: dict
    class_names: list[str]
    label: np.ndarray
    split: np.ndarray
    dim: int

    def __len__(self) -> int:
        return len(self.label)

    @property
    def fingerprint(self) -> str:
        return self.attrs["fingerprint"]

    def split_indices(self, split: str) -> np.ndarray:
        """Row indices of ``split`` in cache order, int64 of shape (m,)."""
        return np.flatnonzero(self.split == SPLITS.index(split)).astype(np.int64)


def read_row_index(path: str | Path) -> RowIndex:
    """Labels, splits, class names and attributes of the cache at ``path``, without vectors or paths."""
    path = Path(path)
    with open_h5(path) as h5:
        attrs = {k: attr_value(v) for k, v in h5.attrs.items()}
        check_format(path, attrs)
        try:
            label = h5[LABEL][:].astype(np.int64)
            split = _split_codes(h5[SPLIT])
            return RowIndex(path, attrs, decode_strings(h5[CLASS_NAMES][:]), label, split, vector_dim(h5))
        except (KeyError, OSError, ValueError, IndexError) as exc:
            raise damaged(path, exc) from None


def _split_codes(dataset) -> np.ndarray:
    codes = np.empty(dataset.shape[0], dtype=np.int8)
    for start in range(0, len(codes), METADATA_ROWS):
        block = split_codes(dataset[start : start + METADATA_ROWS])
        codes[start : start + len(block)] = block
    return codes


@dataclass
class RowCounts:
    """How many rows a cache has, per split and per split and class (splits of no other name counted in
    ``rows`` only)."""

    rows: int
    per_split: dict[str, int]
    per_class: dict[str, dict[str, int]]


def count_rows(path: str | Path, class_names: list[str]) -> RowCounts:
    """The :class:`RowCounts` of the cache at ``path`` (of classes ``class_names``), from its labels and
    split codes (9 bytes a row)."""
    index = read_row_index(path)
    try:
        return RowCounts(len(index), *split_counts(index.split, index.label, class_names))
    except ValueError as exc:
        raise damaged(Path(path), exc) from None


def read_sha256(path: str | Path, rows: np.ndarray) -> list[str]:
    """The content hashes of ``rows`` (increasing cache row indices), read a block at a time."""
    return decode_strings(read_columns(path, (SHA256,), rows).sha256)


class FeatureReader:
    """Reads ``/features`` of one cache by contiguous row ranges; ``rows_read`` counts the rows read.

    Opens the file on first use; use it as a context manager (or call :meth:`close`).
    """

    def __init__(self, path: str | Path, dataset: str = FEATURES):
        self.path = Path(path)
        self.dataset = dataset  # /features, or /augmented/features for the views
        self.rows_read = 0
        self._h5 = None

    @property
    def dim(self) -> int:
        return int(self._features().shape[1])

    def read(self, start: int, stop: int) -> np.ndarray:
        """Vectors of rows ``start`` to ``stop`` (excluded): float32 (stop - start, dim)."""
        try:
            block = self._features()[start:stop]
        except OSError as exc:
            raise damaged(self.path, exc) from None
        self.rows_read += len(block)
        return np.asarray(block, dtype=np.float32)

    def _features(self):
        if self._h5 is None:
            self._h5 = open_h5(self.path, chunk_cache=True)
        if self.dataset not in self._h5:
            raise CacheError(f"{self.path} has no {self.dataset} dataset; rerun featcache extract with --overwrite")
        return self._h5[self.dataset]

    def gather(self, row_sets: list[np.ndarray], chunk_rows: int) -> list[np.ndarray]:
        """Vectors of each increasing array of row indices in ``row_sets``, in one pass over the cache.

        The cache is read ``chunk_rows`` contiguous rows at a time, and each set takes its rows
        from every chunk, so no more than one chunk is held beyond the arrays returned.
        """
        sets = [np.asarray(rows, dtype=np.int64) for rows in row_sets]
        out = [np.empty((len(rows), self.dim), dtype=np.float32) for rows in sets]
        last = max((int(rows[-1]) + 1 for rows in sets if len(rows)), default=0)
        for start in range(0, last, chunk_rows):
            bounds = [np.searchsorted(rows, [start, start + chunk_rows]) for rows in sets]
            if not any(hi > lo for lo, hi in bounds):
                continue
            block = self.read(start, min(start + chunk_rows, last))
            for rows, x, (lo, hi) in zip(sets, out, bounds):
                x[lo:hi] = block[rows[lo:hi] - start]
        return out

    def close(self) -> None:
        if self._h5 is not None:
            self._h5.close()
            self._h5 = None

    def __enter__(self) -> FeatureReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
