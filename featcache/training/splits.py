"""A cache's train / validation / test splits: row indices and labels, vectors in memory when they fit.

The vectors of the splits in use are loaded only when they fit the memory budget; otherwise
:meth:`Splits.vectors` reads them from the cache a chunk of rows at a time (see :mod:`stream`).
A cache without validation rows gets a stable validation carve.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from featcache.cache.layout import AUGMENTED, FEATURES, Views, read_views
from featcache.cache.reader import FeatureReader, RowIndex, read_row_index, read_sha256
from featcache.config import format_size
from featcache.errors import CacheError
from featcache.training import stream

log = logging.getLogger(__name__)

CARVE_SALT = "featcache-validation-carve:"


@dataclass
class Split:
    """One split: ``rows`` int64 (m,) its cache rows in cache order, ``y`` int64 (m,) class indices,
    ``x`` float32 (m, dim) its vectors when held in memory, None when they are read from the cache."""

    rows: np.ndarray
    y: np.ndarray
    x: np.ndarray | None = None
    views: TrainViews | None = None  # augmented views, when training asks for them

    def __len__(self) -> int:
        return len(self.y)

    def with_views(self) -> tuple[np.ndarray, np.ndarray]:
        """Every clean vector and every view of the split, with their labels: what a model that takes
        all views at once (the logistic baseline) is fitted on."""
        if self.views is None:
            return self.x, self.y
        return np.concatenate([self.x, self.views.x]), np.concatenate([self.y, self.y[self.views.all_rows()]])


@dataclass
class TrainViews:
    """The augmented views of a train split: ``x`` float32 (v, dim), ``at`` int64 (m, K) the index into
    ``x`` of view j of the split's row i (-1 where it lacks one), and the views' attributes."""

    x: np.ndarray
    at: np.ndarray
    attrs: dict

    @property
    def count(self) -> int:
        return self.at.shape[1]

    def all_rows(self) -> np.ndarray:
        """For each view in ``x``, the position of its row in the split: int64 (v,)."""
        rows = np.full(len(self.x), -1, dtype=np.int64)
        i, _ = np.nonzero(self.at >= 0)
        rows[self.at[self.at >= 0]] = i
        return rows


@dataclass(frozen=True)
class MemoryPlan:
    """Whether the vectors of the splits in use (``names``) are held in memory or streamed, and why."""

    vector_bytes: int
    budget: int | None
    names: tuple[str, ...]

    @property
    def streamed(self) -> bool:
        return self.budget is not None and self.vector_bytes > self.budget

    def reason(self) -> str:
        """Why the vectors are streamed or held, in words for summaries and reports."""
        names = ", ".join(self.names[:-1]) + " and " + self.names[-1] if len(self.names) > 1 else self.names[0]
        what = f"the {names} vectors ({format_size(self.vector_bytes)})"
        if self.budget is None:
            return f"{what} are held in memory"
        verb = "exceed" if self.streamed else "fit"
        return f"{what} {verb} the memory budget ({format_size(self.budget)})"

    def to_dict(self) -> dict:
        """As ``head.json`` and ``report.json`` record it."""
        return {
            "streamed": self.streamed,
            "vector_bytes": self.vector_bytes,
            "memory_budget": self.budget,
            "reason": self.reason(),
        }


@dataclass
class Splits:
    """The splits a head is trained and judged on, and where they came from."""

    cache_path: Path
    attrs: dict
    class_names: list[str]
    train: Split
    validation: Split
    test: Split | None
    val_carved: bool
    feature_dim: int
    memory: MemoryPlan
    dropped: int = 0  # validation and test rows left out as leaks from an earlier split
    leaking_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # those rows
    label_issues: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # train rows left out

    @property
    def fingerprint(self) -> str:
        return self.attrs["fingerprint"]

    def vectors(self, split: Split, seed: int = 0):
        """The vectors of ``split``: a :class:`stream.MemoryVectors`, :class:`stream.AugmentedVectors` (a train
        split with views, drawn with ``seed``) or :class:`stream.CacheVectors` (close it)."""
        if split.views is not None:
            return stream.AugmentedVectors(split.x, split.views.x, split.views.at, seed)
        if split.x is not None:
            return stream.MemoryVectors(split.x)
        return stream.CacheVectors(self.cache_path, split.rows, self.feature_dim)

    def batches(self, split: Split, batch_size: int, shuffle: bool = False, seed: int = 0) -> stream.EpochBatches:
        """``split`` in batches of ``batch_size`` (shuffled by :func:`stream.epoch_order` with ``seed``)."""
        return stream.EpochBatches(split.rows, split.y, self.vectors(split, seed), batch_size, shuffle, seed)


def load_splits(
    cache_path: str | Path,
    holdout_fraction: float = 0.2,
    memory_budget: int | None = None,
    with_test: bool = True,
    with_views: bool = False,
    drop_leaks: bool = False,
    leaking: np.ndarray | None = None,
    label_issues: np.ndarray | None = None,
) -> Splits:
    """Read the splits of ``cache_path``; without validation rows, carve ``holdout_fraction`` of train (ranked by
    a salted hash of the content, so the same images on every run and machine). The vectors of the splits in
    use are loaded when they fit ``memory_budget`` bytes (None: always), else :meth:`Splits.vectors` streams
    them. ``with_views`` adds the cache's augmented views to train (in memory); ``drop_leaks`` leaves out the
    validation and test rows that leak from an earlier split (``leaking``, when found already, else found now);
    ``label_issues`` are train rows left out (see :func:`featcache.training.labels.label_issue_rows`).
    """
    index = read_row_index(Path(cache_path))
    _check_trainable(index)
    train_rows, val_rows, carved = _train_and_validation(index, holdout_fraction)
    dropped = _leaking(index.path, leaking) if drop_leaks else np.zeros(0, dtype=np.int64)
    val_rows, test_rows = np.setdiff1d(val_rows, dropped), np.setdiff1d(index.split_indices("test"), dropped)
    mislabelled = np.zeros(0, dtype=np.int64) if label_issues is None else np.asarray(label_issues, dtype=np.int64)
    train_rows = np.setdiff1d(train_rows, mislabelled)
    used = {"train": train_rows, "validation": val_rows, **({"test": test_rows} if with_test else {})}
    views = _views_of(index, with_views)
    plan = _memory_plan(index, used, views, memory_budget)
    split = _split_reader(index, used, plan)
    train = split("train", train_rows)
    if views is not None:
        train.views = _train_views(index.path, views, train_rows)
    return Splits(
        cache_path=Path(cache_path),
        attrs=index.attrs,
        class_names=index.class_names,
        train=train,
        validation=split("validation", val_rows),
        test=split("test", test_rows) if len(test_rows) else None,
        val_carved=carved,
        feature_dim=index.dim,
        memory=plan,
        dropped=len(dropped),
        leaking_rows=dropped,
        label_issues=mislabelled,
    )


def _leaking(path: Path, found_already: np.ndarray | None) -> np.ndarray:
    if found_already is not None:
        return np.asarray(found_already, dtype=np.int64)
    from featcache.training.leaks import find_leaks

    found = find_leaks(path)
    log.info(
        "%s: leaving out %d validation/test row(s) that leak from an earlier split", path, len(found.leaking_rows())
    )
    return found.leaking_rows()


def _split_reader(index: RowIndex, used: dict, plan: MemoryPlan):
    """A function from a split's name and rows to its :class:`Split`, vectors read now unless streamed."""
    vectors = dict.fromkeys(("train", "validation", "test"))
    if not plan.streamed:
        with FeatureReader(index.path) as reader:
            vectors.update(zip(used, reader.gather(list(used.values()), stream.CHUNK_ROWS)))
    log.info("%s: %s", index.path, plan.reason())

    def split(name: str, rows: np.ndarray) -> Split:
        return Split(rows, index.label[rows], vectors[name])

    return split


def _memory_plan(index: RowIndex, used: dict, views: Views | None, budget: int | None) -> MemoryPlan:
    """Whether the vectors of the splits ``used`` (and the views) fit ``budget``; views must."""
    extra = len(views.row) * index.dim * 4 if views is not None else 0
    names = tuple(used) + (("augmented train",) if views is not None else ())
    plan = MemoryPlan(sum(len(r) for r in used.values()) * index.dim * 4 + extra, budget, names)
    if plan.streamed and views is not None:
        raise CacheError(
            f"{index.path}: {plan.reason()}; training on augmented views needs them in memory — "
            f"raise --memory-budget, or leave out --with-views"
        )
    return plan


def _views_of(index: RowIndex, with_views: bool):
    if not with_views:
        return None
    views = read_views(index.path)
    if views is None or not len(views):
        raise CacheError(
            f"{index.path} has no augmented views; run featcache extract DATA_DIR -o {index.path} --augment 10 "
            f"to add them, or leave out --with-views"
        )
    return views


def _train_views(path: Path, views: Views, train_rows: np.ndarray) -> TrainViews:
    """The views of ``train_rows`` (views of rows carved into validation are left out)."""
    position = np.full(int(max(views.row.max(), train_rows.max(initial=0))) + 1, -1, dtype=np.int64)
    position[train_rows] = np.arange(len(train_rows))
    mine = np.flatnonzero(position[views.row] >= 0)
    at = np.full((len(train_rows), views.count), -1, dtype=np.int64)
    at[position[views.row[mine]], views.view[mine]] = np.arange(len(mine))
    with FeatureReader(path, f"{AUGMENTED}/{FEATURES}") as reader:  # a chunk at a time, keeping only these
        (x,) = reader.gather([mine], stream.CHUNK_ROWS)
    return TrainViews(x, at, views.attrs)


def _train_and_validation(index: RowIndex, holdout_fraction: float) -> tuple[np.ndarray, np.ndarray, bool]:
    """Train and validation rows, and whether validation was carved from train."""
    train_rows, val_rows = index.split_indices("train"), index.split_indices("validation")
    if len(val_rows):
        return train_rows, val_rows, False
    hashes = read_sha256(index.path, train_rows)
    train_rows, val_rows = carve_validation(train_rows, hashes, holdout_fraction, index.path)
    log.info("%s has no validation rows; holding out %d train rows", index.path, len(val_rows))
    return train_rows, val_rows, True


def _check_trainable(index: RowIndex) -> None:
    if len(index.class_names) < 2:
        raise CacheError(
            f"{index.path} has {len(index.class_names)} class(es); a classifier needs at least two — "
            f"extract a dataset with two or more class folders"
        )
    train = index.split_indices("train")
    if len(train) == 0:
        raise CacheError(
            f"{index.path} has no train rows; extract a dataset with a train split (or class folders only)"
        )
    if len(np.unique(index.label[train])) < 2:
        raise CacheError(f"{index.path} has train rows of one class only; add train images of at least one more class")


def carve_validation(train_rows: np.ndarray, sha256s: list[str], fraction: float, path: Path):
    """Split ``train_rows`` into (train, validation) by a salted hash rank; both keep cache order.

    ``sha256s`` are the content hashes of ``train_rows``, in the same order.
    """
    n_val = max(1, round(fraction * len(train_rows)))
    if len(train_rows) - n_val < 1:
        raise CacheError(
            f"{path} has {len(train_rows)} train row(s) and no validation rows; add images or a validation split"
        )
    keys = [hashlib.sha256((CARVE_SALT + sha).encode()).hexdigest() for sha in sha256s]
    order = sorted(range(len(train_rows)), key=lambda i: (keys[i], int(train_rows[i])))
    held = np.zeros(len(train_rows), dtype=bool)
    held[order[:n_val]] = True
    return train_rows[~held], train_rows[held]


def one_hot(y: np.ndarray, n_classes: int) -> np.ndarray:
    """float32 (m, n_classes) one-hot rows of the class indices ``y``."""
    return np.eye(n_classes, dtype=np.float32)[y]
