"""The train / validation / test arrays of a cache, with a stable validation carve when it has none."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from featcache.cache.layout import Cache, read_cache
from featcache.errors import CacheError

log = logging.getLogger(__name__)

CARVE_SALT = "featcache-validation-carve:"


@dataclass
class Split:
    """One split: ``x`` float32 (m, dim), ``y`` int64 (m,) class indices, ``rows`` their cache rows."""

    x: np.ndarray
    y: np.ndarray
    rows: np.ndarray

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class Splits:
    """The arrays a head is trained and judged on, and where they came from."""

    cache_path: Path
    attrs: dict
    class_names: list[str]
    train: Split
    validation: Split
    test: Split | None
    val_carved: bool

    @property
    def fingerprint(self) -> str:
        return self.attrs["fingerprint"]

    @property
    def feature_dim(self) -> int:
        return int(self.train.x.shape[1])


def load_splits(cache_path: str | Path, val_fraction: float = 0.2) -> Splits:
    """Read ``cache_path`` into splits; without validation rows, carve ``val_fraction`` of train.

    The carve ranks train rows by a salted hash of their content hash, so the same images are
    held out on every run and on every machine.
    """
    cache = read_cache(Path(cache_path))
    _check_trainable(cache)
    features, labels = cache.features, np.asarray(cache.rows.label, dtype=np.int64)
    train_rows = cache.split_indices("train")
    val_rows = cache.split_indices("validation")
    carved = len(val_rows) == 0
    if carved:
        train_rows, val_rows = carve_validation(train_rows, cache.rows.sha256, val_fraction, cache.path)
        log.info("%s has no validation rows; holding out %d train rows", cache.path, len(val_rows))
    test_rows = cache.split_indices("test")

    def split(rows: np.ndarray) -> Split:
        return Split(features[rows], labels[rows], rows)

    return Splits(
        cache_path=Path(cache_path),
        attrs=cache.attrs,
        class_names=cache.class_names,
        train=split(train_rows),
        validation=split(val_rows),
        test=split(test_rows) if len(test_rows) else None,
        val_carved=carved,
    )


def _check_trainable(cache: Cache) -> None:
    if len(cache.class_names) < 2:
        raise CacheError(
            f"{cache.path} has {len(cache.class_names)} class(es); a classifier needs at least two — "
            f"extract a dataset with two or more class folders"
        )
    train = cache.split_indices("train")
    if len(train) == 0:
        raise CacheError(
            f"{cache.path} has no train rows; extract a dataset with a train split (or class folders only)"
        )
    if len({cache.rows.label[i] for i in train}) < 2:
        raise CacheError(f"{cache.path} has train rows of one class only; add train images of at least one more class")


def carve_validation(train_rows: np.ndarray, sha256s: list[str], fraction: float, path: Path):
    """Split ``train_rows`` into (train, validation) by a salted hash rank; both keep cache order."""
    n_val = max(1, round(fraction * len(train_rows)))
    if len(train_rows) - n_val < 1:
        raise CacheError(
            f"{path} has {len(train_rows)} train row(s) and no validation rows; add images or a validation split"
        )
    keys = [hashlib.sha256((CARVE_SALT + sha256s[r]).encode()).hexdigest() for r in train_rows]
    order = sorted(range(len(train_rows)), key=lambda i: (keys[i], int(train_rows[i])))
    held = np.zeros(len(train_rows), dtype=bool)
    held[order[:n_val]] = True
    return train_rows[~held], train_rows[held]


def one_hot(y: np.ndarray, n_classes: int) -> np.ndarray:
    """float32 (m, n_classes) one-hot rows of the class indices ``y``."""
    return np.eye(n_classes, dtype=np.float32)[y]
