"""Ranking likely label errors on planted noise: cleanlab's default pipeline against what featcache has.

    python -m benchmarks.labels --cache CACHE [--noise 0.05] [--seeds 3] [--folds 5] [--c 0.001]

cleanlab is not a dependency of featcache: ``pip install cleanlab`` (2.9 measured) before running this.

For each seed, ``--noise`` of the train labels of CACHE (rows chosen at random) are flipped to a random
other class; k is the number flipped. Every method ranks the train rows from most to least likely
mislabelled, using the noisy labels only; top-k precision is the share of planted flips among the first k.

* ``cleanlab``: ``--folds`` out-of-fold probabilities of a logistic regression (standardized vectors, C =
  ``--c``, lbfgs) given to ``cleanlab.filter.find_label_issues(..., return_indices_ranked_by=
  "self_confidence")``: its flagged rows first, in its order, then the rest by self-confidence. The
  flagged set's size, precision and recall are reported too.
* Candidates from what featcache has (the same folds): the logistic probabilities ranked by
  self-confidence or normalized margin (``cleanlab.rank.get_label_quality_scores``); neighbour agreement
  (the cosine-weighted vote of the ``--neighbours`` nearest train rows, L2-normalised vectors, given
  label's share); a Dense head (one ``Dense(classes)`` layer, Adam lr 0.01, from logits, ``--head-epochs``
  epochs) averaged with the logistic; "sqrt" logistics (vectors square-rooted, L2-normalised, then
  standardized, C = 3 x ``--c``) averaged over 3 fold splits, alone, with a second pass whose folds
  leave out the rows the first pass's ``find_label_issues`` flagged, and averaged with the neighbours'.
  For every probability the flagged set of ``find_label_issues`` on it is reported as well.
* "pre-existing": the k rows the 5-fold logistic finds least likely on the clean labels, before any flip:
  likely errors or ambiguous photos of the data set itself. Top-k precision counting them as hits too
  is reported beside it.

Validation (and test) accuracy of the logistic (C = ``--c``) trained on the clean labels, on the noisy
labels, and on the noisy labels without the top k of the best method, of cleanlab, without cleanlab's
flagged set, and without the planted flips (oracle); "recovered" is the share of what the noise cost
that dropping them won back, over the seeds where the noise cost something.
Seconds are per seed, in this process, with ``--threads`` BLAS threads (more threads than free cores
slow lbfgs tenfold on a busy machine).
"""

from __future__ import annotations

import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import click
import numpy as np

SQRT_SPLITS = 3


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or "unknown"


def plant(y: np.ndarray, n_classes: int, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels with ``share`` of the rows flipped to a random other class, and the flipped rows."""
    rng = np.random.default_rng(seed)
    flipped = np.sort(rng.choice(len(y), round(share * len(y)), replace=False))
    noisy = y.copy()
    noisy[flipped] = (y[flipped] + rng.integers(1, n_classes, len(flipped))) % n_classes
    return noisy, flipped


def logistic(x, y, c: float):
    """Standardized vectors + multinomial LogisticRegression (lbfgs): a function from vectors to probabilities."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=1000)).fit(x, y)
    return model.predict_proba


def dense_head(x, y, n_classes: int, epochs: int, seed: int):
    """One Dense(classes) layer on the raw vectors, Adam lr 0.01, from logits."""
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((x.shape[1],)), keras.layers.Dense(n_classes)])
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(keras.optimizers.Adam(0.01), loss)
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)

    def predict(v):
        z = model.predict(v, verbose=0, batch_size=1024)
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)

    return predict


def out_of_fold(fit, x, y, n_classes: int, folds: int, seed: int = 0, leave_out=None) -> np.ndarray:
    """(n, classes) probabilities of each row from the model fitted on the other folds (minus ``leave_out``)."""
    from sklearn.model_selection import StratifiedKFold

    probs = np.zeros((len(y), n_classes))
    for train, held in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y):
        if leave_out is not None:
            train = np.setdiff1d(train, leave_out)
        probs[held] = fit(x[train], y[train])(x[held])
    return probs


def sqrt_features(x: np.ndarray) -> np.ndarray:
    """Square root of the (non-negative) pooled vectors, L2-normalised."""
    r = np.sqrt(np.maximum(x, 0))
    return r / np.maximum(np.linalg.norm(r, axis=1, keepdims=True), 1e-12)


def neighbour_probs(x: np.ndarray, y: np.ndarray, n_classes: int, k: int) -> np.ndarray:
    """Cosine-weighted vote of the ``k`` nearest other rows (L2-normalised vectors), smoothed, per class."""
    v = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    sims = v @ v.T
    np.fill_diagonal(sims, -np.inf)
    nearest = np.argpartition(-sims, k, axis=1)[:, :k]
    weights = np.maximum(np.take_along_axis(sims, nearest, axis=1), 0)
    probs = np.full((len(y), n_classes), 1e-3)
    np.add.at(probs, (np.repeat(np.arange(len(y)), k), y[nearest].ravel()), weights.ravel())
    return probs / probs.sum(axis=1, keepdims=True)


def self_confidence(probs: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Ranking (most suspect first) by the probability of the given label, ties by row."""
    return np.argsort(probs[np.arange(len(y)), y], kind="stable")


def flagged(probs: np.ndarray, y: np.ndarray) -> np.ndarray:
    from cleanlab.filter import find_label_issues

    return np.asarray(find_label_issues(y, probs, return_indices_ranked_by="self_confidence"))


class Run:
    """The rankings, flagged sets and seconds of every method on one seed's noisy labels."""

    def __init__(self):
        self.ranking: dict[str, np.ndarray] = {}
        self.flagged: dict[str, np.ndarray] = {}
        self.seconds: dict[str, float] = {}

    def add(self, name, ranking, seconds, probs=None, y=None, flag=None):
        self.ranking[name], self.seconds[name] = ranking, seconds
        if flag is not None:
            self.flagged[name] = flag
        elif probs is not None:
            self.flagged[name] = flagged(probs, y)


def rank_methods(x, y, n_classes, folds, c, neighbours, head_epochs) -> Run:
    from cleanlab.rank import get_label_quality_scores

    run = Run()
    start = time.perf_counter()
    from featcache.training.labels import out_of_fold as featcache_out_of_fold

    p_lr = featcache_out_of_fold(x, y, n_classes, folds, c, 0)  # what featcache labels computes
    lr_seconds = time.perf_counter() - start
    issues = flagged(p_lr, y)
    rest = [i for i in self_confidence(p_lr, y) if i not in set(issues.tolist())]
    run.add("cleanlab: 5-fold logistic + find_label_issues", np.concatenate([issues, rest]).astype(int),
            time.perf_counter() - start, flag=issues)  # fmt: skip
    run.add("featcache labels (logistic out-of-fold, self-confidence)", self_confidence(p_lr, y), lr_seconds, p_lr, y)
    start = time.perf_counter()
    margin = get_label_quality_scores(y, p_lr, method="normalized_margin")
    run.add("logistic, normalized margin", np.argsort(margin, kind="stable"), lr_seconds + time.perf_counter() - start)

    start = time.perf_counter()
    p_nn = neighbour_probs(x, y, n_classes, neighbours)
    nn_seconds = time.perf_counter() - start
    run.add(f"{neighbours} neighbours' agreement", self_confidence(p_nn, y), nn_seconds, p_nn, y)
    run.add("logistic + neighbours, mean probs", self_confidence((p_lr + p_nn) / 2, y), lr_seconds + nn_seconds,
            (p_lr + p_nn) / 2, y)  # fmt: skip

    if head_epochs:
        start = time.perf_counter()
        p_head = out_of_fold(lambda a, b: dense_head(a, b, n_classes, head_epochs, 0), x, y, n_classes, folds)
        head_seconds = time.perf_counter() - start
        run.add(f"Dense head ({head_epochs} epochs)", self_confidence(p_head, y), head_seconds, p_head, y)
        mean = (p_lr + p_head) / 2
        run.add("logistic + Dense head, mean probs", self_confidence(mean, y), lr_seconds + head_seconds, mean, y)

    start = time.perf_counter()
    xs = sqrt_features(x)
    fit = lambda a, b: logistic(a, b, 3 * c)  # noqa: E731
    p_sqrt = np.mean([out_of_fold(fit, xs, y, n_classes, folds, s) for s in range(SQRT_SPLITS)], axis=0)
    sqrt_seconds = time.perf_counter() - start
    run.add(f"sqrt logistic, {SQRT_SPLITS} fold splits", self_confidence(p_sqrt, y), sqrt_seconds, p_sqrt, y)
    first = run.flagged[f"sqrt logistic, {SQRT_SPLITS} fold splits"]
    start = time.perf_counter()
    p_two = np.mean([out_of_fold(fit, xs, y, n_classes, folds, s, first) for s in range(SQRT_SPLITS)], axis=0)
    run.add("sqrt logistic, second pass without flagged", self_confidence(p_two, y),
            sqrt_seconds + time.perf_counter() - start, p_two, y)  # fmt: skip
    mean = (p_sqrt + p_nn) / 2
    run.add("sqrt logistic + neighbours, mean probs", self_confidence(mean, y), sqrt_seconds + nn_seconds, mean, y)
    mean = (p_two + p_nn) / 2
    run.add("second pass + neighbours, mean probs", self_confidence(mean, y),
            run.seconds["sqrt logistic, second pass without flagged"] + nn_seconds, mean, y)  # fmt: skip
    return run


def spread(values, digits: int = 3) -> str:
    """Median (min–max)."""
    values = list(values)
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"


def accuracy(x, y, evaluations, c, drop=None) -> tuple[float, ...]:
    """Accuracy on each (vectors, labels) of ``evaluations`` of the logistic fitted without the rows ``drop``."""
    keep = np.setdiff1d(np.arange(len(y)), drop) if drop is not None else slice(None)
    predict = logistic(x[keep], y[keep], c)
    return tuple(float(np.mean(predict(xe).argmax(axis=1) == ye)) for xe, ye in evaluations)


@click.command()
@click.option("--cache", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.option("--noise", type=float, default=0.05, show_default=True, help="Share of train labels flipped.")
@click.option("--seeds", type=int, default=3, show_default=True, help="Seeds of planted noise (0, 1, ...).")
@click.option("--folds", type=int, default=5, show_default=True)
@click.option("--c", "c", type=float, default=1e-3, show_default=True, help="C of the logistic regressions.")
@click.option("--neighbours", type=int, default=20, show_default=True)
@click.option("--head-epochs", type=int, default=10, show_default=True, help="0: no Dense head.")
@click.option("--threads", type=int, default=1, show_default=True, help="BLAS threads.")
def main(cache, noise, seeds, folds, c, neighbours, head_epochs, threads):
    """Top-k precision of label-error rankings on planted noise, and what dropping the top rows wins back."""
    try:
        import cleanlab
    except ImportError as exc:
        raise click.ClickException("this benchmark needs cleanlab: pip install cleanlab") from exc
    from threadpoolctl import threadpool_limits

    import featcache

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    train, val = featcache.load(cache, "train"), featcache.load(cache, "validation")
    x, y, xv, yv = train.X, train.y, val.X, val.y
    evaluations = [(xv, yv)]
    try:
        test = featcache.load(cache, "test")
        evaluations.append((test.X, test.y))
    except Exception:  # noqa: BLE001 - a cache without a test split: validation only
        pass
    n_classes = len(train.class_names)
    runs, planted = [], []
    with threadpool_limits(threads):
        start = time.perf_counter()
        p_clean = out_of_fold(lambda a, b: logistic(a, b, c), x, y, n_classes, folds)
        pre_existing = set(self_confidence(p_clean, y)[: round(noise * len(y))].tolist())
        clean_seconds = time.perf_counter() - start
        acc_clean = accuracy(x, y, evaluations, c)
        for seed in range(seeds):
            noisy, flipped = plant(y, n_classes, noise, seed)
            runs.append((noisy, rank_methods(x, noisy, n_classes, folds, c, neighbours, head_epochs)))
            planted.append(set(flipped.tolist()))

        def topk(name, extra=frozenset()):
            return [
                len(set(r.ranking[name][: len(p)].tolist()) & (p | extra)) / len(p) for (_, r), p in zip(runs, planted)
            ]

        names = list(runs[0][1].ranking)
        best = max(names[1:], key=lambda m: statistics.median(topk(m)))
        lines = [
            f"Planted noise: {noise:.0%} of {len(y)} train rows of {cache.name} flipped to a random other class "
            f"(k = {len(planted[0])}), {seeds} seeds. Median (min–max) over seeds.",
            "",
            "| method | top-k precision | counting pre-existing as hits | flagged | flagged precision | flagged recall "
            "| seconds |",
            "|---|---|---|---|---|---|---|",
        ]  # fmt: skip
        for name in names:
            flag = [r.flagged.get(name) for _, r in runs]
            cells = ["–"] * 3
            if flag[0] is not None:
                hits = [len(set(f.tolist()) & p) for f, p in zip(flag, planted)]
                cells = [spread((len(f) for f in flag), 0),
                         spread(h / max(len(f), 1) for h, f in zip(hits, flag)),
                         spread(h / len(p) for h, p in zip(hits, planted))]  # fmt: skip
            lines.append(f"| {name}{' **(best)**' if name == best else ''} | {spread(topk(name))} "
                         f"| {spread(topk(name, pre_existing))} | {' | '.join(cells)} "
                         f"| {spread((r.seconds[name] for _, r in runs), 1)} |")  # fmt: skip
        cl = names[0]
        accs = {
            "clean labels": [acc_clean] * seeds,
            "noisy labels": [accuracy(x, n, evaluations, c) for n, _ in runs],
            f"noisy, top k of {best} dropped": [
                accuracy(x, n, evaluations, c, r.ranking[best][: len(p)]) for (n, r), p in zip(runs, planted)
            ],  # fmt: skip
            "noisy, top k of cleanlab dropped": [
                accuracy(x, n, evaluations, c, r.ranking[cl][: len(p)]) for (n, r), p in zip(runs, planted)
            ],  # fmt: skip
            "noisy, cleanlab's flagged set dropped": [accuracy(x, n, evaluations, c, r.flagged[cl]) for n, r in runs],
            "noisy, planted flips dropped (oracle)": [
                accuracy(x, n, evaluations, c, sorted(p)) for (n, _), p in zip(runs, planted)
            ],  # fmt: skip
        }
    splits = ["validation", "test"][: len(evaluations)]
    header = " | ".join(f"{sp} accuracy | recovered of the noise's cost ({sp})" for sp in splits)
    lines += ["", f"| logistic head (C={c:g}) trained on | {header} |", "|---|" + "---|---|" * len(splits)]
    for name, values in accs.items():
        cells = []
        for i in range(len(splits)):
            got, noisy = [v[i] for v in values], [v[i] for v in accs["noisy labels"]]
            cost = [acc_clean[i] - a for a in noisy]
            won = [(a - b) / k for a, b, k in zip(got, noisy, cost) if k > 0]  # seeds where the noise cost some
            shown = (spread(won, 2) + (f" ({len(won)} seeds)" if len(won) < seeds else "")) if won else "n/a: no cost"
            cells += [spread(got), shown if name not in ("clean labels", "noisy labels") else "–"]
        lines.append(f"| {name} | {' | '.join(cells)} |")
    lines += [
        "",
        f"pre-existing: the {len(pre_existing)} least likely rows of the clean labels' 5-fold logistic "
        f"({clean_seconds:.1f} s); {', '.join(f'{len(e[1])} {sp} rows' for e, sp in zip(evaluations, splits))}.",
        f"Seconds: per seed, out-of-fold fits included, {threads} BLAS thread(s).",
        f"CPU: {cpu_model()} ({os.cpu_count()} cores); cleanlab {cleanlab.__version__}",
        "Command: " + " ".join(shlex.quote(a) for a in ["python", "-m", "benchmarks.labels", *sys.argv[1:]]),
    ]  # fmt: skip
    click.echo("\n".join(lines))


if __name__ == "__main__":
    main()
