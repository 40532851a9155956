"""``featcache labels``: which labels of a split are likely wrong.

Each row gets out-of-fold probabilities from the logistic baseline (standardized vectors, fixed C):
K folds, each model fitted on the other folds. Rows are ranked by self-confidence, the probability the
models give the row's own label, lowest first. On the clothing data with 5% of the train labels
flipped to another class, the lowest-ranked 5% held 0.77 of the flips (cleanlab's default pipeline on
the same probabilities: 0.71; ``python -m benchmarks.labels``).
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from featcache.cache.layout import PATH, decode_strings, read_columns
from featcache.cache.reader import read_row_index
from featcache.config import LabelsConfig
from featcache.errors import ConfigError
from featcache.names import shown
from featcache.training.html_report import map_points, write_labels_html
from featcache.training.loading import load_split

LABELS_CSV, LABELS_JSON = "labels.csv", "labels.json"
COLUMNS = ("rank", "path", "given", "suggested", "given_probability", "suggested_probability")


@dataclass
class LabelsResult:
    """Every row of the split checked, likeliest label error first: its path, given and suggested class,
    and the out-of-fold probability of each."""

    cache: Path
    split: str
    folds: int
    rows: list[dict]
    cache_rows: np.ndarray  # int64: each ranked row's index in the cache, in the order of ``rows``
    class_names: list[str]
    xy: list[list[int]]  # where the map draws each row (html_report.map_points), in the order of ``rows``
    data_dir: Path | None  # the images' folder the cache recorded, for the report's thumbnails
    seconds: float = 0.0
    files: list[Path] = field(default_factory=list)

    def summary(self, top: int = 10) -> str:
        """What ``featcache labels`` prints: the likeliest label errors, and where the whole list is."""
        lines = [
            f"{self.cache}: {len(self.rows)} {self.split} rows ranked in {self.seconds:.1f} s ({self.folds} folds)"
        ]
        for row in self.rows[:top]:
            lines.append(
                f"  {row['rank']:>4}  {shown(row['path'])}: {shown(row['given'])} ({row['given_probability']:.2f}) "
                f"-> {shown(row['suggested'])} ({row['suggested_probability']:.2f})"
            )
        lines += [f"wrote {path}" for path in self.files]
        return "\n".join(lines)


def out_of_fold(x: np.ndarray, y: np.ndarray, n_classes: int, folds: int, c: float, seed: int) -> np.ndarray:
    """Probabilities of each class for each row (float64 (n, n_classes)), each row's from a standardized
    logistic regression fitted on the other folds (stratified, shuffled by ``seed``)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    probabilities = np.zeros((len(y), n_classes))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    with threadpool_limits(1):  # lbfgs on 2048-d vectors ran many times slower with threaded BLAS
        for fit_rows, held_rows in splitter.split(x, y):
            model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=1000))
            model.fit(x[fit_rows], y[fit_rows])
            probabilities[np.ix_(held_rows, model.classes_)] = model.predict_proba(x[held_rows])
    return probabilities


def rank_labels(cache: str | Path, config: LabelsConfig) -> LabelsResult:
    """The rows of ``config.split`` of ``cache`` ranked by the out-of-fold probability of their label."""
    start = time.perf_counter()
    data = load_split(cache, config.split, None)
    counts = np.bincount(data.y, minlength=len(data.class_names))
    if len(data.y) < config.folds or counts[counts > 0].min() < config.folds:
        raise ConfigError(
            f"{cache}: a class of the {config.split} split has fewer rows than the {config.folds} folds; "
            f"pass a smaller --folds (at least 2)"
        )
    p = out_of_fold(data.X, data.y, len(data.class_names), config.folds, config.baseline_c, config.seed)
    given, suggested = p[np.arange(len(data.y)), data.y], p.argmax(axis=1)
    names, order = data.class_names, np.argsort(given, kind="stable")
    rows = [
        {"rank": rank, "path": data.paths[i], "given": names[data.y[i]], "suggested": names[suggested[i]],
         "given_probability": round(float(given[i]), 4), "suggested_probability": round(float(p[i, suggested[i]]), 4)}
        for rank, i in enumerate(order.tolist(), start=1)
    ]  # fmt: skip
    data_dir = read_row_index(cache).attrs.get("data_dir")
    return LabelsResult(
        Path(cache), config.split, config.folds, rows, data.rows[order], names, map_points(data.X[order]),
        Path(data_dir) if data_dir else None, time.perf_counter() - start,
    )  # fmt: skip


def label_issue_rows(cache: str | Path, spec: int | Path | None) -> np.ndarray:
    """The train rows of ``cache`` that ``--drop-label-issues`` leaves out (int64, sorted): the first ``spec``
    of the train split's ranking (an int, with the default :class:`LabelsConfig`), the rows of the paths a
    CSV file lists in its ``path`` column (``spec`` a Path; labels.csv cut to the rows to drop is one), or
    none (None)."""
    if spec is None:
        return np.zeros(0, dtype=np.int64)
    if isinstance(spec, int):
        ranked = rank_labels(cache, LabelsConfig()).cache_rows
        if spec > len(ranked):
            raise ConfigError(f"--drop-label-issues {spec} exceeds the {len(ranked)} train rows of {cache}")
        return np.sort(ranked[:spec])
    listed = _listed_paths(spec)
    index = read_row_index(cache)
    train = index.split_indices("train")
    at = dict(zip(decode_strings(read_columns(index.path, (PATH,), train).path), train.tolist()))
    missing = [path for path in listed if path not in at]
    if missing:
        raise ConfigError(
            f"{spec}: {len(missing)} listed path(s) are not train rows of {cache}, e.g. {shown(missing[0])!r}; "
            f"list paths as featcache labels writes them in labels.csv"
        )
    return np.unique(np.array([at[path] for path in listed], dtype=np.int64))


def _listed_paths(spec: Path) -> list[str]:
    """The ``path`` column of the CSV file ``spec``."""
    try:
        with open(spec, newline="", encoding="utf-8", errors="surrogateescape") as fh:
            reader = csv.DictReader(fh)
            if "path" not in (reader.fieldnames or ()):
                raise ConfigError(
                    f"{spec} has no path column; give a CSV file whose header has path (as labels.csv), "
                    f"or a number of rows"
                )
            return [row["path"] for row in reader]
    except (OSError, csv.Error) as exc:
        why = getattr(exc, "strerror", None) or exc
        raise ConfigError(f"cannot read {spec} ({why}); give a CSV file of paths or a number of rows") from None


def write_labels(result: LabelsResult, out: Path) -> list[Path]:
    """``labels.csv`` (every row, ranked), ``labels.json`` (the same, with the settings) and ``report.html``
    (the likeliest errors' images, and the map) in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    document = {"cache": str(result.cache), "split": result.split, "folds": result.folds, "rows": result.rows}
    (out / LABELS_JSON).write_text(json.dumps(document, indent=1) + "\n")
    with open(out / LABELS_CSV, "w", newline="", encoding="utf-8", errors="surrogateescape") as fh:  # names' bytes
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(result.rows)
    page = write_labels_html(out, result)
    result.files = [out / LABELS_CSV, out / LABELS_JSON, page]
    return result.files
