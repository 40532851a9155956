"""A split of a cache for one's own models: its arrays in memory, or a Keras dataset that reads it in chunks.

Both read the cache with the readers stage two uses (:mod:`featcache.cache.reader`), and the dataset
batches it with train-head's own shuffle (:mod:`featcache.training.stream`), so a model fitted on it
sees the batches a head would.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from featcache.cache.layout import PATH, SPLITS, decode_strings, read_columns
from featcache.cache.reader import FeatureReader, RowIndex, read_row_index
from featcache.config import check_int, memory_budget_bytes
from featcache.errors import CacheError, ConfigError
from featcache.training import stream
from featcache.training.head_files import import_keras
from featcache.training.splits import MemoryPlan, one_hot


@dataclass(frozen=True, eq=False)
class CachedSplit:
    """The rows of one split of a cache, in cache order.

    Attributes
    ----------
    X : ndarray of shape (n_rows, dim), float32
        Each row's pooled backbone vector.
    y : ndarray of shape (n_rows,), int64
        Each row's class, an index into ``class_names``.
    class_names : list of str
        The cache's classes, sorted.
    paths : list of str
        Each row's image path relative to the data folder, ``/``-separated; a byte of a name that is not
        UTF-8 is kept as :func:`os.fsdecode` keeps it, so the ``str`` opens the file.
    rows : ndarray of shape (n_rows,), int64
        Each row's index in the cache.
    split : str or None
        The split these rows are (None: every row of the cache).
    """

    X: np.ndarray
    y: np.ndarray
    class_names: list[str]
    paths: list[str]
    rows: np.ndarray
    split: str | None

    def __len__(self) -> int:
        return len(self.y)


def split_rows(index: RowIndex, split: str | None) -> np.ndarray:
    """The cache rows (int64, increasing) of ``split``, one of SPLITS, or every row for None."""
    if split is None:
        return np.arange(len(index), dtype=np.int64)
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}, or None for every row; got {split!r}")
    return index.split_indices(split)


def load_split(cache: str | Path, split: str | None, memory_budget: int | str | None) -> CachedSplit:
    """The rows of ``split`` of ``cache`` with their vectors, labels and paths, refused above ``memory_budget``
    bytes of vectors (None: the default budget of :class:`featcache.config.HeadConfig`)."""
    index = read_row_index(cache)
    rows = split_rows(index, split)
    plan = MemoryPlan(len(rows) * index.dim * 4, memory_budget_bytes(memory_budget), (split or "cache's",))
    if plan.streamed:
        raise ConfigError(
            f"{index.path}: {plan.reason()}; read them in batches with "
            f"featcache.dataset({str(index.path)!r}, {split!r}), or raise memory_budget"
        )
    with FeatureReader(index.path) as reader:
        (x,) = reader.gather([rows], stream.CHUNK_ROWS)
    names = decode_strings(read_columns(index.path, (PATH,), rows).path)
    return CachedSplit(x, index.label[rows], index.class_names, names, rows, split)


def split_dataset(cache: str | Path, split: str | None, batch_size: int, shuffle: bool, seed: int):
    """``split`` of ``cache`` as a ``keras.utils.PyDataset`` of (float32 vectors, float32 one-hot labels),
    read from the cache a chunk of rows at a time, shuffled (or not) as train-head shuffles its train split."""
    check_int("batch_size", batch_size, 1, "use a positive batch size such as 32")
    check_int("seed", seed, 0, "use a non-negative integer seed")
    if not isinstance(shuffle, bool):
        raise ConfigError(f"shuffle must be True or False, got {shuffle!r}")
    index = read_row_index(cache)
    rows = split_rows(index, split)
    if not len(rows):
        raise CacheError(f"{index.path} has no {split} rows to batch; pick a split featcache info lists")
    vectors = stream.CacheVectors(index.path, rows, index.dim)
    batches = stream.EpochBatches(rows, index.label[rows], vectors, batch_size, shuffle, seed)
    return keras_batches(batches, len(index.class_names))


def keras_batches(batches: stream.EpochBatches, n_classes: int, outputs: int = 1):
    """``batches`` as a ``keras.utils.PyDataset`` of (vectors, one-hot labels), one worker, in order; with
    several ``outputs``, a tuple of the same labels for each.

    The n-th epoch Keras begins batches the rows in the order of ``batches``' epoch n; Keras also
    ends an epoch before the first one begins, so epochs are counted where they begin.
    """
    keras = import_keras()

    class Batches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__(workers=1, use_multiprocessing=False)
            self.begun = 0

        def __len__(self) -> int:
            return len(batches)

        def __getitem__(self, index: int):
            x, y = batches.batch(index)
            labels = one_hot(y, n_classes)
            return x, labels if outputs == 1 else (labels,) * outputs

        def on_epoch_begin(self) -> None:
            batches.start_epoch(self.begun)
            self.begun += 1

    return Batches()
